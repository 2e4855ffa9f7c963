"""optimize_for_inference(): the same function as the model it is made from, for inference only,
and the model itself untouched."""
import pytest
import torch
from torch import nn

from convnext_backbone import ConvNeXt
from convnext_backbone.engine.hooks import OptimizeForInferenceHook
from convnext_backbone.inference import InferenceBlock, is_optimized, optimize_for_inference

from .helpers import randomize_


def _assert_outputs_close(outs, reference):
    for a, b in zip(outs, reference):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('version', ['v1', 'v2'])
@pytest.mark.parametrize('output_stride,channels_last', [(32, True), (32, False), (8, True)])
def test_optimized_model_equals_the_model(version, output_stride, channels_last):
    """Equal outputs (contiguous layout too, where the blocks' permuted input is not dense);
    the input and the source model unchanged."""
    model = randomize_(ConvNeXt('atto', version=version, output_stride=output_stride,
                                channels_last=channels_last)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    x_before = x.clone()
    with torch.no_grad():
        reference = model(x)
    optimized = optimize_for_inference(model)
    assert is_optimized(optimized) and not is_optimized(model)
    _assert_outputs_close(optimized(x), reference)
    _assert_outputs_close(optimized(x), reference)  # grad enabled: the same (no autograd)
    assert torch.equal(x, x_before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in optimized.parameters())


def test_autocast_keeps_the_models_dtypes():
    """Under bf16 autocast the optimized outputs have the model's dtypes and values (the bf16
    branch plus the fp32 shortcut is fp32)."""
    model = randomize_(ConvNeXt('atto')).eval()
    optimized = optimize_for_inference(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        reference, outs = model(x), optimized(x)
    for a, b in zip(outs, reference):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_saving_loading_and_training_are_refused(tmp_path):
    """Its folded weights are not the checkpoint's: state_dict() and load_state_dict() refuse,
    in a parent module too (as in a detector), and so does train()."""
    model = ConvNeXt('atto')
    detector = nn.ModuleDict(dict(backbone=model))
    optimized = optimize_for_inference(detector)
    with pytest.raises(RuntimeError, match='Cannot save backbone.stages.0.0: .*folded.*before '
                       'optimizing'):
        optimized.state_dict()
    with pytest.raises(RuntimeError, match='Cannot load into backbone.stages.0.0'):
        optimized.load_state_dict(detector.state_dict())
    with pytest.raises(RuntimeError, match='cannot be trained'):
        optimized.train()
    detector.state_dict()  # the source saves as before


def test_inplace_transforms_the_blocks_of_every_convnext_in_a_model():
    model = nn.ModuleDict(dict(a=ConvNeXt('atto'), b=ConvNeXt('atto', version='v2')))
    assert optimize_for_inference(model, inplace=True) is model
    blocks = [m for m in model.modules() if isinstance(m, InferenceBlock)]
    assert len(blocks) == 2 * sum(ConvNeXt('atto').depths)


def test_a_model_without_convnext_is_refused():
    with pytest.raises(TypeError, match='ConvNeXt backbones; Sequential holds none'):
        optimize_for_inference(nn.Sequential(nn.Linear(2, 2)))


def test_hook_optimizes_the_runners_model_before_testing():
    """tools/test.py's hook (on CPU): the Runner's model, wrapped or not, is optimized in
    place, after its checkpoint is loaded (before_test runs after load_or_resume)."""
    model = nn.ModuleDict(dict(backbone=randomize_(ConvNeXt('atto')))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model['backbone'](x)

    class Runner:  # what the hook reads of mmengine's Runner
        def __init__(self, model):
            self.model = model

    OptimizeForInferenceHook().before_test(Runner(model))
    assert is_optimized(model)
    _assert_outputs_close(model['backbone'](x), reference)


@pytest.mark.slow  # inductor compiles C++ for about 40 s on 2 cores
def test_torch_compile_of_the_optimized_model_equals_eager():
    """Inductor compiles the optimized model (plain operators under compilation) and computes
    the model's outputs."""
    torch._dynamo.reset()
    model = randomize_(ConvNeXt('atto')).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model(x)
    _assert_outputs_close(torch.compile(optimize_for_inference(model))(x), reference)

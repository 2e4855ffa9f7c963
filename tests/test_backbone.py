"""The backbone: shapes for every arch, parity with timm, options, bad input, registries."""
import re
import subprocess
import sys

import pytest
import timm
import torch

from convnext_backbone import ARCH_SETTINGS, PUBLISHED_ARCHS, ConvNeXt
from convnext_backbone.checkpoints.imagenet import from_timm, to_timm

from .helpers import randomize_

ALL_ARCHS = [(v, a) for v, archs in PUBLISHED_ARCHS.items() for a in archs]


@pytest.mark.parametrize('version,arch', ALL_ARCHS)
def test_shapes_channels_strides_every_arch(version, arch):
    # The meta device runs shape inference without allocating the large models' weights.
    with torch.device('meta'):
        model = ConvNeXt(arch, version=version)
        outs = model(torch.empty(1, 3, 64, 96))
    depths, widths = ARCH_SETTINGS[arch]
    assert model.depths == depths and model.widths == widths
    assert model.out_channels == widths and model.out_strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outs] == [(1, w, 64 // s, 96 // s)
                                              for w, s in zip(widths, (4, 8, 16, 32))]
    assert [len(s) for s in model.stages] == list(depths)
    has_grn = any('.grn.' in n for n, _ in model.named_parameters())
    has_gamma = any(n.endswith('.gamma') and '.grn.' not in n for n, _ in model.named_parameters())
    assert (has_grn, has_gamma) == ((True, False) if version == 'v2' else (False, True))


@pytest.mark.parametrize('out_indices,expected', [((0, 1, 2, 3), (0, 1, 2, 3)), ((3, ), (3, )),
                                                  ((1, 3), (1, 3)), ((-1, 0), (0, 3)),
                                                  ((2, -3), (1, 2))])
def test_out_indices(out_indices, expected):
    model = ConvNeXt('atto', out_indices=out_indices).eval()
    outs = model(torch.randn(2, 3, 70, 45))  # not multiples of 32: floored like the reference
    assert model.out_indices == expected
    assert [o.shape[1] for o in outs] == [ARCH_SETTINGS['atto'][1][i] for i in expected]
    assert [o.shape[2:] for o in outs] == [(70 // (4 * 2**i), 45 // (4 * 2**i)) for i in expected]
    assert sorted(n for n, _ in model.named_children() if n.startswith('norm')) == [
        f'norm{i}' for i in expected]
    assert [f['reduction'] for f in model.feature_info] == [4 * 2**i for i in expected]


TIMM_PEERS = [('convnext_atto', 'atto', 'v1'), ('convnext_tiny', 'tiny', 'v1'),
              ('convnextv2_atto', 'atto', 'v2'), ('convnextv2_tiny', 'tiny', 'v2')]


@pytest.mark.parametrize('timm_name,arch,version', TIMM_PEERS)
@pytest.mark.parametrize('channels_last', [True, False])
def test_parity_with_timm(timm_name, arch, version, channels_last):
    """Same weights, same input: timm's stage features through our per-stage norms equal ours."""
    peer = randomize_(timm.create_model(timm_name, pretrained=False)).eval()
    model = ConvNeXt(arch, version=version, channels_last=channels_last)
    randomize_(model)  # random output norms too
    missing, unexpected = model.load_state_dict(from_timm(peer.state_dict()), strict=False)
    assert all(k.startswith('norm') for k in missing)
    assert all(k.startswith(('head.', 'norm.')) for k in unexpected)
    model.eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        ours = model(x)
        theirs = peer.forward_intermediates(x, intermediates_only=True)
    assert len(ours) == len(theirs) == 4
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = getattr(model, f'norm{i}')(b)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert a.is_contiguous()  # NCHW in memory too: mmcv's ops read it as such


def _timm_features(timm_name: str, output_stride: int) -> torch.nn.Module:
    """timm's ``features_only`` model with random weights, eval mode."""
    return randomize_(timm.create_model(timm_name, pretrained=False, features_only=True,
                                        output_stride=output_stride)).eval()


def _timm_layout(features_state: dict) -> dict:
    """A features_only model's keys (``stem_0``, ``stages_1``) -> the timm model's."""
    return {re.sub(r'^(stem|stages)_(\d+)\.', r'\1.\2.', k): v for k, v in features_state.items()}


@pytest.mark.parametrize('timm_name,arch,version', [('convnext_atto', 'atto', 'v1'),
                                                    ('convnextv2_atto', 'atto', 'v2')])
@pytest.mark.parametrize('output_stride,channels_last', [(32, True), (16, True), (16, False),
                                                         (8, True), (8, False)])
def test_output_stride_matches_timm_features_only(timm_name, arch, version, output_stride,
                                                  channels_last):
    """timm's ``features_only=True, output_stride=...`` model and ours, same weights (moved with
    from_timm), an input that is no multiple of 32 (odd sizes at the dilated stages, where the
    'same' padding of the 2x2 downsampling convolution is one-sided): equal stage features
    through our norms, and the same strides."""
    peer = _timm_features(timm_name, output_stride)
    model = randomize_(ConvNeXt(arch, version=version, output_stride=output_stride,
                                channels_last=channels_last))
    missing, unexpected = model.load_state_dict(from_timm(_timm_layout(peer.state_dict())),
                                                strict=False)
    assert all(k.startswith('norm') for k in missing) and not unexpected
    model.eval()
    assert list(model.out_strides) == peer.feature_info.reduction()
    assert [f['reduction'] for f in model.feature_info] == peer.feature_info.reduction()
    assert list(model.out_channels) == peer.feature_info.channels()
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        ours, theirs = model(x), peer(x)
    assert len(ours) == len(theirs) == 4
    for i, (a, b) in enumerate(zip(ours, theirs)):
        sides = tuple(_floor_size(n, i, output_stride) for n in (70, 45))
        assert a.shape[1:] == (model.widths[i], *sides), i
        torch.testing.assert_close(a, getattr(model, f'norm{i}')(b), rtol=1e-5, atol=1e-5)
        assert a.is_contiguous()


def _floor_size(size: int, stage: int, output_stride: int) -> int:
    """A stage's side length: the stem floors to size // 4, every striding layer halves it
    (floored), and a stage past the output stride keeps its input's."""
    size //= 4
    for i in range(1, stage + 1):
        if 4 * 2**i <= output_stride:
            size //= 2
    return size


def test_output_stride_plan_and_parameters():
    """What changes with the output stride: the strides, dilations and padding of the later
    stages, as timm plans them (``first_dilation`` 1, then 2). What does not: the parameters
    (names and shapes: one state dict fits all) and their layer-decay depths."""
    models = {s: ConvNeXt('atto', output_stride=s) for s in (32, 16, 8)}
    expected = {32: ((4, 8, 16, 32), (1, 1, 1, 1)), 16: ((4, 8, 16, 16), (1, 1, 1, 2)),
                8: ((4, 8, 8, 8), (1, 1, 2, 4))}
    for stride, model in models.items():
        assert (model.stage_strides, model.dilations) == expected[stride]
        assert model.out_strides == expected[stride][0]
        for i, dilation in enumerate(model.dilations):
            dwconv = model.stages[i][0].dwconv
            assert dwconv.dilation == (dilation, dilation)
            assert dwconv.padding == (3 * dilation, 3 * dilation)  # 'same' for 7x7
    convs = {s: [m.downsample_layers[i][1] for i in (2, 3)] for s, m in models.items()}
    assert [(c.stride, c.dilation, c.padding) for c in convs[32]] == [((2, 2), (1, 1), (0, 0))] * 2
    assert [(c.stride, c.dilation, c.padding) for c in convs[16]] == [
        ((2, 2), (1, 1), (0, 0)), ((1, 1), (1, 1), 'same')]
    assert [(c.stride, c.dilation, c.padding) for c in convs[8]] == [
        ((1, 1), (1, 1), 'same'), ((1, 1), (2, 2), 'same')]
    shapes = {s: {k: v.shape for k, v in m.state_dict().items()} for s, m in models.items()}
    assert shapes[32] == shapes[16] == shapes[8]
    models[8].load_state_dict(randomize_(models[32]).state_dict())  # strict
    for decay_type in ('layer_wise', 'stage_wise'):
        depths = {s: [m.get_layer_depth(n, decay_type) for n, _ in m.named_parameters()]
                  for s, m in models.items()}
        assert depths[32] == depths[16] == depths[8]


@pytest.mark.parametrize('layout', ['official', 'timm'])
def test_imagenet_layouts_load_unchanged_at_output_stride_8(tmp_path, layout):
    """An ImageNet file loads into a dilated backbone exactly as into the default one."""
    source = randomize_(ConvNeXt('atto'))
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith('norm')}
    path = tmp_path / 'atto.pth'
    torch.save({'model': weights} if layout == 'official' else to_timm(weights), path)
    model = ConvNeXt('atto', output_stride=8,
                     init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    for key, value in weights.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize('channels_last', [True, False])
@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_outputs_are_nchw_in_memory_for_mmcv_roi_align(channels_last, mode):
    """mmcv's RoIAlign (the COCO configs' RoI extractors) reads its input's memory as NCHW
    without looking at strides: the outputs must be laid out so (the per-stage LayerNorms work
    channels-last, whatever ``channels_last`` says)."""
    from mmcv.ops import RoIAlign
    model = randomize_(ConvNeXt('atto', channels_last=channels_last)).train(mode == 'train')
    rois = torch.tensor([[0., 3., 5., 60., 90.], [0., 10., 10., 40., 30.]])
    with torch.no_grad():
        for i, out in enumerate(model(torch.randn(1, 3, 128, 96))):
            roi_align = RoIAlign(output_size=7, spatial_scale=1 / 4 / 2**i, sampling_ratio=2)
            nchw = out.clone(memory_format=torch.contiguous_format)
            torch.testing.assert_close(roi_align(out, rois), roi_align(nchw, rois))


def test_every_parameter_gets_a_gradient():
    model = ConvNeXt('atto', version='v2', drop_path_rate=0.1)
    sum(o.mean() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize('version', ['v1', 'v2'])
@pytest.mark.parametrize('output_stride', [32, 8])
def test_with_cp_matches_plain(version, output_stride):
    plain = randomize_(ConvNeXt('atto', version=version, output_stride=output_stride))
    ckpt = ConvNeXt('atto', version=version, with_cp=True, output_stride=output_stride)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, ckpt):
        x_ = x.clone().requires_grad_()
        out = model(x_)
        sum((o * o).mean() for o in out).backward()
        grads.append(({n: p.grad for n, p in model.named_parameters()}, out, x_.grad))
    (g1, o1, x1), (g2, o2, x2) = grads
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize('frozen_stages', [0, 1, 3, 4])
def test_frozen_stages(frozen_stages):
    model = ConvNeXt('atto', frozen_stages=frozen_stages, drop_path_rate=0.5)
    model.train()
    frozen = {'downsample_layers.0'} | {f'{part}.{i}' for i in range(frozen_stages)
                                       for part in ('downsample_layers', 'stages')}
    for name, param in model.named_parameters():
        prefix = '.'.join(name.split('.')[:2])
        assert param.requires_grad == (prefix not in frozen), name
    for name, module in model.named_modules():
        if '.'.join(name.split('.')[:2]) in frozen:
            assert not module.training, name
    # Frozen blocks are in eval mode, so their stochastic depth is off.
    x = torch.randn(1, 3, 64, 64)
    if frozen_stages == 4:
        torch.testing.assert_close(model(x)[-1], model(x)[-1])


@pytest.mark.parametrize('output_stride', [32, 16])
def test_frozen_stages_train_like_trainable_ones(output_stride):
    """Frozen stages run without autograd (the in-place path) inside a training step; the
    outputs and the gradients of the stages after them are those of an unfrozen copy."""
    frozen = randomize_(ConvNeXt('atto', frozen_stages=2, output_stride=output_stride)).train()
    plain = ConvNeXt('atto', output_stride=output_stride)
    plain.load_state_dict(frozen.state_dict())
    plain.train()
    x = torch.randn(2, 3, 64, 96)
    outs_frozen, outs_plain = frozen(x), plain(x)
    for a, b in zip(outs_frozen, outs_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    sum(o.square().mean() for o in outs_frozen).backward()
    sum(o.square().mean() for o in outs_plain).backward()
    grads = dict(plain.named_parameters())
    for name, param in frozen.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name].grad, rtol=1e-4, atol=1e-6)


def test_drop_path_is_identity_in_eval():
    with_dp = randomize_(ConvNeXt('atto', drop_path_rate=0.9)).eval()
    without = ConvNeXt('atto', drop_path_rate=0.0).eval()
    without.load_state_dict(with_dp.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(with_dp(x), without(x)):
        torch.testing.assert_close(a, b)
    with_dp.train()
    assert not torch.allclose(with_dp(x)[-1], with_dp(x)[-1])  # and active in training


def test_drop_path_rates_rise_linearly():
    model = ConvNeXt('atto', drop_path_rate=0.3)
    rates = [0.0 if isinstance(b.drop_path, torch.nn.Identity) else b.drop_path.drop_prob
             for s in model.stages for b in s]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 12))


def test_custom_arch_dict_and_layer_scale():
    model = ConvNeXt(dict(depths=(1, 1, 2, 1), widths=(8, 16, 24, 32)), layer_scale_init_value=0.5)
    assert model.out_channels == (8, 16, 24, 32)
    assert model.stages[0][0].gamma.detach().eq(0.5).all()
    assert ConvNeXt('atto', layer_scale_init_value=0).stages[0][0].gamma is None


@pytest.mark.parametrize('kwargs,message', [
    (dict(arch='tinyy'), 'atto, femto, pico, nano, tiny, small, base'),
    (dict(arch='huge'), "Unknown ConvNeXt v1 arch 'huge'"),
    (dict(arch='small', version='v2'), 'v2 arch'),
    (dict(version='v3'), "version must be one of ['v1', 'v2']"),
    (dict(arch=dict(depths=(1, 1, 1), widths=(8, 16, 32))), 'depths=(4 positive ints)'),
    (dict(out_indices=(4, )), 'out_indices must be stage indices in -4..3, got (4,)'),
    (dict(out_indices=(1, -3)), 'distinct'),
    (dict(frozen_stages=5), 'frozen_stages must be in -1..4'),
    (dict(version='v2', layer_scale_init_value=1e-6), 'V2 has no layer scale'),
    (dict(drop_path_rate=1.0), 'drop_path_rate must be in [0, 1)'),
    (dict(output_stride=4), 'output_stride must be one of 8, 16, 32 (the stride of the last '
     'stage; the stages past it dilate), got 4'),
    (dict(output_stride=64), 'output_stride must be one of 8, 16, 32'),
    (dict(output_stride='16'), "got '16'"),
    (dict(output_stride=16.0), 'got 16.0'),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')
                       .replace('[', r'\[').replace(']', r'\]')):
        ConvNeXt(**kwargs)


@pytest.mark.parametrize('shape,message', [
    ((3, 64, 64), r'expects input of shape \(N, 3, H, W\), got \(3, 64, 64\)'),
    ((1, 1, 64, 64), r'got \(1, 1, 64, 64\)'),
    ((1, 3, 31, 64), 'at least 32x32 pixels .* got 31x64'),
])
def test_bad_input(shape, message):
    with pytest.raises(ValueError, match=message):
        ConvNeXt('atto')(torch.randn(*shape))


def test_smallest_input_is_one_cell_of_the_output_stride():
    model = ConvNeXt('atto', output_stride=16).eval()
    assert [tuple(o.shape[2:]) for o in model(torch.randn(1, 3, 16, 20))] == [(4, 5), (2, 2),
                                                                             (1, 1), (1, 1)]
    with pytest.raises(ValueError, match=r'at least 16x16 pixels \(one stride-16 cell\), got '
                       '15x64'):
        model(torch.randn(1, 3, 15, 64))


def test_builds_from_mmdet_and_mmseg_registries():
    import convnext_backbone  # noqa: F401  (registers)
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG_MODELS
    for scope, registry in (('mmdet', DET_MODELS), ('mmseg', SEG_MODELS)):
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(dict(type='ConvNeXt', arch='atto', out_indices=(1, 2)))
        assert isinstance(model, ConvNeXt) and model.out_channels == (80, 160)


def test_core_imports_without_mmdet_mmseg_mmcv():
    code = ('import sys\n'
            'for m in ("mmdet", "mmseg", "mmcv", "mmpretrain"): sys.modules[m] = None\n'
            'import convnext_backbone, torch\n'
            'm = convnext_backbone.ConvNeXt("atto")\n'
            'assert len(m(torch.randn(1, 3, 32, 32))) == 4\n')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_layer_depth_lookup_does_not_rebuild_the_map():
    """get_layer_depth builds its name -> id map once per decay type, not once per call (which
    made building the optimizer quadratic in the number of parameters)."""
    model = ConvNeXt('atto')
    names = [n for n, _ in model.named_parameters()]
    calls = []
    build = model._layer_ids
    model._layer_ids = lambda decay_type: calls.append(decay_type) or build(decay_type)
    first = [model.get_layer_depth(n) for n in names]
    assert [model.get_layer_depth(n) for n in names] == first
    for name in names:
        model.get_layer_depth(name, 'stage_wise')
    assert calls == ['layer_wise', 'stage_wise']


@pytest.mark.parametrize('mode,output_stride', [('train', 32), ('eval', 32), ('eval', 8)])
def test_torch_compile_sees_one_graph(mode, output_stride):
    """torch.compile captures the whole backbone without graph breaks, in a training step
    (drop path) and in no-grad inference; with output stride 8 too (dilated and
    'same'-padded convolutions)."""
    torch._dynamo.reset()
    model = ConvNeXt('atto', drop_path_rate=0.1 if mode == 'train' else 0.0,
                     output_stride=output_stride)
    model.train(mode == 'train')
    x = torch.randn(1, 3, 64, 64)
    with torch.set_grad_enabled(mode == 'train'):
        explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


# ----------------------------------------------------------------------------------- GRN
def _grn_by_norm(grn, x):
    """GRN as the official code writes it (the norm by ``vector_norm``), in float32."""
    gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + grn.eps)
    return torch.addcmul(grn.beta, grn.gamma, x * nx) + x


@pytest.mark.parametrize('dtype', [None, torch.float16, torch.bfloat16])
def test_grn_sum_of_squares_as_a_product_is_the_norms(dtype):
    """GRN's sum of squares as a product with ones (docs/speed.md) is the official norm's up to
    rounding; under autocast it runs in float32 as autocast runs the norm, so a map whose
    squares overflow float16 stays finite (float16 products would give inf)."""
    from convnext_backbone.backbone import GRN
    grn = randomize_(GRN(64))
    x = torch.randn(2, 40, 50, 64, generator=torch.Generator().manual_seed(0)) * 300
    if dtype is None:
        torch.testing.assert_close(grn(x), _grn_by_norm(grn, x), rtol=1e-5, atol=1e-3)
        return
    half = x.to(dtype)
    flat = half.reshape(2, -1, 64)
    squares = torch.matmul(flat.new_ones(2, 1, flat.shape[1]), flat * flat)
    assert torch.isfinite(squares).all() == (dtype == torch.bfloat16)  # float16 overflows
    with torch.autocast('cpu', dtype=dtype):
        ours = grn(half)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, _grn_by_norm(grn, half.float()), rtol=1e-5, atol=1e-3)

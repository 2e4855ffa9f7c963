"""OpenVINO as a second runtime and INT8 files (tools/quantize.py), on the UPerNet demo with
random weights: OpenVINO fp32 gives onnxruntime's predictions; the INT8 file keeps the fp32
file's metadata, quantizes the learned Conv / MatMul layers and nothing else, and runs in both
runtimes; bad input is refused in words and leaves nothing; files get the umask's mode.
Accuracy of INT8 on trained models: tests/test_end_to_end.py (the demos)."""
import contextlib
import io
import json
import os
import subprocess
import sys

import onnx
import pytest

from convnext_backbone.deploy.agreement import label_agreement
from convnext_backbone.errors import DataError
from convnext_backbone.deploy.evaluate import check_file_fits_config
from convnext_backbone.deploy.quantize import quantizable_nodes, quantize_onnx
from convnext_backbone.deploy.runtime import DeployError, OnnxModel

from .helpers import ADE_DEMO, ROOT, load_tool, run_tool
from .test_deploy_segmentation import assert_close, demo, demo_config  # noqa: F401 (fixture)


def _mode(path):
    return os.stat(path).st_mode & 0o777


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture(scope='module')
def int8(demo):  # noqa: F811
    """The demo file quantized by tools/quantize.py (in-process, under umask 027) on two of the
    demo's images, --data a folder of images; what it printed."""
    out = str(demo['tmp'] / 'demo.int8.onnx')
    printed = io.StringIO()
    previous = os.umask(0o027)
    try:
        with contextlib.redirect_stdout(printed):
            load_tool('quantize').main([ADE_DEMO, demo['onnx'], '--out', out, '--data',
                                        str(demo['root'] / 'images' / 'validation'),
                                        '--calib-images', '2'])
    finally:
        os.umask(previous)
    return dict(path=out, printed=printed.getvalue())


# --------------------------------------------------------------------------------- OpenVINO
def test_openvino_gives_onnxruntimes_predictions(demo):  # noqa: F811
    """OpenVINO fp32 (INFERENCE_PRECISION_HINT f32) on the sliding-window demo file: logits
    within 1e-4 of onnxruntime's largest, label maps >= 99.9% the same."""
    reference = OnnxModel(demo['onnx'])
    openvino = OnnxModel(demo['onnx'], backend='openvino')
    assert openvino.meta == reference.meta and openvino.execution.startswith('openvino')
    for path in demo['images']:
        ours, theirs = openvino(path), reference(path)
        assert_close(ours.logits, theirs.logits)
        assert label_agreement(theirs.labels, ours.labels) >= 0.999


def test_openvino_bf16_where_the_cpu_has_it(demo):  # noqa: F811
    """bf16 inference where OpenVINO sees bf16 instructions (AVX512_BF16 or AMX); refused,
    naming them, where it does not."""
    import openvino
    capabilities = openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
    if 'BF16' not in capabilities:
        with pytest.raises(DeployError, match='bf16 inference needs a CPU with AVX512_BF16'):
            OnnxModel(demo['onnx'], backend='openvino', precision='bf16')
        return
    bf16 = OnnxModel(demo['onnx'], backend='openvino', precision='bf16')
    reference = OnnxModel(demo['onnx'])
    agreement = [label_agreement(reference(p).labels, bf16(p).labels) for p in demo['images']]
    print('bf16 label agreement with fp32:', [round(a, 4) for a in agreement])
    assert min(agreement) >= 0.9, agreement


def test_precision_is_an_openvino_setting(demo):  # noqa: F811
    with pytest.raises(DeployError, match="precision 'bf16' is an OpenVINO setting"):
        OnnxModel(demo['onnx'], precision='bf16')
    with pytest.raises(DeployError, match="Unknown backend 'tensorrt'"):
        OnnxModel(demo['onnx'], backend='tensorrt')


def test_openvino_missing_names_the_extra(demo, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino fails
    with pytest.raises(DeployError, match=r"needs the openvino package.*pip install "
                       r"'convnext_backbone\[deploy\]'"):
        OnnxModel(demo['onnx'], backend='openvino')


RUNTIME_ALONE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location('runtime', {path!r})
runtime = sys.modules['runtime'] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
assert 'openvino' not in sys.modules  # imported only when asked for
model = runtime.OnnxModel(sys.argv[1], backend='openvino')
assert model(sys.argv[2]).labels.shape == (128, 128)
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               {{'torch', 'mmcv', 'mmdet', 'mmseg', 'mmengine', 'convnext_backbone'}})
assert not heavy, heavy
print('ok')
"""


def test_runtime_alone_runs_openvino_without_torch(demo):  # noqa: F811
    """runtime.py copied alone (as next to a file) runs the INT8-free fp32 file in OpenVINO
    with neither torch nor the package imported."""
    script = RUNTIME_ALONE.format(path=os.path.join(ROOT, 'convnext_backbone/deploy/runtime.py'))
    run = subprocess.run([sys.executable, '-c', script, demo['onnx'], demo['images'][-1]],
                         capture_output=True, text=True, cwd=str(demo['tmp']))
    assert run.returncode == 0 and 'ok' in run.stdout, run.stderr[-3000:]


# ------------------------------------------------------------------------------------- INT8
def test_int8_file_quantizes_the_learned_layers_only(demo, int8):  # noqa: F811
    """Every Conv / MatMul with constant weights takes INT8 weights (a DequantizeLinear on
    its weight) and no other node does; PPM's pooling products and everything else stay
    float; all fp32 metadata is kept, with precision int8 and the quantizer's settings."""
    fp32, ours = onnx.load(demo['onnx']), onnx.load(int8['path'])
    expected = set(quantizable_nodes(fp32))
    # backbone: stem, 3 downsampling and 12 depthwise convolutions, 24 pointwise linears;
    # UPerHead: 3 lateral, 4 PPM, bottleneck, 3 FPN, FPN bottleneck and classifier convolutions
    assert len(expected) == 16 + 24 + 13
    matmuls = [n.name for n in fp32.graph.node if n.op_type == 'MatMul']
    assert any('psp_modules' in m for m in matmuls)  # the pools' products: kept float
    producer = {o: n for n in ours.graph.node for o in n.output}
    int8_weights = {n.name for n in ours.graph.node if n.op_type in ('Conv', 'MatMul', 'Gemm')
                    and producer.get(n.input[1]) is not None
                    and producer[n.input[1]].op_type == 'DequantizeLinear'}
    props = {p.key: json.loads(p.value) for p in ours.metadata_props}
    assert int8_weights == expected and set(props['quantized_nodes']) == expected
    # each quantized Conv's bias is INT32 too (fold_identity_constants: the exporter passes
    # equal biases through Identity nodes), so that onnxruntime fuses it into a QLinearConv
    initializers = {i.name: i for i in ours.graph.initializer}
    for node in ours.graph.node:
        if node.name in expected and node.op_type == 'Conv' and len(node.input) > 2:
            bias = producer[node.input[2]]
            assert bias.op_type == 'DequantizeLinear', (node.name, bias.op_type)
            assert initializers[bias.input[0]].data_type == onnx.TensorProto.INT32, node.name
    before = {p.key: json.loads(p.value) for p in fp32.metadata_props}
    assert {k: v for k, v in props.items() if k in before and k != 'precision'} == \
        {k: v for k, v in before.items() if k != 'precision'}
    assert before['precision'] == 'fp32' and props['precision'] == 'int8'
    assert props['quantizer']['weights'] == 'int8, symmetric, per output channel'
    assert props['quantizer']['calibration_images'] == 2


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_int8_file_runs_and_agrees(demo, int8, backend):  # noqa: F811
    """The INT8 file in each runtime: label maps close to the fp32 file's (random weights:
    the agreement is printed; asserted loosely)."""
    reference = OnnxModel(demo['onnx'])
    model = OnnxModel(int8['path'], backend=backend)
    assert model.precision == 'int8' and 'int8' in model.describe()
    agreement = [label_agreement(reference(p).labels, model(p).labels) for p in demo['images']]
    print(f'INT8 ({backend}) label agreement with fp32:', [round(a, 4) for a in agreement])
    assert min(agreement) >= 0.5, agreement


def test_int8_file_for_other_classes_or_config_is_refused(demo, int8):  # noqa: F811
    model = OnnxModel(int8['path'])
    other_classes = demo_config(demo['root'])
    other_classes.test_dataloader.dataset.metainfo = dict(classes=('wall', 'building'))
    with pytest.raises(DeployError, match=r'made for upernet_convnext_shapes_demo.py '
                       r'\(segmentation, 150 classes, 128x128 inputs, int8'):
        check_file_fits_config(model, other_classes, 'other.py')
    with pytest.raises(DeployError, match=r'model or test-time resize differs from other.py'):
        check_file_fits_config(model, demo_config(demo['root'], decode_head=dict(channels=32)),
                               'other.py')


# ---------------------------------------------------------------------------- the tool
def test_quantize_tool_writes_with_the_umask_and_prints_the_nodes(demo, int8):  # noqa: F811
    """tools/quantize.py with --data a folder of images: the nodes quantized, per module, and
    the time; the file and the exported one get the umask's mode (not mkstemp's 0600)."""
    assert _mode(demo['onnx']) == 0o666 & ~_umask()
    assert _mode(int8['path']) == 0o640, oct(_mode(int8['path']))
    printed = int8['printed']
    assert 'Quantized 53 nodes to INT8' in printed
    assert '  backbone: 16 Conv, 24 MatMul\n  decode_head: 13 Conv' in printed, printed
    # the first and last of the 4 images (spread): 128x200 (two windows) and 128x128 (one)
    assert 'Calibrated on 3 inputs; took' in printed
    assert not [n for n in os.listdir(demo['tmp']) if n.endswith('.part')]  # none left


def test_quantize_refusals_leave_nothing(demo, tmp_path, monkeypatch):  # noqa: F811
    """No calibration images (the config's are not here), a folder of unreadable images (the
    tool exits 1 with the message), an interrupted quantization: nothing at --out."""
    out = str(tmp_path / 'out' / 'q.int8.onnx')
    quantize = load_tool('quantize').main
    monkeypatch.chdir(tmp_path)  # the config's data root, data/ade_shapes/..., is not here
    with pytest.raises(DataError, match=r"No calibration images: the config's training images "
                       r'\(data/ade_shapes/ADEChallengeData2016/images/training\) are not '
                       r'there. Give --data DIR'):
        quantize([ADE_DEMO, demo['onnx'], '--out', out])
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'a.jpg').write_bytes(b'not an image')
    refused = run_tool(tmp_path, 'tools/quantize.py', ADE_DEMO, demo['onnx'], '--out', out,
                       '--data', str(broken), returncode=1)
    assert 'error: No calibration image could be read' in refused.stderr, refused.stderr
    import onnxruntime.quantization

    def interrupted(model, path, *args, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr(onnxruntime.quantization, 'quantize_static', interrupted)
    with pytest.raises(KeyboardInterrupt):
        quantize_onnx(demo['onnx'], out, demo['images'][:1])
    assert os.listdir(tmp_path / 'out') == []


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_a_file_that_is_not_onnx_is_refused_in_words(tmp_path, backend):
    path = tmp_path / 'model.onnx'
    path.write_bytes(b'a checkpoint renamed, or a half-copied file')
    with pytest.raises(DeployError, match=rf'{path} is not an ONNX file that '
                       rf'{"OpenVINO" if backend == "openvino" else "onnxruntime"} can read '
                       r'\(.+\): tools/export_onnx.py writes one'):
        OnnxModel(str(path), backend=backend)

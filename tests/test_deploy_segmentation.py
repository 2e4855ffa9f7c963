"""ONNX export of the segmentors (UPerNet, DeepLabV3+, Mask2Former): the exported file, run by
the runtime (onnxruntime, numpy, OpenCV), gives PyTorch's (mmseg's) logits and label maps,
whole-image and in sliding windows, fixed-size and for any size; tools/test.py gives PyTorch's
mIoU; misfits are refused in words and leave no file."""
import glob
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope
from PIL import Image

from convnext_backbone.checkpoints import CheckpointError
from convnext_backbone.data.demo import make_ade_shapes, make_mask_shapes
from convnext_backbone.deploy.evaluate import check_file_fits_config
from convnext_backbone.deploy.export import export_onnx
from convnext_backbone.deploy.runtime import (DeployError, OnnxModel, resize_bilinear,
                                              slide_windows)
from convnext_backbone.deploy.segmentor import ExactAdaptiveAvgPool2d, SegmentorForExport

from .helpers import ADE_DEMO, ROOT, build, model_config, run_tool, save, tool_output

V2 = dict(version='v2', layer_scale_init_value=None)
MASK2FORMER_DEMO = osp.join(ROOT, 'configs', 'demo', 'mask2former_convnext_shapes_demo.py')


def spatial_(model):
    """Random weights whose outputs vary over the image: with random biases (and BN means) the
    constant terms swamp the image's contribution and every pixel gets the same class."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('bias'):
                param.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
    return model


def demo_config(data_root=None, **model):
    cfg = Config.fromfile(ADE_DEMO)
    cfg.model.backbone.init_cfg = None
    cfg.merge_from_dict(dict(model=model))
    if data_root:
        for split in ('val_dataloader', 'test_dataloader'):
            cfg[split].dataset.data_root = data_root
            cfg[split].num_workers = 0
            cfg[split].persistent_workers = False
    return cfg


def assert_close(ours, theirs, rtol=1e-4):
    """Equal to ``rtol`` relative to the reference's largest magnitude."""
    scale = float(np.abs(theirs).max())
    assert ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) <= rtol * scale, \
        (float(np.abs(ours - theirs).max()), scale)


def mmseg_prediction(model, cfg, image_path):
    """mmseg's own test step on one image: (logits (C, H, W), labels (H, W)) at the image's
    size."""
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] != 'LoadAnnotations']
    with DefaultScope.overwrite_default_scope('mmseg'), torch.no_grad():
        data = pseudo_collate([Compose(pipeline)(dict(img_path=image_path))])
        sample = model.test_step(data)[0]
    return sample.seg_logits.data.numpy(), sample.pred_sem_seg.data[0].numpy()


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """The UPerNet demo (atto) with random weights, its checkpoint, demo images (two of them
    wider than the 128x128 window, so that two windows overlap) and the file exported with
    the defaults (the 128x128 sliding window)."""
    tmp = tmp_path_factory.mktemp('seg')
    make_ade_shapes(str(tmp / 'ade'), num_train=2, num_val=4, size=128, seed=5)
    root = tmp / 'ade' / 'ADEChallengeData2016'
    for index in (0, 1):  # 128x200: windows [0, 128) and [72, 200)
        for folder, suffix in (('images', '.jpg'), ('annotations', '.png')):
            path = glob.glob(str(root / folder / 'validation' / f'*0{index}{suffix}'))[0]
            picture = Image.open(path)
            picture.resize((200, 128), Image.NEAREST if suffix == '.png' else
                           Image.BILINEAR).save(path)
    cfg = demo_config(str(root))
    model = spatial_(build(ADE_DEMO))
    checkpoint = save(tmp, model.state_dict(), name='demo.pth')
    onnx_file = str(tmp / 'demo.onnx')
    export_onnx(cfg, checkpoint, onnx_file, config_name='upernet_convnext_shapes_demo.py')
    images = sorted(glob.glob(str(root / 'images' / 'validation' / '*.jpg')))
    return dict(tmp=tmp, root=root, cfg=cfg, model=model, checkpoint=checkpoint,
                onnx=onnx_file, images=images)


# --------------------------------------------------------------------- the runtime's parts
@pytest.mark.parametrize('size', [(4, 4), (5, 7), (13, 9), (6, 6), (1, 3)])
@pytest.mark.parametrize('bins', [1, 2, 3, 6])
def test_exact_adaptive_pool_is_pytorchs(size, bins):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ExactAdaptiveAvgPool2d(bins)(x),
                               torch.nn.AdaptiveAvgPool2d(bins)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('size', [(128, 128), (37, 200), (512, 683), (9, 5)])
@pytest.mark.parametrize('align_corners', [False, True])
def test_resize_bilinear_is_interpolate(size, align_corners):
    logits = torch.randn(3, 31, 47, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.interpolate(logits[None], size=size, mode='bilinear',
                                               align_corners=align_corners)[0]
    ours = resize_bilinear(logits.numpy(), size, align_corners)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_slide_windows_cover_as_mmseg():
    windows = slide_windows(128, 200, (128, 128), (85, 85))
    assert windows == [(0, 128, 0, 128), (0, 128, 72, 200)]
    # smaller than the window: one crop, the whole image
    assert slide_windows(100, 90, (128, 128), (85, 85)) == [(0, 100, 0, 90)]
    count = np.zeros((700, 900))
    for y1, y2, x1, x2 in slide_windows(700, 900, (512, 512), (341, 341)):
        assert (y2 - y1, x2 - x1) == (512, 512)
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1


# --------------------------------------------------------------------------- parity
def test_demo_file_gives_mmsegs_predictions(demo):
    """Per image (128x128: one window; 128x200: two overlapping windows), logits to 1e-4 of
    their largest magnitude and the same label map as mmseg's slide_inference."""
    onnx_model = OnnxModel(demo['onnx'])
    assert onnx_model.meta['test_mode'] == 'slide' and onnx_model.input_shape == (128, 128)
    for path in demo['images']:
        result = onnx_model(path)
        logits, labels = mmseg_prediction(demo['model'], demo['cfg'], path)
        assert_close(result.logits, logits)
        assert len(np.unique(labels)) > 3  # a real label map, not one class everywhere
        assert (result.labels == labels).mean() >= 0.999


@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_dynamic_file_agrees_at_every_size(tmp_path, version):
    """One --dynamic file: PyTorch's logits at two sizes and an odd one (PPM's adaptive pools
    rewritten for any size)."""
    model = spatial_(build(ADE_DEMO, backbone=V2 if version == 'v2' else {}))
    checkpoint = save(tmp_path, model.state_dict())
    cfg = demo_config(backbone=V2 if version == 'v2' else {})
    export_onnx(cfg, checkpoint, str(tmp_path / 'any.onnx'), dynamic=True)
    onnx_model = OnnxModel(str(tmp_path / 'any.onnx'))
    assert onnx_model.input_shape is None
    assert_file_is_pytorch(onnx_model, model, [(128, 128), (160, 224), (97, 131)])


def assert_file_is_pytorch(onnx_model, model, sizes):
    """The file's logits and labels are the model's ``encode_decode`` at random images of
    ``sizes`` (whole image: what a --dynamic file computes)."""
    preprocessor = model.data_preprocessor
    for size in sizes:
        image = np.random.RandomState(sum(size)).randint(0, 256, (*size, 3)).astype(np.uint8)
        x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
        with torch.no_grad():
            expected = model.encode_decode((x - preprocessor.mean) / preprocessor.std,
                                           [dict(img_shape=size)]).numpy()
        outputs = onnx_model.run(image)
        assert_close(outputs['logits'], expected)
        assert (outputs['labels'] == expected.argmax(1)).mean() >= 0.999


def test_deeplabv3plus_at_output_stride_16_agrees_at_every_size(tmp_path):
    """DeepLabV3+ (ASPP with its image pool, the low-level branch, a dilated ConvNeXt): one
    --dynamic file gives PyTorch's logits at the demo's size and at odd ones."""
    path = osp.join(ROOT, 'configs', 'demo', 'deeplabv3plus_convnext_shapes_demo.py')
    model = spatial_(build(path))
    assert model.backbone.out_strides[3] == 16
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    export_onnx(cfg, save(tmp_path, model.state_dict()), str(tmp_path / 'any.onnx'),
                dynamic=True)
    assert_file_is_pytorch(OnnxModel(str(tmp_path / 'any.onnx')), model, [(128, 128), (97, 131)])


class _DeformableAttention(torch.nn.Module):
    """mmcv's ``multi_scale_deformable_attn_pytorch`` on feature maps of any size, the levels'
    shapes read from them as mmdet's pixel decoder reads them."""

    def forward(self, locations, weights, *maps):
        from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
        heads = locations.shape[2]
        shapes = torch.stack([torch._shape_as_tensor(m)[2:] for m in maps])
        value = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)
        value = value.reshape(value.shape[0], value.shape[1], heads, -1)
        return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)


def test_deformable_attention_exports_as_grid_sample(tmp_path):
    """Multi-scale deformable attention as mmcv's pure-PyTorch reference computes it, traced
    once: ONNX GridSample (bilinear, zeros padding, align_corners=False) gives it at other
    level sizes and query counts, points outside the maps included."""
    import onnx
    heads, dims, points = 4, 8, 3
    generator = torch.Generator().manual_seed(0)

    def inputs(sizes, queries):
        maps = [torch.randn(1, heads * dims, h, w, generator=generator) for h, w in sizes]
        shape = (1, queries, heads, len(sizes), points)
        locations = torch.rand(*shape, 2, generator=generator) * 1.4 - 0.2  # 0.2 beyond
        weights = torch.rand(*shape, generator=generator).softmax(-1)
        return [locations, weights, *maps]

    names = ['locations', 'weights', 'map0', 'map1', 'map2']
    axes = {'locations': {1: 'queries'}, 'weights': {1: 'queries'},
            **{f'map{i}': {2: f'h{i}', 3: f'w{i}'} for i in range(3)}}
    path = str(tmp_path / 'msda.onnx')
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        torch.onnx.export(_DeformableAttention(), tuple(inputs([(12, 16), (6, 8), (3, 4)], 50)),
                          path, dynamo=False, opset_version=17, input_names=names,
                          output_names=['out'], dynamic_axes=axes)
    assert [n.op_type for n in onnx.load(path).graph.node].count('GridSample') == 3
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for sizes, queries in (([(12, 16), (6, 8), (3, 4)], 50), ([(25, 17), (13, 9), (7, 5)], 31)):
        tensors = inputs(sizes, queries)
        expected = _DeformableAttention()(*tensors).numpy()
        (ours, ) = session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})
        assert ours.shape == (1, queries, heads * dims)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def _mask_features(model, image):
    """The pixel decoder's mask features (1, C, h, w) of an (H, W, 3) uint8 BGR image."""
    preprocessor = model.data_preprocessor
    x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
    features = model.extract_feat((x - preprocessor.mean) / preprocessor.std)
    return model.decode_head.pixel_decoder(features)[0]


def mask2former_spatial_(model, image, flat):
    """Random Mask2Former weights whose label maps vary over the image, and whose first
    attention mask of one query is empty on the image ``flat``. With ``spatial_`` alone every
    query's mask is nearly constant (its logits' std 0.04 over the pixels) and its class
    scores nearly uniform: one class everywhere. Here the mask features are centred on
    ``image`` (their mean over its pixels taken off by their bias), so that each mask covers
    part of it; the masks (std 10 on ``image`` at the first layer) and the class scores (x40)
    are sharpened; the decoder layers' residual branches are damped (x0.3: random layers mix
    the queries into a few alike ones; over the T config's 9 layers, 71 distinct top classes
    became 3). The first masks are the learned queries e_q (no image in them) dotted with the
    mask features: a bias b with e_q . b = -(1 + the mask's highest value on ``flat``) for the
    query nearest to empty there and 0 for the others empties that one alone.

    Args:
        image, flat (np.ndarray): (H, W, 3) uint8 BGR images as the graph takes them.
    """
    spatial_(model)
    head = model.decode_head
    with torch.no_grad():
        for layer in head.transformer_decoder.layers:
            for linear in (layer.cross_attn.attn.out_proj, layer.self_attn.attn.out_proj,
                           layer.ffn.layers[-2]):
                linear.weight.mul_(0.3)
        head.cls_embed.weight.mul_(40)
        features = _mask_features(model, image)
        mean = features.mean((0, 2, 3))
        head.pixel_decoder.mask_feature.bias.sub_(mean)
        queries = head.mask_embed(head.transformer_decoder.post_norm(head.query_feat.weight))
        scale = 10 / torch.einsum('qc,bchw->bqhw', queries, features - mean[:, None, None]).std()
        head.mask_embed[-1].weight.mul_(scale)
        queries = queries * scale
        highest = torch.einsum('qc,bchw->bqhw', queries, _mask_features(model, flat)).amax(
            (0, 2, 3))
        query = int(highest.argmin())
        target = torch.zeros(len(queries))
        target[query] = -(1 + highest[query].clamp_min(0))
        head.pixel_decoder.mask_feature.bias.add_(torch.linalg.pinv(queries) @ target)
    return model


def test_mask2former_dynamic_file_gives_mmsegs_predictions(tmp_path, monkeypatch):
    """Mask2Former (deformable pixel decoder as GridSample, masked-attention decoder, mmseg's
    predict): one --dynamic file, traced at 200x232, gives mmseg's test step on images of
    128x128, 97x131 and 131x97 (the test resize makes them 128x173 and 173x128, the graph
    pads those to 128x192 and 192x128): logits to 1e-4 of their largest magnitude, label maps
    >= 99.9% equal. The decoder's attention masks cover part of the keys; on a flat image one
    query's mask is empty (mmdet attends everywhere instead: without it, NaN)."""
    rng = np.random.RandomState(0)
    images = {f'{h}x{w}.png': rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
              for h, w in ((128, 128), (97, 131), (131, 97))}
    images['flat.png'] = np.full((128, 128, 3), (200, 140, 90), np.uint8)  # no resize, no pad
    for name, image in images.items():
        Image.fromarray(image[..., ::-1]).save(tmp_path / name)  # an RGB file of the BGR array
    model = mask2former_spatial_(build(MASK2FORMER_DEMO), images['128x128.png'],
                                 images['flat.png'])
    cfg = model_config(MASK2FORMER_DEMO)
    out = str(tmp_path / 'm2f.onnx')
    export_onnx(cfg, save(tmp_path, model.state_dict()), out, dynamic=True)
    import onnx
    graph = onnx.load(out).graph
    assert sum(n.op_type == 'GridSample' for n in graph.node) == 6  # 2 layers x 3 levels
    onnx_model = OnnxModel(out)
    assert onnx_model.input_shape is None and onnx_model.meta['test_mode'] == 'whole'

    masks = []  # the attention masks of mmseg's runs, (heads, queries, keys), per layer
    forward_head = model.decode_head._forward_head

    def recording(*args):
        cls_pred, mask_pred, attn_mask = forward_head(*args)
        masks.append(attn_mask)
        return cls_pred, mask_pred, attn_mask

    monkeypatch.setattr(model.decode_head, '_forward_head', recording)
    layers = len(model.decode_head.transformer_decoder.layers)
    for name in images:
        masks.clear()
        result = onnx_model(str(tmp_path / name))
        logits, labels = mmseg_prediction(model, cfg, str(tmp_path / name))
        assert_close(result.logits, logits)
        assert (result.labels == labels).mean() >= 0.999
        used = masks[:layers]  # the last layer's masks are not used
        if name == 'flat.png':
            assert bool(used[0].all(-1).any())  # an empty mask
        else:
            assert len(np.unique(labels)) > 3  # a real label map, not one class everywhere
            assert all(0.2 < float(m.float().mean()) < 0.8 for m in used)


def test_metadata(demo):
    import onnx
    props = {p.key: json.loads(p.value) for p in onnx.load(demo['onnx']).metadata_props}
    from mmseg.datasets import ADE20KDataset
    assert props['classes'] == list(ADE20KDataset.METAINFO['classes'])
    assert props['palette'][:2] == [list(c) for c in ADE20KDataset.METAINFO['palette'][:2]]
    assert props['mean'] == [123.675, 116.28, 103.53] and props['std'] == [58.395, 57.12, 57.375]
    assert props['input_channel_order'] == 'BGR' and props['model_channel_order'] == 'RGB'
    assert props['test_resize'] == dict(scale=[512, 128], scale_factor=None, keep_ratio=True,
                                        interpolation='bilinear')
    assert props['config'] == 'upernet_convnext_shapes_demo.py'
    with open(demo['checkpoint'], 'rb') as f:
        assert props['checkpoint_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert (props['crop_size'], props['stride'], props['input_shape']) == (
        [128, 128], [85, 85], [128, 128])
    ops = {n.op_type for n in onnx.load(demo['onnx']).graph.node}
    assert 'GlobalAveragePool' not in ops and 'AveragePool' not in ops  # PPM as matmuls


# --------------------------------------------------------------------------- refusals
def test_misfit_checkpoint_is_refused_and_nothing_written(demo, tmp_path):
    state = dict(demo['model'].state_dict())
    state.pop('decode_head.conv_seg.weight')
    bad = save(tmp_path, state, name='bad.pth')
    out = tmp_path / 'out' / 'model.onnx'
    with pytest.raises(CheckpointError, match='decode_head.conv_seg'):
        export_onnx(demo['cfg'], bad, str(out))
    assert sorted(os.listdir(tmp_path)) == ['bad.pth']  # no file, no folder, no part


def test_interrupted_export_leaves_nothing(demo, tmp_path, monkeypatch):
    def interrupted(model, args, path, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'half a file')
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, 'export', interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(demo['cfg'], demo['checkpoint'], str(tmp_path / 'model.onnx'))
    assert os.listdir(tmp_path) == []


def test_fixed_size_file_refuses_another_size(demo):
    with pytest.raises(DeployError, match=r'exported for 128x128 inputs; this one is 96x120'):
        OnnxModel(demo['onnx']).run(np.zeros((96, 120, 3), np.uint8))


def test_slide_config_refuses_another_fixed_size(demo, tmp_path):
    with pytest.raises(DeployError, match=r'sliding 128x128 windows.*--shape 128 128'):
        export_onnx(demo['cfg'], demo['checkpoint'], str(tmp_path / 'm.onnx'), shape=(96, 96))


def test_file_for_other_classes_or_config_is_refused(demo):
    onnx_model = OnnxModel(demo['onnx'])
    other_classes = demo_config(demo['root'])
    other_classes.test_dataloader.dataset.metainfo = dict(classes=('wall', 'building'))
    with pytest.raises(DeployError, match=r"made for upernet_convnext_shapes_demo.py .*150 "
                       r"classes.*'wall', 'building', 'sky'.*the classes 'wall', 'building'\."):
        check_file_fits_config(onnx_model, other_classes, 'other.py')
    other_model = demo_config(demo['root'], decode_head=dict(channels=32))
    with pytest.raises(DeployError, match=r'made for upernet_convnext_shapes_demo.py .*'
                       r"model or test-time resize differs from other.py"):
        check_file_fits_config(onnx_model, other_model, 'other.py')
    check_file_fits_config(onnx_model, demo['cfg'], 'same.py')  # fits


def test_unhandled_head_is_refused(demo):
    model = build(ADE_DEMO)
    model.decode_head = torch.nn.Identity()
    with pytest.raises(DeployError, match='handles the decode heads UPerHead.*Mask2FormerHead; '
                       'this config has a Identity'):
        SegmentorForExport(model)


# ------------------------------------------------------------------------------ run time
RUNTIME_ONLY = """
import sys
{load}
model = runtime.OnnxModel(sys.argv[1])
result = model(sys.argv[2])
assert result.labels.shape == (128, 128), result.labels.shape
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden})
assert not heavy, heavy
print('ok', len(model.classes))
"""


@pytest.mark.parametrize('how', ['package', 'file alone'])
def test_runtime_needs_no_mmcv_mmdet_mmseg(demo, how):
    """The runtime in a fresh interpreter: no mmcv, mmdet or mmseg imported (through the
    package); no torch either when the file is loaded alone, as copied next to an .onnx."""
    if how == 'package':
        load = 'from convnext_backbone.deploy import runtime'
        forbidden = {'mmcv', 'mmdet', 'mmseg'}
    else:
        load = ('import importlib.util\n'
                f"spec = importlib.util.spec_from_file_location('runtime', "
                f"{osp.join(ROOT, 'convnext_backbone/deploy/runtime.py')!r})\n"
                'runtime = sys.modules["runtime"] = importlib.util.module_from_spec(spec)\n'
                'spec.loader.exec_module(runtime)')
        forbidden = {'mmcv', 'mmdet', 'mmseg', 'torch', 'mmengine', 'convnext_backbone'}
    script = RUNTIME_ONLY.format(load=load, forbidden=sorted(forbidden))
    run = subprocess.run([sys.executable, '-c', script, demo['onnx'], demo['images'][-1]],
                         capture_output=True, text=True, cwd=str(demo['tmp']),
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0 and 'ok 150' in run.stdout, run.stderr[-3000:]


# ------------------------------------------------------------------------------ the tools
def _miou(output):
    lines = [line for line in output.splitlines() if '(test) [' in line and 'mIoU' in line]
    return float(lines[-1].split('mIoU: ')[1].split()[0])


@pytest.mark.slow
def test_tools_export_test_and_infer_through_data(demo, tmp_path):
    """--data configs: export, then tools/test.py gives the checkpoint's mIoU (to 0.2) with the
    file, infer.py draws it; the file is refused for a dataset of other classes."""
    data = str(demo['root'])
    config = ADE_DEMO
    out = str(tmp_path / 'data.onnx')
    tool_output(tmp_path, 'tools/export_onnx.py', config, demo['checkpoint'], '--out', out,
                '--data', data)
    torch_miou = _miou(tool_output(tmp_path, 'tools/test.py', config, demo['checkpoint'],
                                   '--data', data, '--work-dir', str(tmp_path / 'w')))
    onnx_miou = _miou(tool_output(tmp_path, 'tools/test.py', config, out, '--data', data))
    print('mIoU PyTorch', torch_miou, 'onnxruntime', onnx_miou)
    assert abs(torch_miou - onnx_miou) <= 0.2
    tool_output(tmp_path, 'tools/infer.py', config, out, demo['images'][0], '--out-dir',
                str(tmp_path / 'vis'))
    picture = Image.open(tmp_path / 'vis' / (osp.basename(demo['images'][0])[:-4] + '_pred.png'))
    assert picture.size == (200, 128)
    # A dataset of 5 classes: the file of 150 is refused, naming what it was made for.
    make_mask_shapes(str(tmp_path / 'five'), num_train=1, num_val=1, size=64, seed=1)
    refused = run_tool(tmp_path, 'tools/test.py', config, out, '--data', str(tmp_path / 'five'),
                       returncode=1)
    assert 'data.onnx was made for upernet_convnext_shapes_demo.py (segmentation, 150 classes' \
        in refused.stderr, refused.stderr


@pytest.mark.slow
def test_upernet_t_512_exports_and_agrees(tmp_path):
    """The paper's UPerNet-T (ConvNeXt-T, 150 classes), random weights, one 512x512 window."""
    path = osp.join(ROOT, 'configs/upernet_convnext_t.py')
    model = spatial_(build(path))
    checkpoint = save(tmp_path, model.state_dict())
    cfg = Config.fromfile(path)
    export_onnx(cfg, checkpoint, str(tmp_path / 't.onnx'))
    image = np.random.RandomState(0).randint(0, 256, (512, 512, 3)).astype(np.uint8)
    outputs = OnnxModel(str(tmp_path / 't.onnx')).run(image)
    x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
    preprocessor = model.data_preprocessor
    with torch.no_grad():
        expected = model.encode_decode((x - preprocessor.mean) / preprocessor.std,
                                       [dict(img_shape=(512, 512))]).numpy()
    assert_close(outputs['logits'], expected)
    assert (outputs['labels'] == expected.argmax(1)).mean() >= 0.999

"""End to end through the command-line tools, on generated data: the demos learn and
evaluate (from checkpoints and exported files), non-finite losses stop, published checkpoints
run through every tool. Distributed training and resume: tests/test_resume.py."""
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmseg.datasets import ADE20KDataset
from PIL import Image

from convnext_backbone.data.demo import make_ade_shapes, make_coco_shapes
from convnext_backbone.engine import NonFiniteLossHook

from .helpers import (ADE_DEMO, COCO_DEMO, INFER_ALPHA, MMPRETRAIN_BACKBONE, ROOT, build,
                      coco_boxes_mask, hf_upernet, palette_classes, run_tool, save, tool_output)


def _config(tmp_path, base, body):
    path = tmp_path / 'config.py'
    path.write_text(f"_base_ = ['{base}']\n{body}")
    return str(path)


def _coco_config(tmp_path, data_root, extra=''):
    return _config(tmp_path, COCO_DEMO, f"""
data_root = '{data_root}/'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
{extra}""")


def _metrics(output, prefix=''):
    """The figures of the tool's final test line: ``coco/bbox_mAP_50: 0.43`` (prefix
    'coco/'), ``mIoU: 43.49`` (no prefix)."""
    lines = [line for line in output.splitlines() if '(test) [' in line]
    return {k: float(v) for k, v in re.findall(rf'\b{prefix}(\w+): (-?\d+(?:\.\d+)?)\b',
                                               lines[-1] if lines else '')}


def _int8_and_openvino(tmp_path, cfg, onnx, images, fp32_metrics, keys, tolerance):
    """The trained demo's exported file quantized by tools/quantize.py (16 of the config's
    training images), then evaluated by tools/test.py: INT8 in onnxruntime and OpenVINO within
    ``tolerance`` of the fp32 file's ``keys``, OpenVINO fp32 within 0.005 (detection) or 0.05
    (mIoU) of onnxruntime's; per-image agreement with the fp32 file in onnxruntime printed
    (shown with -s; docs/deploy.md gives them)."""
    from convnext_backbone.deploy.agreement import detection_agreement, label_agreement
    from convnext_backbone.deploy.runtime import OnnxModel
    from .helpers import load_tool
    int8 = str(tmp_path / 'demo.int8.onnx')
    load_tool('quantize').main([cfg, onnx, '--out', int8, '--calib-images', '16'])
    test = load_tool('test').main
    prefix = 'coco/' if keys[0].endswith('mAP') else ''
    runs = {'openvino fp32': test([cfg, onnx, '--backend', 'openvino']),
            'onnxruntime int8': test([cfg, int8]),
            'openvino int8': test([cfg, int8, '--backend', 'openvino'])}
    figures = {name: {k: round(float(m[prefix + k]), 4) for k in keys}
               for name, m in runs.items()}
    print('fp32 onnxruntime', {k: fp32_metrics[k] for k in keys}, figures)
    for key in keys:
        same = 0.005 if prefix else 0.05
        assert abs(figures['openvino fp32'][key] - fp32_metrics[key]) <= same, (key, figures)
        for name in ('onnxruntime int8', 'openvino int8'):
            assert abs(figures[name][key] - fp32_metrics[key]) <= tolerance, (key, name, figures)
    reference = OnnxModel(onnx)
    models = {'openvino fp32': OnnxModel(onnx, backend='openvino'),
              'onnxruntime int8': OnnxModel(int8),
              'openvino int8': OnnxModel(int8, backend='openvino')}
    for name, model in models.items():
        agreement = []
        for image in images[:10]:
            ours, theirs = model(image), reference(image)
            agreement.append(detection_agreement(theirs, ours) if prefix else
                             label_agreement(theirs.labels, ours.labels))
        print(f'{name}: per-image agreement with fp32 onnxruntime ('
              f'{"detections matched, IoU >= 0.5" if prefix else "label-map pixels"}): mean '
              f'{np.mean(agreement):.4f}, lowest {np.min(agreement):.4f}')


@pytest.mark.slow
def test_coco_demo_learns(tmp_path):
    """A few minutes of training from scratch take box and mask AP50 far above an untrained
    model's (about 0); measured here 0.77 / 0.80, asserted 0.5."""
    data = tmp_path / 'coco'
    make_coco_shapes(str(data), num_train=160, num_val=40, size=192, seed=1)
    cfg = _coco_config(tmp_path, data, """
train_cfg = dict(max_epochs=6, val_interval=6)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[5], gamma=0.1)]
""")
    work = tmp_path / 'work'
    tool_output(tmp_path, 'tools/train.py', cfg, '--work-dir', str(work))
    ckpt = str(work / 'epoch_6.pth')
    out = tool_output(tmp_path, 'tools/test.py', cfg, ckpt, '--work-dir', str(work / 'test'))
    metrics = _metrics(out, 'coco/')
    print('coco demo test:', metrics)  # shown with -s, to see the margin
    assert metrics['bbox_mAP_50'] >= 0.5 and metrics['segm_mAP_50'] >= 0.5, metrics
    # The trained model exported to ONNX evaluates as the checkpoint does (onnxruntime).
    onnx = str(tmp_path / 'demo.onnx')
    tool_output(tmp_path, 'tools/export_onnx.py', cfg, ckpt, '--out', onnx)
    exported = _metrics(tool_output(tmp_path, 'tools/test.py', cfg, onnx, '--work-dir',
                                    str(work / 'test_onnx')), 'coco/')
    print('coco demo, ONNX:', exported)
    for key in ('bbox_mAP', 'segm_mAP', 'bbox_mAP_50', 'segm_mAP_50'):
        assert abs(exported[key] - metrics[key]) <= 0.005, (key, exported, metrics)
    # INT8 within 0.02 mAP of the fp32 file; OpenVINO fp32 as onnxruntime
    images = sorted(str(p) for p in (data / 'val2017').glob('*.jpg'))
    _int8_and_openvino(tmp_path, cfg, onnx, images, exported, ('bbox_mAP', 'segm_mAP'), 0.02)
    out = tool_output(tmp_path, 'tools/infer.py', cfg, ckpt, str(data / 'val2017' / '000001.jpg'),
                      '--out-dir', str(tmp_path / 'vis'))
    picture = np.asarray(Image.open(tmp_path / 'vis' / '000001_pred.png').convert('RGB'))
    image = np.asarray(Image.open(data / 'val2017' / '000001.jpg').convert('RGB'))
    assert picture.shape == image.shape == (192, 192, 3)
    # The shapes are drawn over (masks, boxes, names), the background far from them is not.
    inside = coco_boxes_mask(data / 'annotations' / 'instances_val2017.json', '000001.jpg',
                             image.shape[:2])
    changed = np.abs(picture.astype(int) - image).max(-1) > 20
    # Boxes and their names reach beyond the objects, but most of the drawing is on them
    # (measured: 71% of the objects' boxes changed, 12% of the rest).
    assert changed[inside].mean() > 0.5 and changed[~inside].mean() < changed[inside].mean() / 3


@pytest.mark.slow
def test_ade_demo_learns_and_evaluates_with_tta(tmp_path):
    make_ade_shapes(str(tmp_path / 'ade'), num_train=96, num_val=12, size=128, seed=3)
    data_root = tmp_path / 'ade' / 'ADEChallengeData2016'
    cfg = _config(tmp_path, ADE_DEMO, f"""
data_root = '{data_root}'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
max_iters = 300
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=1.0, begin=30, end=max_iters, eta_min=0.0, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=max_iters))
""")
    work = tmp_path / 'work'
    tool_output(tmp_path, 'tools/train.py', cfg, '--work-dir', str(work))
    ckpt = str(work / 'iter_300.pth')
    single = _metrics(tool_output(tmp_path, 'tools/test.py', cfg, ckpt, '--work-dir',
                                  work / 't1'))
    tta = _metrics(tool_output(tmp_path, 'tools/test.py', cfg, ckpt, '--tta', '--work-dir',
                               work / 't2'))
    print('ade demo test:', single, tta)  # shown with -s, to see the margin
    assert single['mIoU'] >= 50 and tta['mIoU'] >= 50, (single, tta)
    onnx = str(tmp_path / 'demo.onnx')  # exported, it evaluates as the checkpoint does
    tool_output(tmp_path, 'tools/export_onnx.py', cfg, ckpt, '--out', onnx)
    exported = _metrics(tool_output(tmp_path, 'tools/test.py', cfg, onnx, '--work-dir',
                                    work / 't3'))
    print('ade demo, ONNX:', exported)
    assert abs(exported['mIoU'] - single['mIoU']) <= 0.2, (exported, single)
    # INT8 within 1.0 mIoU of the fp32 file; OpenVINO fp32 as onnxruntime
    images = sorted(str(p) for p in (data_root / 'images' / 'validation').glob('*.jpg'))
    _int8_and_openvino(tmp_path, cfg, onnx, images, exported, ('mIoU', ), 1.0)
    image = data_root / 'images' / 'validation' / 'ADE_valid_00000000.jpg'
    tool_output(tmp_path, 'tools/infer.py', cfg, ckpt, str(image), '--out-dir',
                str(tmp_path / 'vis'))
    # Each region in the colour of its class (mostly: the model learned, mIoU >= 50).
    picture = np.asarray(Image.open(tmp_path / 'vis' / 'ADE_valid_00000000_pred.png'))[..., :3]
    truth = np.asarray(Image.open(data_root / 'annotations' / 'validation' /
                                  'ADE_valid_00000000.png')).astype(int) - 1  # reduce_zero
    seen = palette_classes(picture, np.asarray(Image.open(image).convert('RGB')),
                           ADE20KDataset.METAINFO['palette'], INFER_ALPHA)
    assert (seen[truth >= 0] == truth[truth >= 0]).mean() > 0.5


def test_missing_data_fails_at_start_with_the_path(tmp_path):
    cfg = _coco_config(tmp_path, tmp_path / 'nowhere')
    run = subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir',
                          str(tmp_path / 'w')], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0
    assert f'train data not found: {tmp_path}/nowhere/annotations/instances_train2017.json' \
        in run.stderr
    assert 'tools/make_demo_data.py' in run.stderr


class _Runner:
    iter, epoch, work_dir = 41, 3, 'work_dirs/x'


def test_non_finite_loss_stops_before_any_checkpoint():
    from mmengine.hooks import CheckpointHook
    from mmengine.registry import HOOKS
    from mmengine.runner.priority import get_priority
    hook = HOOKS.build(dict(type='NonFiniteLossHook'))
    hook.after_train_iter(_Runner(), 0, outputs=dict(loss=torch.tensor(1.5)))
    with pytest.raises(FloatingPointError, match='Loss became nan at iteration 42'):
        hook.after_train_iter(_Runner(), 0, outputs=dict(loss=torch.tensor(float('nan'))))
    # It runs before the checkpoint hook in the same iteration, so nothing broken is saved.
    assert get_priority(NonFiniteLossHook.priority) < get_priority(CheckpointHook.priority)


@pytest.mark.slow
def test_tools_on_published_checkpoints(tmp_path):
    """tools/test.py, tools/infer.py and tools/train.py --load-from on an MMDetection 3 zoo file
    and a Hugging Face UperNet folder (random weights, made with the source frameworks);
    a misfit exits 1 having evaluated nothing; upstream tools read this package's Runner
    checkpoints under torch >= 2.6."""
    make_coco_shapes(str(tmp_path / 'coco'), num_train=8, num_val=4, size=128, seed=4)
    make_ade_shapes(str(tmp_path / 'ade'), num_train=4, num_val=2, size=128, seed=4)
    det_cfg = _coco_config(tmp_path, tmp_path / 'coco')
    (tmp_path / 'seg').mkdir()
    seg_cfg = _config(tmp_path / 'seg', ADE_DEMO, f"""
data_root = '{tmp_path}/ade/ADEChallengeData2016'
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
""")
    zoo = save(tmp_path, build(COCO_DEMO, new_backbone=MMPRETRAIN_BACKBONE).state_dict(),
               'zoo.pth', dataset_meta=dict(classes=('circle', 'square', 'triangle')))
    heads = dict(roi_head=dict(bbox_head=dict(num_classes=80), mask_head=dict(num_classes=80)))
    zoo80 = save(tmp_path, build(COCO_DEMO, new_backbone=MMPRETRAIN_BACKBONE, **heads)
                 .state_dict(), 'zoo80.pth', dataset_meta=dict(classes=tuple(f'c{i}'
                                                                             for i in range(80))))
    hf_upernet().save_pretrained(tmp_path / 'hf')
    image = tmp_path / 'coco' / 'val2017' / '000001.jpg'
    seg_image = tmp_path / 'ade/ADEChallengeData2016/images/validation/ADE_valid_00000000.jpg'

    out = tool_output(tmp_path, 'tools/test.py', det_cfg, zoo, '--work-dir', tmp_path / 'w1')
    assert 'model zoo (mmpretrain ConvNeXt backbone)): 174 tensors loaded' in out
    assert 'bbox_mAP_50' in _metrics(out, 'coco/')
    tool_output(tmp_path, 'tools/infer.py', det_cfg, zoo, image, '--out-dir', tmp_path / 'vis')
    assert Image.open(tmp_path / 'vis' / '000001_pred.png').size == (128, 128)
    out = tool_output(tmp_path, 'tools/test.py', seg_cfg, tmp_path / 'hf', '--work-dir',
                      tmp_path / 'w2')
    assert 'Loaded' in out and 'Hugging Face UperNetForSemanticSegmentation' in out
    assert 'mIoU' in _metrics(out)
    tool_output(tmp_path, 'tools/infer.py', seg_cfg, tmp_path / 'hf', seg_image, '--out-dir',
                tmp_path / 'vis')
    # Random weights: some label everywhere, so every pixel shows the image under a class colour.
    picture = np.asarray(Image.open(tmp_path / 'vis' / 'ADE_valid_00000000_pred.png'))[..., :3]
    seen = palette_classes(picture, np.asarray(Image.open(seg_image).convert('RGB')),
                           ADE20KDataset.METAINFO['palette'], INFER_ALPHA)
    assert picture.shape == (128, 128, 3) and (seen >= 0).mean() > 0.9

    misfit = run_tool(tmp_path, 'tools/test.py', det_cfg, zoo80, '--work-dir',
                      tmp_path / 'w3', returncode=1)
    assert 'error: Cannot evaluate' in misfit.stderr and 'the checkpoint predicts 80 classes ' \
        '(roi_head.bbox_head.fc_cls, roi_head.bbox_head.fc_reg, roi_head.mask_head.' \
        'conv_logits), the config 3' in misfit.stderr
    assert 'Epoch(test)' not in misfit.stdout + misfit.stderr

    refused = run_tool(tmp_path, 'tools/train.py', det_cfg, '--resume', zoo, '--work-dir',
                       tmp_path / 'w3', returncode=1)
    assert 'is not a training checkpoint of this package' in refused.stderr

    # Fine-tune the 80-class zoo model onto the 3 shapes: class layers re-initialised.
    out = tool_output(tmp_path, 'tools/train.py', det_cfg, '--load-from', zoo80, '--work-dir',
                      tmp_path / 'w4', '--cfg-options', 'train_cfg.max_epochs=1')
    assert 're-initialised (other number of classes): roi_head.bbox_head.fc_cls, ' \
           'roi_head.bbox_head.fc_reg, roi_head.mask_head.conv_logits' in out
    assert "the checkpoint's classes ('c0', 'c1'" in out
    # Upstream mmdet tools/test.py (what `mim test` runs) on this Runner checkpoint.
    import mmdet
    upstream = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    out = tool_output(tmp_path, upstream, det_cfg, tmp_path / 'w4' / 'epoch_1.pth', '--work-dir',
                      tmp_path / 'w5')
    assert 'bbox_mAP_50' in _metrics(out, 'coco/')
    # And upstream mmseg tools/test.py on a segmentor's Runner checkpoint.
    tool_output(tmp_path, 'tools/train.py', seg_cfg, '--work-dir', tmp_path / 'w6', '--cfg-options',
                'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
                'default_hooks.checkpoint.interval=2')
    import mmseg
    upstream = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')
    out = tool_output(tmp_path, upstream, seg_cfg, tmp_path / 'w6' / 'iter_2.pth', '--work-dir',
                      tmp_path / 'w7')
    assert 'mIoU' in _metrics(out)

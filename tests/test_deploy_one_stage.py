"""ONNX export of RTMDet (the one-stage exporter, deploy/one_stage.py) with its post-processing
in the graph: the test pipeline's Pad and the preprocessing give mmdet's input exactly, and the
file's detections, run by onnxruntime, match mmdet's one to one (labels, box IoU, scores);
what the exporter does not reproduce is refused by name. (DINO: tests/test_deploy_detr.py.)"""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope

from convnext_backbone.deploy.export import export_onnx
from convnext_backbone.deploy.one_stage import OneStageDetectorForExport, pad_settings
from convnext_backbone.deploy.runtime import DeployError, OnnxModel

from .helpers import ROOT, build, save
from .test_deploy_detection import box_iou, detector_config, images, mmdet_prediction  # noqa
from .test_deploy_segmentation import spatial_

RTMDET_DEMO = osp.join(ROOT, 'configs/demo/rtmdet_convnext_shapes_demo.py')
RTMDET_L_B = osp.join(ROOT, 'configs/rtmdet_l_convnext_b.py')


def assert_boxes_match(ours, theirs, score_tol=1e-4):
    """One to one: each of mmdet's detections has one of ours of the same label, box IoU >=
    0.999 and score within ``score_tol`` (taken once). Returns the largest differences of the
    matched pairs' box corners (pixels) and scores."""
    assert len(ours.boxes) == len(theirs.bboxes) > 0, (len(ours.boxes), len(theirs.bboxes))
    assert ours.masks is None
    ious = box_iou(theirs.bboxes.numpy(), ours.boxes)
    free = np.ones(len(ours.boxes), bool)
    corners = scores = 0.0
    for i in range(len(theirs.bboxes)):
        fits = (free & (ours.labels == int(theirs.labels[i])) & (ious[i] >= 0.999) &
                (np.abs(ours.scores - float(theirs.scores[i])) <= score_tol))
        assert fits.any(), (i, theirs.bboxes[i], theirs.scores[i], theirs.labels[i])
        j = int(np.flatnonzero(fits)[np.argmax(ious[i][fits])])
        free[j] = False
        corners = max(corners, float(np.abs(ours.boxes[j] - theirs.bboxes[i].numpy()).max()))
        scores = max(scores, abs(float(ours.scores[j]) - float(theirs.scores[i])))
    return corners, scores


def separated_(model):
    """Random weights whose class scores vary over the image and spread out (no near ties
    for NMS and the top-k to break differently): ``spatial_``, class logits x 30."""
    spatial_(model)
    with torch.no_grad():
        for layer in model.bbox_head.rtm_cls:
            layer.weight.mul_(30)
    return model


def test_pad_and_preprocessing_are_mmdets(images):
    """The graph's Pad (114 at the bottom and right, to 128x128) and normalisation give the
    tensor mmdet's test pipeline and data preprocessor give, for a square and a wide image."""
    model = build(RTMDET_DEMO)
    cfg = detector_config(RTMDET_DEMO)
    pipeline = cfg.test_dataloader.dataset.pipeline
    pad = pad_settings(next(step for step in pipeline if step['type'] == 'Pad'))
    assert pad == dict(size=[128, 128], size_divisor=None, value=[114.0, 114.0, 114.0])
    wrapper = OneStageDetectorForExport(model, pad)
    resize = [t for t in pipeline if t['type'] not in ('LoadAnnotations', 'Pad', 'PackDetInputs')]
    full = [t for t in pipeline if t['type'] != 'LoadAnnotations']
    for path in images['paths'][1:]:
        with DefaultScope.overwrite_default_scope('mmdet'), torch.no_grad():
            data = pseudo_collate([Compose(full)(dict(img_path=path, img_id=0))])
            theirs = model.data_preprocessor(data, False)['inputs']
            resized = torch.from_numpy(Compose(resize)(dict(img_path=path, img_id=0))['img'])
            ours = wrapper._preprocess(resized[None])
        assert ours.shape == theirs.shape == (1, 3, 128, 128)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_rtmdet_demo_file_matches_mmdet(images, tmp_path):
    """RTMDet demo (random weights): one file for any resized size (the graph pads to the test
    pipeline's 128x128); every detection of mmdet's, on images at and off the test size,
    matches one of the file's."""
    test_cfg = dict(score_thr=0.05)  # ~100 candidates, NMS and max_per_img (30) do the rest
    model = separated_(build(RTMDET_DEMO, test_cfg=test_cfg))
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(RTMDET_DEMO, test_cfg=test_cfg)
    meta = export_onnx(cfg, checkpoint, str(tmp_path / 'rtmdet.onnx'))
    assert meta['test_pad'] == dict(size=[128, 128], size_divisor=None, value=[114.0] * 3)
    assert meta['outputs'] == ['boxes', 'scores', 'labels'] and meta['max_per_img'] == 30
    onnx_model = OnnxModel(str(tmp_path / 'rtmdet.onnx'))
    for path in images['paths']:
        theirs = mmdet_prediction(model, cfg, path)
        ours = onnx_model(path)
        corners, scores = assert_boxes_match(ours, theirs)
        assert len(ours.boxes) == 30  # cut by max_per_img, as mmdet's
        print(f'{osp.basename(path)}: 30 matched; box corners within {corners:.2g} px, '
              f'scores within {scores:.2g}')
    import onnx
    nodes = onnx.load(str(tmp_path / 'rtmdet.onnx')).graph.node
    assert 'NonMaxSuppression' in {n.op_type for n in nodes} and all(n.domain == '' for n in nodes)


@pytest.mark.slow
def test_rtmdet_l_convnext_b_file_matches_mmdet(images, tmp_path):
    """configs/rtmdet_l_convnext_b.py (ConvNeXt-B, CSPNeXtPAFPN, GroupNorm, 80 classes, nms_pre
    30000), random weights, its test resize and pad made 320x320: detections matched one to
    one, the config's max_per_img (300) cutting them. Class logits x 3 (their largest about
    6: scores up to 0.998, where float32 still tells them apart; x 10 rounds the best to 1.0,
    ties), score_thr 0.9 (still more than 300 detections survive NMS)."""
    test_cfg = dict(score_thr=0.9)
    model = spatial_(build(RTMDET_L_B, test_cfg=test_cfg))
    with torch.no_grad():
        for layer in model.bbox_head.rtm_cls:
            layer.weight.mul_(3)
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(RTMDET_L_B, test_cfg=test_cfg)
    pipeline = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline[1:3]] == ['Resize', 'Pad']
    pipeline[1].scale = pipeline[2].size = (320, 320)
    export_onnx(cfg, checkpoint, str(tmp_path / 'rtmdet_l.onnx'))
    path = images['paths'][-1]  # 150x230: resized to 209x320, padded to 320x320
    ours = OnnxModel(str(tmp_path / 'rtmdet_l.onnx'))(path)
    corners, scores = assert_boxes_match(ours, mmdet_prediction(model, cfg, path))
    assert len(ours.boxes) == 300
    print(f'RTMDet-L-B: 300 matched; box corners within {corners:.2g} px, scores within '
          f'{scores:.2g}')


# ------------------------------------------------------------------------------ refusals
def test_what_is_not_reproduced_is_refused(tmp_path):
    model = build(RTMDET_DEMO, test_cfg=dict(nms_pre=-1))
    with pytest.raises(DeployError, match=r'model.test_cfg.nms_pre=-1: .* give a positive'):
        OneStageDetectorForExport(model)
    with pytest.raises(DeployError, match=r"Pad with a constant value .* 'pad_to_square': True"):
        pad_settings(dict(type='Pad', pad_to_square=True))
    # A two-stage detector whose test pipeline pads: refused, nothing written.
    mask_rcnn = osp.join(ROOT, 'configs/demo/mask_rcnn_convnext_shapes_demo.py')
    checkpoint = save(tmp_path, build(mask_rcnn).state_dict())
    cfg = detector_config(mask_rcnn)
    cfg.test_dataloader.dataset.pipeline.insert(2, dict(type='Pad', size_divisor=32))
    with pytest.raises(DeployError, match=r'reproduces a Pad in the graphs of RTMDet only, '
                       r'not of a MaskRCNN'):
        export_onnx(cfg, checkpoint, str(tmp_path / 'padded.onnx'))
    assert not (tmp_path / 'padded.onnx').exists()

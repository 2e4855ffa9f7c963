"""ONNX export of the detectors (Mask R-CNN, Cascade Mask R-CNN) with their post-processing in
the graph: detections of the file, run by onnxruntime, match mmdet's one to one (labels, box
IoU, scores, mask IoU); the graph's RoiAlign is mmcv's RoIAlign; masks are pasted as mmdet's
``_do_paste_mask``; tools/test.py gives the checkpoint's COCO mAP; unhandled heads are refused."""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope
from PIL import Image

from convnext_backbone.data.demo import make_coco_shapes
from convnext_backbone.deploy.detector import DetectorForExport, paste_masks
from convnext_backbone.deploy.export import export_onnx
from convnext_backbone.deploy.runtime import DeployError, OnnxModel

from .helpers import CASCADE, COCO_DEMO, ROOT, build, save, tool_output
from .test_deploy_segmentation import spatial_


def box_iou(a, b):
    """IoU of each box of ``a`` (N, 4) with each of ``b`` (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-12)


def assert_detections_match(ours, theirs, score_tol=1e-4):
    """One to one: each of mmdet's detections has one of ours of the same label, box IoU >=
    0.999, score within ``score_tol`` and mask IoU >= 0.99 or one pixel apart (taken once)."""
    assert len(ours.boxes) == len(theirs.bboxes) > 0, (len(ours.boxes), len(theirs.bboxes))
    ious = box_iou(theirs.bboxes.numpy(), ours.boxes)
    free = np.ones(len(ours.boxes), bool)
    for i in range(len(theirs.bboxes)):
        fits = (free & (ours.labels == int(theirs.labels[i])) & (ious[i] >= 0.999) &
                (np.abs(ours.scores - float(theirs.scores[i])) <= score_tol))
        assert fits.any(), (i, theirs.bboxes[i], theirs.scores[i], theirs.labels[i])
        j = int(np.flatnonzero(fits)[np.argmax(ious[i][fits])])
        free[j] = False
        a, b = theirs.masks[i].numpy(), ours.masks[j]
        union, differ = (a | b).sum(), (a ^ b).sum()
        # a small mask may lose its IoU to one pixel whose probability is at the threshold
        assert differ <= 1 or (a & b).sum() / union >= 0.99, (i, (a & b).sum(), union)


def mmdet_prediction(model, cfg, image_path):
    """mmdet's own test step on one image: its pred_instances on the original image."""
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] != 'LoadAnnotations']
    with DefaultScope.overwrite_default_scope('mmdet'), torch.no_grad():
        data = pseudo_collate([Compose(pipeline)(dict(img_path=image_path, img_id=0))])
        return model.test_step(data)[0].pred_instances


def detector_config(path, data_root=None, **model):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    if path == CASCADE:  # as tests.helpers.build makes it
        cfg.merge_from_dict(dict(model=dict(
            backbone=dict(arch='atto'), neck=dict(in_channels=[40, 80, 160, 320]),
            test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=30)))))
    cfg.merge_from_dict(dict(model=model))
    if data_root:
        for split in ('val_dataloader', 'test_dataloader'):
            cfg[split].dataset.data_root = data_root
    return cfg


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Demo images: two 192x192, and one 150x230 that the test resize scales to 192x294."""
    tmp = tmp_path_factory.mktemp('det')
    make_coco_shapes(str(tmp / 'coco'), num_train=1, num_val=2, size=192, seed=3)
    paths = sorted(glob.glob(str(tmp / 'coco' / 'val2017' / '*.jpg')))
    Image.open(paths[0]).resize((230, 150), Image.BILINEAR).save(tmp / 'wide.jpg')
    return dict(tmp=tmp, paths=paths + [str(tmp / 'wide.jpg')])


# ------------------------------------------------------------------------- the operators
def test_graph_roi_align_is_mmcvs(tmp_path):
    """torchvision's roi_align as exported (ONNX RoiAlign, half_pixel) and run by onnxruntime
    equals mmcv's RoIAlign (aligned=True) with sampling_ratio 0 (adaptive) and 2."""
    import onnxruntime as ort
    from mmcv.ops import RoIAlign
    from torchvision.ops import roi_align
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 8, 25, 38, generator=generator)
    corners = torch.rand(40, 2, generator=generator) * torch.tensor([300., 200.])
    sizes = torch.rand(40, 2, generator=generator) * 150 + 0.5
    rois = torch.cat([torch.zeros(40, 1), corners, corners + sizes], dim=1)
    rois[0, 1:] = torch.tensor([-20., -10., 5., 3.])  # partly outside the image
    for sampling_ratio in (0, 2):
        class Pool(torch.nn.Module):
            def forward(self, x, r):
                return roi_align(x, r, (7, 7), 1 / 8, sampling_ratio, True)

        path = str(tmp_path / f'roi_align_{sampling_ratio}.onnx')
        torch.onnx.export(Pool(), (features, rois), path, dynamo=False, opset_version=17,
                          input_names=['x', 'r'])
        ours = ort.InferenceSession(path).run(None, {'x': features.numpy(),
                                                     'r': rois.numpy()})[0]
        mmcv = RoIAlign((7, 7), 1 / 8, sampling_ratio, aligned=True)(features, rois).numpy()
        np.testing.assert_allclose(ours, mmcv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shared', [False, True], ids=['boxes-per-class', 'shared-boxes'])
def test_multiclass_nms_takes_classes_as_batches(shared, tmp_path):
    """``MulticlassNMS`` exported: one NonMaxSuppression whose batches are the classes, each
    with its own boxes (the R-CNN's), or one batch whose classes share its boxes (RTMDet's
    points); onnxruntime and OpenVINO keep what the eager computation keeps (mmcv's
    batched_nms), scores equal to the threshold dropped as mmdet's ``>`` drops them."""
    import onnx
    import onnxruntime as ort
    import openvino as ov
    from convnext_backbone.deploy.detector import MulticlassNMS
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(3, 50, 2, generator=generator) * 100
    boxes = torch.cat([corners, corners + torch.rand(3, 50, 2, generator=generator) * 40 + 1],
                      -1)
    if shared:
        boxes = boxes[0]
    scores = torch.rand(3, 50, generator=generator)
    scores[1, 7] = 0.25  # exactly at the threshold: out, as mmdet's scores > score_thr

    class Nms(torch.nn.Module):
        def forward(self, b, s):
            return MulticlassNMS.apply(b, s, 0.5, 0.25, 20)

    path = str(tmp_path / 'nms.onnx')
    torch.onnx.export(Nms(), (boxes, scores), path, dynamo=False, opset_version=17,
                      input_names=['b', 's'], output_names=['pairs'])
    [node] = [n for n in onnx.load(path).graph.node if n.op_type == 'NonMaxSuppression']
    # (classes, boxes, 4): the classes are the batches; shared: (1, boxes, 4)
    assert (node.input[0] == 'b') != shared
    eager = Nms()(boxes, scores)
    expected = {tuple(p) for p in eager.tolist()}
    assert (1, 7) not in expected and len(expected) == len(eager)
    # eager keeps every pair, the file at most 20 of a class: the cap is exercised
    assert np.bincount(eager[:, 0].numpy(), minlength=3).max() > 20
    feeds = {'b': boxes.numpy(), 's': scores.numpy()}
    compiled = ov.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    for ran in (ort.InferenceSession(path).run(None, feeds)[0],
                np.asarray(compiled(feeds)[0])):
        kept = {tuple(p) for p in ran.tolist()}
        assert len(kept) == len(ran) and (1, 7) not in kept
        # the same pairs, the file's capped at 20 per class (their best 20)
        for label in range(3):
            ours = sorted((p for p in kept if p[0] == label),
                          key=lambda p: -float(scores[p]))
            theirs = sorted((p for p in expected if p[0] == label),
                            key=lambda p: -float(scores[p]))
            assert ours == theirs[:20], label


@pytest.mark.parametrize('method', ['linear', 'gaussian', 'naive'])
def test_multiclass_soft_nms_is_mmdets(method, tmp_path):
    """``multiclass_soft_nms``, eager and exported (onnxruntime, OpenVINO), keeps what mmdet's
    ``multiclass_nms`` with mmcv's soft-NMS keeps: the same boxes, labels and lowered scores,
    best ``max_per_img`` first; the steps cap each class as max_per_img caps all."""
    import onnxruntime as ort
    import openvino as ov
    from mmdet.models.layers import multiclass_nms
    from convnext_backbone.deploy.detector import multiclass_soft_nms
    generator = torch.Generator().manual_seed(2)
    # overlapping clusters, so that scores are lowered and some fall below min_score
    corners = torch.rand(3, 60, 2, generator=generator) * 30
    boxes = torch.cat([corners, corners + torch.rand(3, 60, 2, generator=generator) * 20 + 40],
                      -1)
    scores = torch.rand(3, 60, generator=generator)
    nms = dict(type='soft_nms', iou_threshold=0.4, sigma=0.5, min_score=0.05, method=method)
    steps, score_thr = 25, 0.1
    arguments = {k: v for k, v in nms.items() if k != 'type'}

    class SoftNms(torch.nn.Module):
        def forward(self, b, s):
            pairs, kept = multiclass_soft_nms(b, s, score_thr, steps, offset=0,
                                              split_thr=10000, **arguments)
            return b[pairs[:, 0], pairs[:, 1]], kept, pairs[:, 0]

    def best_first(outputs):  # as mmdet: the best max_per_img of all classes
        order = np.argsort(-np.asarray(outputs[1]), kind='stable')[:steps]
        return [np.asarray(o)[order] for o in outputs]

    # mmdet's layout: (R, C * 4) boxes, (R, C + 1) scores with the background last
    dets, labels = multiclass_nms(boxes.permute(1, 0, 2).reshape(60, 12),
                                  torch.cat([scores.t(), torch.zeros(60, 1)], 1), score_thr,
                                  nms, max_num=steps)
    # linear / gaussian lower the overlapping scores (the cap cuts); naive drops those boxes
    assert (len(dets) < steps) if method == 'naive' else (len(dets) == steps)
    path = str(tmp_path / 'soft_nms.onnx')
    torch.onnx.export(SoftNms(), (boxes, scores), path, dynamo=False, opset_version=17,
                      input_names=['b', 's'], output_names=['boxes', 'scores', 'labels'])
    feeds = {'b': boxes.numpy(), 's': scores.numpy()}
    compiled = ov.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    eager = [t.numpy() for t in SoftNms()(boxes, scores)]
    for ours in map(best_first, (eager, ort.InferenceSession(path).run(None, feeds),
                                 list(compiled(feeds).values()))):
        np.testing.assert_array_equal(ours[2], labels.numpy())
        np.testing.assert_array_equal(ours[0], dets[:, :4].numpy())
        np.testing.assert_allclose(ours[1], dets[:, 4].numpy(), rtol=1e-6)
    own = scores[labels, [int(np.flatnonzero((boxes[l] == b).all(1))[0])
                          for l, b in zip(labels.tolist(), dets[:, :4])]]
    assert torch.equal(own, dets[:, 4]) == (method == 'naive')  # lowered, or not


@pytest.mark.parametrize('split_thr', [10000, 5], ids=['all-classes-at-once', 'by-class'])
def test_soft_nms_drops_candidates_below_min_score_but_the_first(split_thr, tmp_path):
    """score_thr below min_score: mmcv drops the candidates under min_score before they are
    picked, but the one it picks first: the best of all (one soft-NMS of all classes) or of
    each class (``batched_nms`` from ``split_thr`` candidates on). A class scored all below
    min_score keeps nothing, or its best; eager and onnxruntime as mmdet."""
    import onnxruntime as ort
    from mmdet.models.layers import multiclass_nms
    from convnext_backbone.deploy.detector import multiclass_soft_nms
    generator = torch.Generator().manual_seed(3)
    corners = torch.rand(3, 30, 2, generator=generator) * 60
    boxes = torch.cat([corners, corners + torch.rand(3, 30, 2, generator=generator) * 40 + 1],
                      -1)
    scores = torch.rand(3, 30, generator=generator)
    scores[2] *= 0.1  # class 2: all below min_score
    nms = dict(type='soft_nms', iou_threshold=0.3, min_score=0.2, split_thr=split_thr)

    class SoftNms(torch.nn.Module):
        def forward(self, b, s):
            pairs, kept = multiclass_soft_nms(b, s, 0.0, 100, sigma=0.5, method='linear',
                                              offset=0, **{k: v for k, v in nms.items()
                                                           if k != 'type'})
            return b[pairs[:, 0], pairs[:, 1]], kept, pairs[:, 0]

    dets, labels = multiclass_nms(boxes.permute(1, 0, 2).reshape(30, 12),
                                  torch.cat([scores.t(), torch.zeros(30, 1)], 1), 0.0, nms,
                                  max_num=100)
    assert (labels == 2).sum() == (1 if split_thr == 5 else 0)
    path = str(tmp_path / 'soft_nms.onnx')
    torch.onnx.export(SoftNms(), (boxes, scores), path, dynamo=False, opset_version=17,
                      input_names=['b', 's'], output_names=['boxes', 'scores', 'labels'])
    for ours in (SoftNms()(boxes, scores),
                 ort.InferenceSession(path).run(None, {'b': boxes.numpy(), 's': scores.numpy()})):
        order = np.argsort(-np.asarray(ours[1]), kind='stable')
        np.testing.assert_array_equal(np.asarray(ours[2])[order], labels.numpy())
        np.testing.assert_array_equal(np.asarray(ours[0])[order], dets[:, :4].numpy())
        np.testing.assert_allclose(np.asarray(ours[1])[order], dets[:, 4].numpy(), rtol=1e-6)


def test_paste_masks_is_mmdets():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    generator = torch.Generator().manual_seed(1)
    masks = torch.rand(6, 28, 28, generator=generator)
    corners = torch.rand(6, 2, generator=generator) * 100 - 10
    boxes = torch.cat([corners, corners + torch.rand(6, 2, generator=generator) * 90 + 1], 1)
    ours = paste_masks(masks, boxes, torch.tensor(97), torch.tensor(121))
    for i in range(6):  # mmdet on CPU: one mask at a time, in its box's window
        theirs, window = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1], 97, 121, True)
        np.testing.assert_allclose(ours[i][window].numpy(), theirs[0].numpy(), atol=1e-5)
        full = torch.zeros(97, 121, dtype=torch.bool)
        full[window] = theirs[0] >= 0.5
        assert torch.equal(ours[i] >= 0.5, full)


# -------------------------------------------------------------------------------- parity
def test_mask_rcnn_demo_file_matches_mmdet(images, tmp_path):
    """Mask R-CNN demo (random weights): one file for any size; every detection of mmdet's on
    images at and off the test size matches one of the file's, run by onnxruntime and by
    OpenVINO (fp32)."""
    model = build(COCO_DEMO)
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(COCO_DEMO)
    export_onnx(cfg, checkpoint, str(tmp_path / 'mask_rcnn.onnx'))
    onnx_model = OnnxModel(str(tmp_path / 'mask_rcnn.onnx'))
    openvino = OnnxModel(str(tmp_path / 'mask_rcnn.onnx'), backend='openvino')
    assert onnx_model.input_shape is None and onnx_model.meta['max_per_img'] == 20
    assert openvino.meta == onnx_model.meta  # the metadata read through OpenVINO too
    for path in images['paths']:
        theirs = mmdet_prediction(model, cfg, path)
        for runtime in (onnx_model, openvino):
            ours = runtime(path)
            assert ours.masks.shape[1:] == theirs.masks.shape[1:]  # the original image's size
            assert_detections_match(ours, theirs)
    import onnx
    nodes = onnx.load(str(tmp_path / 'mask_rcnn.onnx')).graph.node
    ops = {n.op_type for n in nodes}
    assert {'RoiAlign', 'NonMaxSuppression'} <= ops and all(n.domain == '' for n in nodes)
    roi_modes = {a.s for n in nodes if n.op_type == 'RoiAlign' for a in n.attribute
                 if a.name == 'coordinate_transformation_mode'}
    assert roi_modes == {b'half_pixel'}


@pytest.mark.slow
def test_cascade_file_matches_mmdet(images, tmp_path):
    """Cascade Mask R-CNN (class-aware regression, sampling_ratio 0, atto), random weights,
    the test resize made small: detections match one to one."""
    resize = dict(type='Resize', scale=(320, 256), keep_ratio=True)
    model = spatial_(build(CASCADE, test_cfg=dict(rcnn=dict(score_thr=0.01, max_per_img=30))))
    with torch.no_grad():  # class scores far apart (no ties for NMS to break), mask
        for head in model.roi_head.bbox_head:  # probabilities away from the threshold
            head.fc_cls.weight.mul_(1000)
        for head in model.roi_head.mask_head:
            head.conv_logits.weight.mul_(1000)
    assert not model.roi_head.bbox_head[0].reg_class_agnostic
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(CASCADE, test_cfg=dict(rcnn=dict(score_thr=0.01, max_per_img=30)))
    cfg.test_dataloader.dataset.pipeline[1] = resize
    export_onnx(cfg, checkpoint, str(tmp_path / 'cascade.onnx'))
    onnx_model = OnnxModel(str(tmp_path / 'cascade.onnx'))
    for path in images['paths'][1:]:
        assert_detections_match(onnx_model(path), mmdet_prediction(model, cfg, path))


# ------------------------------------------------------------------------------ refusals
def test_unhandled_parts_are_refused():
    model = build(COCO_DEMO)
    model.neck = torch.nn.Identity()
    with pytest.raises(DeployError, match=r"handles necks of the types FPN; this config's "
                       r'neck is a Identity'):
        DetectorForExport(model)
    model = build(COCO_DEMO)
    model.roi_head.mask_head = torch.nn.Conv2d(1, 1, 1)
    with pytest.raises(DeployError, match=r'handles mask heads of the types FCNMaskHead; '
                       r"this config's roi_head.mask_head\[0\] is a Conv2d"):
        DetectorForExport(model)


@pytest.mark.parametrize('nms, max_per_img, message', [
    (dict(type='soft_nms', method='hard'), 100, r"soft_nms method='hard': mmcv's are naive, "
     r'linear, gaussian'),
    (dict(type='soft_nms', class_agnostic=True), 100, r'test_cfg.rcnn.nms \(soft_nms\) sets '
     r'class_agnostic; the exporter handles iou_threshold, sigma'),
    (dict(type='soft_nms'), -1, r'max_per_img <= 0 with soft_nms: the graph unrolls'),
    (dict(type='matrix_nms'), 100, r"handles R-CNN NMS of the types nms, soft_nms; this "
     r"config's test_cfg.rcnn.nms is a matrix_nms")])
def test_soft_nms_the_graph_would_not_reproduce_is_refused(nms, max_per_img, message):
    model = build(COCO_DEMO)
    model.roi_head.test_cfg.update(nms=nms, max_per_img=max_per_img)
    with pytest.raises(DeployError, match=message):
        DetectorForExport(model)


# ----------------------------------------------------------------------------- the tools
def _coco_metrics(output):
    line = [line for line in output.splitlines() if '(test) [' in line and 'bbox_mAP' in line]
    return {key: float(line[-1].split(f'{key}: ')[1].split()[0])
            for key in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50')}


@pytest.mark.slow
def test_tools_coco_map_of_the_file_is_the_checkpoints(images, tmp_path):
    """tools/test.py on the exported demo (--data): COCO bbox and segm mAP within 0.005 of the
    checkpoint's; tools/infer.py draws the file's predictions."""
    data = str(images['tmp'] / 'coco')
    model = build(COCO_DEMO)
    checkpoint = save(tmp_path, model.state_dict())
    out = str(tmp_path / 'demo.onnx')
    tool_output(tmp_path, 'tools/export_onnx.py', COCO_DEMO, checkpoint, '--out', out,
                '--data', data)
    theirs = _coco_metrics(tool_output(tmp_path, 'tools/test.py', COCO_DEMO, checkpoint,
                                       '--data', data, '--work-dir', str(tmp_path / 'w')))
    ours = _coco_metrics(tool_output(tmp_path, 'tools/test.py', COCO_DEMO, out, '--data', data))
    print('COCO PyTorch', theirs, 'onnxruntime', ours)
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert abs(ours[key] - theirs[key]) <= 0.005, (key, ours, theirs)
    tool_output(tmp_path, 'tools/infer.py', COCO_DEMO, out, images['paths'][-1], '--out-dir',
                str(tmp_path / 'vis'), '--score-thr', '0.0')
    assert Image.open(tmp_path / 'vis' / 'wide_pred.png').size == (230, 150)


# --------------------------------------------------------------- input sizes of the file
def resized_size(cfg, image_path):
    """(h, w) of the image after the config's test pipeline (the graph's input size)."""
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] != 'LoadAnnotations']
    with DefaultScope.overwrite_default_scope('mmdet'):
        return tuple(Compose(pipeline)(dict(img_path=image_path, img_id=0))['data_samples']
                     .img_shape)


def test_dynamic_demo_file_matches_mmdet_at_several_sizes(images, tmp_path):
    """``dynamic=True`` (as ``--dynamic``): one file; after the test resize the inputs are
    192x192, 192x294 and 192x259 (an odd width, from a 97x131 image), and at each every
    detection of mmdet's matches one of the file's."""
    odd = str(tmp_path / 'odd.jpg')
    Image.open(images['paths'][1]).resize((131, 97), Image.BILINEAR).save(odd)
    model = build(COCO_DEMO)
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(COCO_DEMO)
    meta = export_onnx(cfg, checkpoint, str(tmp_path / 'dynamic.onnx'), dynamic=True)
    assert meta['input_shape'] == 'dynamic'
    onnx_model = OnnxModel(str(tmp_path / 'dynamic.onnx'))
    assert onnx_model.input_shape is None
    for path, resized in ((images['paths'][0], (192, 192)), (images['paths'][2], (192, 294)),
                          (odd, (192, 259))):
        assert resized_size(cfg, path) == resized
        assert_detections_match(onnx_model(path), mmdet_prediction(model, cfg, path))


def test_fixed_size_detection_file_matches_and_refuses_other_sizes(images, tmp_path):
    """``shape=(192, 192)`` (as ``--shape 192 192``): the file matches mmdet at that size and
    refuses an image that the test resize makes 192x294, naming both sizes."""
    model = build(COCO_DEMO)
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(COCO_DEMO)
    export_onnx(cfg, checkpoint, str(tmp_path / 'fixed.onnx'), shape=(192, 192))
    onnx_model = OnnxModel(str(tmp_path / 'fixed.onnx'))
    assert onnx_model.input_shape == (192, 192)
    assert_detections_match(onnx_model(images['paths'][0]),
                            mmdet_prediction(model, cfg, images['paths'][0]))
    with pytest.raises(DeployError, match=r'exported for 192x192 inputs; this one is 192x294 '
                       r'\(after the test resize\)'):
        onnx_model(images['paths'][2])


# ------------------------------------------------------------------ paper-sized configs
MASK_RCNN_T = osp.join(ROOT, 'configs/mask_rcnn_convnext_t.py')
MASK_RCNN_V2_T = osp.join(ROOT, 'configs/mask_rcnn_convnextv2_t.py')
MASK_RCNN_V2_B_LSJ = osp.join(ROOT, 'configs/mask_rcnn_convnextv2_b_lsj_3x.py')


def separated_(model):
    """Random weights for a detection parity test: outputs that vary over the image
    (``spatial_``), class scores spread out (logits x100: x1000 saturates the softmax at 1.0
    and the top 100 then tie) and mask probabilities away from the threshold (random mask
    logits sit near 0.5)."""
    spatial_(model)
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.weight.mul_(100)
        model.roi_head.mask_head.conv_logits.weight.mul_(1000)
    return model


# score_thr 0.25: with these weights ~100 detections pass 0.05 and max_per_img cuts them
# where scores are 1e-6 apart; above 0.25 only a few dozen, well apart
PAPER_TEST_CFG = dict(rcnn=dict(score_thr=0.25))


def _paper_config_parity(path, image, tmp_path, resize=None, **changes):
    changes = dict(changes, test_cfg=PAPER_TEST_CFG)
    model = separated_(build(path, **changes))
    checkpoint = save(tmp_path, model.state_dict())
    cfg = detector_config(path, **changes)
    if resize is not None:
        steps = cfg.test_dataloader.dataset.pipeline
        steps[[t['type'] for t in steps].index('Resize')] = resize
    export_onnx(cfg, checkpoint, str(tmp_path / 'model.onnx'))
    ours = OnnxModel(str(tmp_path / 'model.onnx'))(image)
    theirs = mmdet_prediction(model, cfg, image)
    assert ours.masks.shape[1:] == theirs.masks.shape[1:]
    assert_detections_match(ours, theirs)
    corners = np.abs(np.sort(ours.boxes, 0) - np.sort(theirs.bboxes.numpy(), 0)).max()
    scores = np.abs(np.sort(ours.scores) - np.sort(theirs.scores.numpy())).max()
    print(f'{osp.basename(path)}: {len(ours.boxes)} detections matched; (sorted) box corners '
          f'within {corners:.2g} px, scores within {scores:.2g}')
    return len(ours.boxes)


@pytest.mark.slow
def test_mask_rcnn_t_800x1216_file_matches_mmdet(images, tmp_path):
    """configs/mask_rcnn_convnext_t.py as it is (ConvNeXt-T, FPN, 1000 proposals, its test
    resize to 1333x800), random weights: one 800x1216 image (the resize keeps it), every
    detection matched one to one."""
    image = str(tmp_path / 'paper.jpg')
    Image.open(images['paths'][0]).resize((1216, 800), Image.BILINEAR).save(image)
    assert _paper_config_parity(MASK_RCNN_T, image, tmp_path) > 0


@pytest.mark.slow
def test_mask_rcnn_v2_t_file_matches_mmdet(images, tmp_path):
    """configs/mask_rcnn_convnextv2_t.py (ConvNeXt V2-T: GRN, no layer scale), random weights,
    the test resize made 640x416: one 416x640 image, every detection matched one to one."""
    image = str(tmp_path / 'v2.jpg')
    Image.open(images['paths'][1]).resize((640, 416), Image.BILINEAR).save(image)
    resize = dict(type='Resize', scale=(640, 416), keep_ratio=True)
    assert _paper_config_parity(MASK_RCNN_V2_T, image, tmp_path, resize=resize) > 0


@pytest.mark.slow
def test_soft_nms_recipe_file_matches_mmdet(images, tmp_path):
    """configs/mask_rcnn_convnextv2_b_lsj_3x.py's test (soft-NMS in the R-CNN, unrolled in the
    graph) with a V2 atto backbone, random weights, the test resize made 640x416: every
    detection, with the score soft-NMS lowered it to, matched one to one."""
    image = str(tmp_path / 'v2.jpg')
    Image.open(images['paths'][0]).resize((640, 416), Image.BILINEAR).save(image)
    resize = dict(type='Resize', scale=(640, 416), keep_ratio=True)
    atto = dict(backbone=dict(arch='atto'), neck=dict(in_channels=[40, 80, 160, 320]))
    assert _paper_config_parity(MASK_RCNN_V2_B_LSJ, image, tmp_path, resize=resize, **atto) > 0

"""A two-stage detector (mmdet's Mask R-CNN and Cascade Mask R-CNN) as one traceable module for
ONNX export, post-processing included: boxes, scores, labels and masks on the original image.

In the graph, as mmdet's test step computes them:
- the data preprocessor's BGR -> RGB, mean / std and padding to its size divisor;
- backbone, FPN, the RPN's top ``nms_pre`` anchors per level, their box decoding, the
  ``min_bbox_size`` filter, NMS across levels (``batched_nms`` with level ids) and the best
  ``max_per_img`` proposals;
- RoIAlign (torchvision's, ONNX ``RoiAlign``: mmcv's ``aligned=True`` is ``half_pixel``, its
  ``sampling_ratio=0`` the same adaptive grid) on the level ``SingleRoIExtractor`` assigns;
- the box head(s) (Cascade: the stages' refinements with class-aware or class-agnostic
  regression, scores averaged over stages), box decoding clipped to the image, the score
  threshold, per-class NMS (``MulticlassNMS``: mmcv's ``batched_nms`` in eager runs, one ONNX
  ``NonMaxSuppression`` with the classes as batches in the file; soft-NMS unrolled,
  ``multiclass_soft_nms``) and the best ``max_per_img``;
- the mask head(s) (Cascade: sigmoids averaged over stages) on the detections, boxes divided by
  the resize's scale factors, masks pasted on the original image as ``_do_paste_mask`` does
  (bilinear, ``align_corners=False``, zero outside) and thresholded at ``mask_thr_binary``.

Inputs: ``image`` (1, H, W, 3) uint8 BGR after the test resize, ``scale_factor`` (2,) float32
(w, h) of that resize and ``original_size`` (2,) int64 (h, w). Outputs: ``boxes`` (N, 4)
float32 x1 y1 x2 y2, ``scores`` (N,), ``labels`` (N,) int64 and ``masks`` (N, h, w) bool, on
the original image, best first.
"""
from __future__ import annotations

import copy
import inspect
import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from ..errors import DeployError
from .inputs import ImageInput

# What the exporter handles, part by part (mmdet's class names).
DETECTORS = ('MaskRCNN', 'CascadeRCNN')
HANDLED = {
    'neck': ('FPN', ),
    'rpn_head': ('RPNHead', ),
    'roi_head': ('StandardRoIHead', 'CascadeRoIHead'),
    'bbox_head': ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead', 'ConvFCBBoxHead'),
    'mask_head': ('FCNMaskHead', ),
    'roi_extractor': ('SingleRoIExtractor', ),
    'roi_layer': ('RoIAlign', ),
    'box_coder': ('DeltaXYWHBBoxCoder', ),
    'anchor_generator': ('AnchorGenerator', ),
    'rpn_nms': ('nms', ),
    'rcnn_nms': ('nms', 'soft_nms'),
}


# how a refusal names the kinds whose key does not read as a plural with an "s"
KIND_NAMES = {'rpn_nms': 'RPN NMS', 'rcnn_nms': 'R-CNN NMS'}


def _refuse_unless(kind: str, module, part: str) -> None:
    name = module if isinstance(module, str) else type(module).__name__
    if name not in HANDLED[kind]:
        kinds = KIND_NAMES.get(kind, f'{kind.replace("_", " ")}s')
        raise DeployError(f'The exporter handles {kinds} of the types '
                          f'{", ".join(HANDLED[kind])}; this config\'s {part} is a {name}')


def _stages(module) -> list:
    return list(module) if isinstance(module, nn.ModuleList) else [module]


def check_detector(detector: nn.Module) -> None:
    """Refuse, naming the module type and those handled, a detector the exporter does not
    reproduce."""
    kind = type(detector).__name__
    if kind not in DETECTORS:
        raise DeployError(f'The exporter handles the detectors {", ".join(DETECTORS)}; this '
                          f'config builds a {kind}')
    _refuse_unless('neck', detector.neck, 'neck')
    _refuse_unless('rpn_head', detector.rpn_head, 'rpn_head')
    _refuse_unless('anchor_generator', detector.rpn_head.prior_generator,
                   'rpn_head.anchor_generator')
    _refuse_unless('box_coder', detector.rpn_head.bbox_coder, 'rpn_head.bbox_coder')
    _refuse_unless('rpn_nms', detector.rpn_head.test_cfg.nms.get('type', 'nms'), 'test_cfg.rpn.nms')
    roi_head = detector.roi_head
    _refuse_unless('roi_head', roi_head, 'roi_head')
    if not roi_head.with_mask:
        raise DeployError('The exporter handles detectors with a mask head (Mask R-CNN, Cascade '
                          'Mask R-CNN); this roi_head has none')
    _refuse_unless('rcnn_nms', roi_head.test_cfg.nms.get('type', 'nms'), 'test_cfg.rcnn.nms')
    if roi_head.test_cfg.nms.get('type') == 'soft_nms':
        soft_nms_arguments(roi_head.test_cfg)
    for index, head in enumerate(_stages(roi_head.bbox_head)):
        _refuse_unless('bbox_head', head, f'roi_head.bbox_head[{index}]')
        _refuse_unless('box_coder', head.bbox_coder, f'roi_head.bbox_head[{index}].bbox_coder')
        if head.custom_cls_channels or head.loss_cls.__class__.__name__ != 'CrossEntropyLoss' \
                or getattr(head.loss_cls, 'use_sigmoid', False):
            raise DeployError(f'roi_head.bbox_head[{index}] scores classes with '
                              f'{type(head.loss_cls).__name__}; the exporter handles softmax '
                              'scores (CrossEntropyLoss, use_sigmoid=False)')
    for index, head in enumerate(_stages(roi_head.mask_head)):
        _refuse_unless('mask_head', head, f'roi_head.mask_head[{index}]')
    extractors = _stages(roi_head.bbox_roi_extractor) + _stages(roi_head.mask_roi_extractor)
    for extractor in extractors:
        _refuse_unless('roi_extractor', extractor, 'roi_head roi extractor')
        for layer in extractor.roi_layers:
            _refuse_unless('roi_layer', layer, 'roi_layer')
            if getattr(layer, 'pool_mode', 'avg') != 'avg':
                raise DeployError(f"RoIAlign(pool_mode={layer.pool_mode!r}): the exporter "
                                  "handles pool_mode='avg'")


# ------------------------------------------------------------------------ the computations
# DeltaXYWHBBoxCoder.decode's default, which mmdet's RPN and box heads do not change: the
# largest log-ratio of a decoded box's size to its prior's.
WH_RATIO_CLIP = 16 / 1000


def decode_boxes(priors: torch.Tensor, deltas: torch.Tensor, coder, height: torch.Tensor,
                 width: torch.Tensor) -> torch.Tensor:
    """mmdet's ``delta2bbox`` (``DeltaXYWHBBoxCoder.decode``): (K, 4) priors and (K, 4 * c)
    deltas -> (K, 4 * c) boxes, clipped to the (h, w) image if the coder clips."""
    if coder.add_ctr_clamp:
        raise DeployError('DeltaXYWHBBoxCoder(add_ctr_clamp=True) is not handled by the exporter')
    count, classes = deltas.shape[0], deltas.shape[1] // 4
    deltas = deltas.reshape(-1, 4)
    means = deltas.new_tensor(coder.means).view(1, -1)
    stds = deltas.new_tensor(coder.stds).view(1, -1)
    denorm = deltas * stds + means
    priors = priors.repeat(1, classes).reshape(-1, 4)  # each prior once per class
    centres = (priors[:, :2] + priors[:, 2:]) * 0.5
    sizes = priors[:, 2:] - priors[:, :2]
    max_ratio = abs(math.log(WH_RATIO_CLIP))
    new_centres = centres + sizes * denorm[:, :2]
    new_sizes = sizes * denorm[:, 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    boxes = torch.cat([new_centres - new_sizes * 0.5, new_centres + new_sizes * 0.5], dim=-1)
    if coder.clip_border:
        limits = torch.stack([width, height, width, height]).to(boxes.dtype).view(1, 4)
        boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes.reshape(count, -1)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Indices kept by NMS within each group, best first: mmcv's ``batched_nms`` (boxes of
    each group moved apart by ``group * (max coordinate + 1)``), with torchvision's NMS."""
    # max over the boxes and 0: the boxes' max wherever there are boxes (clipped, >= 0),
    # and defined for none
    largest = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
    offsets = groups.to(boxes.dtype) * (largest + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


class MulticlassNMS(torch.autograd.Function):
    """NMS within each class: ``boxes`` (C, R, 4), or (R, 4) shared by the classes, and
    ``scores`` (C, R), box r of class c scored ``scores[c, r]``; those scored above
    ``score_threshold`` take part. Returns (K, 2) int64 [class, box] of the kept pairs, at most
    ``max_per_class`` of a class (unordered).

    Eagerly it is mmdet's ``multiclass_nms`` before its top ``max_per_img``: the pairs above
    the threshold, ``batched_nms`` with the classes as groups. Exported (the ``symbolic``,
    which the TorchScript exporter honours) it is one ONNX ``NonMaxSuppression`` with the
    classes as its batches, each its own R boxes (shared boxes: one batch, the classes as the
    operator's classes); the class-offset trick would make one class of C * R boxes of it,
    and the operator's time grows with the boxes of a class.
    ``max_per_class = max_per_img`` loses nothing: the best ``max_per_img`` of all classes hold
    at most that many of one. The operator's ``score_threshold`` keeps the scores above it,
    as mmdet's ``scores > score_thr`` (onnxruntime and OpenVINO, tested: the ONNX text does
    not say).
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                score_threshold: float, max_per_class: int) -> torch.Tensor:
        count = scores.shape[1]
        flat = scores.reshape(-1)
        valid = torch.nonzero(flat > score_threshold).reshape(-1)
        classes = torch.div(valid, count, rounding_mode='floor')
        candidates = boxes[valid % count] if boxes.dim() == 2 else boxes.reshape(-1, 4)[valid]
        keep = valid[batched_nms(candidates, flat[valid], classes, iou_threshold)]
        return torch.stack([torch.div(keep, count, rounding_mode='floor'), keep % count], 1)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float,
                 max_per_class: int):
        def constant(value, dtype):
            return g.op('Constant', value_t=torch.tensor(value, dtype=dtype))

        shared = boxes.type().dim() == 2
        selected = g.op('NonMaxSuppression',
                        g.op('Unsqueeze', boxes, constant([0], torch.int64)) if shared
                        else boxes,
                        g.op('Unsqueeze', scores, constant([0 if shared else 1], torch.int64)),
                        constant([max_per_class], torch.int64),
                        constant([iou_threshold], torch.float32),
                        constant([score_threshold], torch.float32))
        # (K, 3) [batch, class, box]: shared boxes, the operator's class is the class (the
        # batch 0); otherwise the batch is the class (the operator's class 0)
        return g.op('Gather', selected, constant([1, 2] if shared else [0, 2], torch.int64),
                    axis_i=1)


# mmcv's soft_nms methods (named inside its function body); and mmcv's batched_nms's
# split_thr default (candidates from which it runs the NMS class by class)
SOFT_NMS_METHODS = ('naive', 'linear', 'gaussian')
SPLIT_THR = 10000


def soft_nms_arguments(test_cfg) -> dict:
    """The R-CNN ``test_cfg``'s soft-NMS arguments, with mmcv's ``soft_nms`` defaults (read
    from its signature) filled in; refused in words where the graph would not be mmdet's
    test."""
    from mmcv.ops import soft_nms
    defaults = {name: p.default for name, p in inspect.signature(soft_nms).parameters.items()
                if p.default is not inspect.Parameter.empty}
    defaults['split_thr'] = SPLIT_THR
    given = {k: v for k, v in test_cfg.nms.items() if k != 'type'}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise DeployError(f'test_cfg.rcnn.nms (soft_nms) sets {", ".join(unknown)}; the '
                          f'exporter handles {", ".join(defaults)}')
    arguments = {**defaults, **given}
    if arguments['method'] not in SOFT_NMS_METHODS:
        raise DeployError(f"soft_nms method={arguments['method']!r}: mmcv's are "
                          f'{", ".join(SOFT_NMS_METHODS)}')
    if test_cfg.max_per_img <= 0:
        raise DeployError('test_cfg.rcnn.max_per_img <= 0 with soft_nms: the graph unrolls '
                          'max_per_img soft-NMS steps, so it needs a limit (mmdet uses 100)')
    return arguments


def multiclass_soft_nms(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
                        steps: int, iou_threshold: float, sigma: float, min_score: float,
                        method: str, offset: int,
                        split_thr: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmcv's ``soft_nms`` within each class, as mmdet's ``multiclass_nms`` runs it:
    ``boxes`` (C, R, 4) and ``scores`` (C, R) as ``MulticlassNMS`` takes them. Returns (K, 2)
    int64 [class, box] of the kept pairs, at most ``steps`` of a class (unordered), and their
    (K,) scores as soft-NMS lowered them.

    Soft-NMS picks the best remaining box, lowers the others' scores by their overlap with it
    (``method``), drops those fallen below ``min_score`` and repeats. A class's picks come in
    non-increasing score, so the first ``steps = max_per_img`` picks of every class hold the
    best ``max_per_img`` of all. ONNX has no soft-NMS: these steps, one Python loop for all
    classes at once, trace to a fixed graph. The boxes are moved apart by class as mmcv's
    ``batched_nms`` moves them (its one soft-NMS over all classes), so the overlaps are mmcv's
    to the bit; boxes of equal score may be picked in another order. Candidates below
    ``min_score`` (where ``score_thr`` is lower) are dropped before the first pick, as mmcv
    drops them, but the one it picks first: the best of all, or of each class from
    ``split_thr`` candidates on (``batched_nms`` then runs soft-NMS class by class)."""
    classes = scores.shape[0]
    # one more box, never a candidate: every step has a box to look at, also without rois
    boxes = torch.cat([boxes, boxes.new_zeros(classes, 1, 4)], 1)
    candidate = torch.cat([scores > score_threshold,
                           torch.zeros_like(scores[:, :1], dtype=torch.bool)], 1)
    scores = torch.cat([scores, scores.new_zeros(classes, 1)], 1)
    # the candidates' largest coordinate (and 0: defined without candidates), as batched_nms
    largest = torch.where(candidate[..., None], boxes, torch.zeros_like(boxes)).max()
    moved = boxes + (torch.arange(classes).to(boxes.dtype) * (largest + 1))[:, None, None]
    x1, y1, x2, y2 = moved.unbind(-1)  # each (C, R + 1)
    areas = (x2 - x1 + offset) * (y2 - y1 + offset)
    columns = torch.arange(scores.shape[1])[None, :]
    masked = torch.where(candidate, scores, torch.full_like(scores, float('-inf')))
    first_of_class = columns == masked.argmax(1, keepdim=True)
    first_of_all = (torch.arange(masked.numel()) == masked.reshape(-1).argmax()).reshape(
        masked.shape)
    split = candidate.sum() >= split_thr  # (onnxruntime has no Where of booleans)
    first = (split & first_of_class) | (~split & first_of_all)
    alive = candidate & ((scores >= min_score) | first)
    picks, picked_scores, picked = [], [], []
    for _ in range(steps):
        best_score, best = torch.where(alive, scores, float('-inf')).max(dim=1)
        pick = best[:, None]
        picks.append(best)
        picked_scores.append(best_score)
        # the pick is alive wherever a box of its class is (not best_score > -inf: OpenVINO
        # turns the -inf into the lowest float)
        picked.append(alive.gather(1, pick)[:, 0])
        width = (torch.minimum(x2, x2.gather(1, pick)) - torch.maximum(x1, x1.gather(1, pick))
                 + offset).clamp(min=0)
        height = (torch.minimum(y2, y2.gather(1, pick)) - torch.maximum(y1, y1.gather(1, pick))
                  + offset).clamp(min=0)
        inter = width * height
        overlap = inter / (areas.gather(1, pick) + areas - inter)
        if method == 'gaussian':
            weight = torch.exp(-(overlap * overlap) / sigma)
        else:
            lowered = 1 - overlap if method == 'linear' else torch.zeros_like(overlap)
            weight = torch.where(overlap >= iou_threshold, lowered, torch.ones_like(overlap))
        scores = scores * weight
        alive = alive & (columns != pick) & ~(scores < min_score)
    kept = torch.nonzero(torch.stack(picked, 1))  # (K, 2) [class, step]
    step_of = (kept[:, 0], kept[:, 1])
    pairs = torch.stack([kept[:, 0], torch.stack(picks, 1)[step_of]], 1)
    return pairs, torch.stack(picked_scores, 1)[step_of]


def _roi_layer_args(layer) -> dict:
    """torchvision ``roi_align`` arguments of an mmcv ``RoIAlign`` layer."""
    return dict(output_size=tuple(layer.output_size), spatial_scale=float(layer.spatial_scale),
                sampling_ratio=int(layer.sampling_ratio), aligned=bool(layer.aligned))


def extract_roi_features(extractor, features: Sequence[torch.Tensor],
                         rois: torch.Tensor) -> torch.Tensor:
    """mmdet's ``SingleRoIExtractor``: each RoI pooled from the level of its scale
    (``floor(log2(sqrt(area) / finest_scale + 1e-6))``, clamped to the levels)."""
    levels = len(extractor.roi_layers)
    layers = [_roi_layer_args(layer) for layer in extractor.roi_layers]
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    target = torch.floor(torch.log2(scale / extractor.finest_scale + 1e-6))
    target = target.clamp(min=0, max=levels - 1).long()
    size = layers[0]['output_size']
    pooled = rois.new_zeros((rois.shape[0], extractor.out_channels, *size))
    for level in range(levels):
        index = torch.nonzero(target == level).reshape(-1)
        level_rois = rois[index]
        pooled = pooled.index_put((index, ), roi_align(features[level], level_rois,
                                                        **layers[level]))
    return pooled


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, height: torch.Tensor,
                width: torch.Tensor) -> torch.Tensor:
    """(N, M, M) mask probabilities pasted into (N, h, w) images at their boxes, as mmdet's
    ``_do_paste_mask`` samples them (``grid_sample``, bilinear, ``align_corners=False``,
    zeros outside).

    NOTE: the sampling grid is separable (x depends on the column only, y on the row), so
    bilinear sampling is two matrix products with the weights ``max(0, 1 - |position - k|)``
    of each mask pixel k: the same values, without an (N, h, w, 2) grid."""
    size = masks.shape[-1]

    def weights(length: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        centres = torch.arange(length).to(masks.dtype) + 0.5
        grid = (centres[None, :] - start) / (end - start) * 2 - 1  # (N, length) in [-1, 1]
        # mmdet: inf (zero-sized box) -> 0
        grid = torch.where(torch.isinf(grid), torch.zeros_like(grid), grid)
        position = ((grid + 1) * size - 1) / 2  # grid_sample's unnormalised, align_corners=False
        pixels = torch.arange(size).to(masks.dtype)
        return (1 - (position[:, :, None] - pixels[None, None, :]).abs()).clamp(min=0)

    x0, y0, x1, y1 = boxes.split(1, dim=1)  # each (N, 1)
    rows = weights(height, y0, y1)  # (N, h, M)
    columns = weights(width, x0, x1)  # (N, w, M)
    return torch.matmul(torch.matmul(rows, masks), columns.transpose(1, 2))


# ------------------------------------------------------------------------------ the module
class DetectorForExport(nn.Module):
    """The whole test-time computation of a Mask R-CNN or Cascade Mask R-CNN on one image.

    Args:
        detector (nn.Module): The built, loaded detector (eval mode); copied, not changed.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_detector(detector)
        detector = copy.deepcopy(detector).eval()
        self.detector = detector
        preprocessor = detector.data_preprocessor
        self.image_input = ImageInput(preprocessor)
        self.pad_size_divisor = int(preprocessor.pad_size_divisor)
        self.pad_value = float(preprocessor.pad_value)
        self.cascade = type(detector.roi_head).__name__ == 'CascadeRoIHead'
        self.proposals_per_image = int(detector.rpn_head.test_cfg.max_per_img)

    # ---------------------------------------------------------------------------- stages
    def _preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = self.image_input(image)
        if self.pad_size_divisor > 1:  # after normalisation, as mmengine's stack_batch
            divisor = self.pad_size_divisor
            height, width = x.shape[-2], x.shape[-1]
            pad_h = (height + divisor - 1) // divisor * divisor - height
            pad_w = (width + divisor - 1) // divisor * divisor - width
            x = F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_value)
        return x

    def _proposals(self, features: List[torch.Tensor], height: torch.Tensor,
                   width: torch.Tensor) -> torch.Tensor:
        """RPNHead.predict_by_feat for one image: (P, 4) proposals, best first."""
        head = self.detector.rpn_head
        cfg = head.test_cfg
        cls_scores, bbox_preds = head(features)
        priors = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores],
                                                  dtype=cls_scores[0].dtype,
                                                  device=cls_scores[0].device)
        nms_pre = cfg.get('nms_pre', -1)
        scores, deltas, anchors, levels = [], [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
            level_deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
            logits = cls_score[0].permute(1, 2, 0).reshape(-1, head.cls_out_channels)
            level_scores = (logits.sigmoid() if head.use_sigmoid_cls
                            else logits.softmax(-1)[:, :-1]).reshape(-1)
            level_anchors = priors[level]
            if nms_pre > 0:  # the best nms_pre of the level (all where there are fewer)
                count = torch.clamp(torch.as_tensor(level_scores.shape[0]), max=nms_pre)
                level_scores, order = level_scores.topk(count)
                level_deltas, level_anchors = level_deltas[order], level_anchors[order]
            scores.append(level_scores)
            deltas.append(level_deltas)
            anchors.append(level_anchors)
            levels.append(torch.full_like(level_scores, level, dtype=torch.long))
        scores, levels = torch.cat(scores), torch.cat(levels)
        boxes = decode_boxes(torch.cat(anchors), torch.cat(deltas), head.bbox_coder, height,
                             width)
        if cfg.get('min_bbox_size', -1) >= 0:
            sizes = boxes[:, 2:] - boxes[:, :2]
            valid = torch.nonzero((sizes[:, 0] > cfg.min_bbox_size) &
                                  (sizes[:, 1] > cfg.min_bbox_size)).reshape(-1)
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        keep = batched_nms(boxes, scores, levels, float(cfg.nms.iou_threshold))
        return boxes[keep[:cfg.max_per_img]]

    def _box_stage(self, stage: int, features: List[torch.Tensor],
                   rois: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        roi_head = self.detector.roi_head
        extractor = roi_head.bbox_roi_extractor
        head = roi_head.bbox_head
        if self.cascade:
            extractor, head = extractor[stage], head[stage]
        pooled = extract_roi_features(extractor, features[:extractor.num_inputs], rois)
        return head(pooled)

    def _boxes(self, features: List[torch.Tensor], proposals: torch.Tensor,
               height: torch.Tensor, width: torch.Tensor):
        """The box head(s) and multiclass NMS: (D, 4) boxes on the resized image, scores,
        labels, best first."""
        roi_head = self.detector.roi_head
        rois = torch.cat([proposals.new_zeros(proposals.shape[0], 1), proposals], dim=1)
        if not self.cascade:
            cls_score, bbox_pred = self._box_stage(0, features, rois)
            head = roi_head.bbox_head
        else:  # CascadeRoIHead._refine_roi: refine the rois stage by stage, average logits
            logits = []
            for stage in range(roi_head.num_stages):
                cls_score, bbox_pred = self._box_stage(stage, features, rois)
                logits.append(cls_score)
                if stage < roi_head.num_stages - 1:
                    head = roi_head.bbox_head[stage]
                    label = cls_score[:, :-1].argmax(dim=1)
                    if not head.reg_class_agnostic:  # the deltas of the label's class
                        index = (label * 4)[:, None] + torch.arange(4)[None, :]
                        bbox_pred = torch.gather(bbox_pred, 1, index)
                    refined = decode_boxes(rois[:, 1:], bbox_pred, head.bbox_coder, height,
                                           width)
                    rois = torch.cat([rois[:, :1], refined], dim=1)
            cls_score = sum(logits) / float(len(logits))
            head = roi_head.bbox_head[-1]
        cfg = roi_head.test_cfg
        scores = F.softmax(cls_score, dim=-1)
        boxes = decode_boxes(rois[:, 1:], bbox_pred, head.bbox_coder, height, width)
        classes = head.num_classes
        boxes = boxes.reshape(boxes.shape[0], -1, 4)
        if boxes.shape[1] == 1:  # class-agnostic regression: one box for every class
            boxes = boxes.expand(boxes.shape[0], classes, 4)
        # mmdet's multiclass_nms: every (roi, class) pair above score_thr, NMS per class,
        # the best max_per_img of all classes
        boxes = boxes.transpose(0, 1)  # (classes, rois, 4)
        scores = scores[:, :-1].t()  # (classes, rois)
        # at most all the rois of a class where max_per_img sets no limit
        per_class = cfg.max_per_img if cfg.max_per_img > 0 else self.proposals_per_image
        if cfg.nms.get('type') == 'soft_nms':  # the kept pairs' scores as soft-NMS lowered them
            pairs, kept = multiclass_soft_nms(boxes, scores, float(cfg.score_thr),
                                              int(cfg.max_per_img), **soft_nms_arguments(cfg))
        else:
            pairs = MulticlassNMS.apply(boxes, scores, float(cfg.nms.iou_threshold),
                                        float(cfg.score_thr), int(per_class))
            kept = scores[pairs[:, 0], pairs[:, 1]]
        labels, index = pairs[:, 0], pairs[:, 1]
        boxes, scores = boxes[labels, index], kept
        count = torch.as_tensor(scores.shape[0])
        if cfg.max_per_img > 0:
            count = torch.clamp(count, max=cfg.max_per_img)
        scores, order = scores.topk(count)  # best first, as batched_nms orders them
        return boxes[order], scores, labels[order]

    def _mask_probabilities(self, features: List[torch.Tensor], boxes: torch.Tensor,
                            labels: torch.Tensor) -> torch.Tensor:
        """(D, M, M) probabilities of each detection's class: the mask head(s) on the boxes
        (Cascade: the stages' sigmoids averaged, as merge_aug_masks)."""
        roi_head = self.detector.roi_head
        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
        stages = roi_head.num_stages if self.cascade else 1
        probabilities = []
        for stage in range(stages):
            extractor, head = roi_head.mask_roi_extractor, roi_head.mask_head
            if self.cascade:
                extractor, head = extractor[stage], head[stage]
            pooled = extract_roi_features(extractor, features[:extractor.num_inputs], rois)
            logits = head(pooled)
            probabilities.append(logits.sigmoid())
        masks = probabilities[0] if stages == 1 else torch.stack(probabilities).mean(dim=0)
        last = roi_head.mask_head[-1] if self.cascade else roi_head.mask_head
        if last.class_agnostic:
            return masks[:, 0]
        return masks[torch.arange(masks.shape[0]), labels]

    def forward(self, image: torch.Tensor, scale_factor: torch.Tensor,
                original_size: torch.Tensor):
        height, width = image.shape[1], image.shape[2]
        height, width = torch.as_tensor(height), torch.as_tensor(width)
        features = list(self.detector.extract_feat(self._preprocess(image)))
        proposals = self._proposals(features, height, width)
        boxes, scores, labels = self._boxes(features, proposals, height, width)
        probabilities = self._mask_probabilities(features, boxes, labels)
        # FCNMaskHead.predict_by_feat with rescale: boxes to the original image, masks there
        boxes = boxes / scale_factor.to(boxes.dtype).repeat(2)[None, :]
        masks = paste_masks(probabilities, boxes, original_size[0], original_size[1])
        threshold = float(self.detector.roi_head.test_cfg.mask_thr_binary)
        return boxes, scores, labels, masks >= threshold

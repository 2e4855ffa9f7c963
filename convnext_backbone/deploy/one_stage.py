"""A one-stage detector (mmdet's RTMDet) as one traceable module for ONNX export, post-processing
included: boxes, scores and labels on the original image.

In the graph, as mmdet's test step computes them:
- the test pipeline's ``Pad`` (bottom and right, to its fixed size or a multiple of its
  divisor, with its value, before normalisation), then the data preprocessor's BGR -> RGB,
  mean / std and padding to its size divisor;
- backbone, neck, the head's class logits (sigmoid) and box distances at every point of every
  level;
- per level, every (point, class) pair scoring above ``score_thr`` and of those the best
  ``nms_pre`` (``filter_scores_and_topk``), kept as a (classes, points) score matrix;
- the distances decoded into boxes around their points (``DistancePointBBoxCoder``), clipped
  to the padded image (the ``img_shape`` that mmdet's ``Pad`` leaves);
- the boxes scaled back by the resize's factors (``rescale``), the ``min_bbox_size`` filter,
  per-class NMS (``deploy.detector.MulticlassNMS``: mmcv's ``batched_nms`` of the candidates
  eagerly, one ONNX ``NonMaxSuppression`` of the points' boxes with the classes as its
  classes in the file) and the best ``max_per_img``.

Inputs: ``image`` (1, H, W, 3) uint8 BGR after the test resize, ``scale_factor`` (2,) float32
(w, h) of that resize. Outputs: ``boxes`` (N, 4) float32 x1 y1 x2 y2, ``scores`` (N,) and
``labels`` (N,) int64, on the original image, best first.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeployError
from .detector import MulticlassNMS
from .inputs import ImageInput

# What the exporter handles (mmdet's class names).
DETECTORS = ('RTMDet', )
HEADS = ('RTMDetSepBNHead', 'RTMDetHead')
BOX_CODERS = ('DistancePointBBoxCoder', )
PRIOR_GENERATORS = ('MlvlPointGenerator', )


def check_one_stage_detector(detector: nn.Module) -> None:
    """Refuse, naming the part and what is handled, a detector this module does not
    reproduce."""
    kind = type(detector).__name__
    if kind not in DETECTORS:
        raise DeployError(f'The one-stage exporter handles {", ".join(DETECTORS)}; this config '
                          f'builds a {kind}')
    head = detector.bbox_head
    for part, value, handled in (
            ('bbox_head', head, HEADS),
            ('bbox_head.bbox_coder', head.bbox_coder, BOX_CODERS),
            ('bbox_head.prior_generator', head.prior_generator, PRIOR_GENERATORS)):
        if type(value).__name__ not in handled:
            raise DeployError(f"The exporter handles {part} of the types {', '.join(handled)}; "
                              f"this config's is a {type(value).__name__}")
    if getattr(head, 'with_objectness', False) or not head.use_sigmoid_cls:
        raise DeployError('The exporter handles RTMDet heads with sigmoid class scores and '
                          'without objectness (with_objectness=False), as the RTMDet configs')
    cfg = head.test_cfg
    if cfg.get('nms_pre', -1) <= 0:
        raise DeployError(f'model.test_cfg.nms_pre={cfg.get("nms_pre", -1)}: the exporter '
                          'keeps the best nms_pre (point, class) pairs per level; give a '
                          'positive number (RTMDet: 30000)')
    if cfg.nms.get('type', 'nms') != 'nms':
        raise DeployError(f"model.test_cfg.nms.type={cfg.nms.get('type')!r}: the exporter "
                          "handles 'nms'")


def pad_settings(step: Optional[dict]) -> Optional[dict]:
    """A test pipeline's mmdet ``Pad`` step as the graph reproduces it: ``size`` (h, w) or
    ``size_divisor``, and the image's ``value`` per channel; None for no step. Refuses what
    it does not reproduce, naming it."""
    if step is None:
        return None
    if step.get('pad_to_square') or step.get('padding_mode', 'constant') != 'constant':
        raise DeployError('The exporter reproduces a Pad with a constant value to a size or a '
                          f'size divisor; the test pipeline has {dict(step)}')
    size, divisor = step.get('size'), step.get('size_divisor')
    if (size is None) == (divisor is None):
        raise DeployError(f'The test pipeline\'s Pad needs one of size and size_divisor; it has '
                          f'{dict(step)}')
    value = step.get('pad_val', 0)
    value = value.get('img', 0) if isinstance(value, dict) else value
    value = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 3
    return dict(size=None if size is None else [int(size[1]), int(size[0])],  # (w, h) -> (h, w)
                size_divisor=None if divisor is None else int(divisor), value=value)


def pad_bottom_right(x: torch.Tensor, height: 'int | torch.Tensor', width: 'int | torch.Tensor',
                     value: float = 0.0) -> torch.Tensor:
    """(..., h, w) padded with ``value`` to (..., height, width) at the bottom and right (sizes
    read from a traced tensor stay symbolic)."""
    pad_h = height - x.shape[-2]
    pad_w = width - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h), value=value)


def up_to_multiple(size: 'int | torch.Tensor', divisor: int) -> 'int | torch.Tensor':
    """The smallest multiple of ``divisor`` that is at least ``size``."""
    return (size + divisor - 1) // divisor * divisor


def decode_distances(points: torch.Tensor, distances: torch.Tensor, height: torch.Tensor,
                     width: torch.Tensor, clip: bool) -> torch.Tensor:
    """mmdet's ``distance2bbox`` (``DistancePointBBoxCoder.decode``): (K, 2) points and (K, 4)
    distances to the left, top, right and bottom -> (K, 4) boxes, clipped to (h, w) if
    ``clip``."""
    boxes = torch.cat([points - distances[:, :2], points + distances[:, 2:]], dim=1)
    if clip:
        limits = torch.stack([width, height, width, height]).to(boxes.dtype).view(1, 4)
        boxes = torch.minimum(boxes.clamp(min=0), limits)
    return boxes


class OneStageDetectorForExport(nn.Module):
    """The whole test-time computation of an RTMDet on one image.

    Args:
        detector (nn.Module): The built, loaded detector (eval mode); copied, not changed.
        pad (dict, optional): The test pipeline's ``Pad`` as ``pad_settings`` returns it.
    """

    def __init__(self, detector: nn.Module, pad: Optional[dict] = None) -> None:
        super().__init__()
        check_one_stage_detector(detector)
        detector = copy.deepcopy(detector).eval()
        self.detector = detector
        preprocessor = detector.data_preprocessor
        self.image_input = ImageInput(preprocessor)
        self.pad_size_divisor = int(preprocessor.pad_size_divisor)
        self.pad_value = float(preprocessor.pad_value)
        self.pad = pad
        if pad is not None:
            self.register_buffer('pipeline_pad_value',
                                 torch.tensor(pad['value'], dtype=torch.float32).view(1, 1, 1, -1))

    def _preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        if self.pad is not None:  # the pipeline's Pad, on the (1, H, W, 3) BGR pixels
            height, width = x.shape[1], x.shape[2]
            if self.pad['size'] is not None:
                height, width = self.pad['size']
            else:
                height = up_to_multiple(height, self.pad['size_divisor'])
                width = up_to_multiple(width, self.pad['size_divisor'])
            # zeros around the image shifted by the value: the value there, the pixels inside
            shifted = (x - self.pipeline_pad_value).permute(0, 3, 1, 2)
            x = (pad_bottom_right(shifted, height, width).permute(0, 2, 3, 1)
                 + self.pipeline_pad_value)
        x = self.image_input(x)
        if self.pad_size_divisor > 1:  # after normalisation, as mmengine's stack_batch
            x = pad_bottom_right(x, up_to_multiple(x.shape[-2], self.pad_size_divisor),
                                 up_to_multiple(x.shape[-1], self.pad_size_divisor),
                                 self.pad_value)
        return x

    def _candidate_scores(self, cls_scores: Sequence[torch.Tensor]) -> torch.Tensor:
        """(C, P) scores of every class at every point of the levels (concatenated), but -inf
        where the pair is not a candidate: per level the best ``nms_pre`` (point, class) pairs
        above ``score_thr`` (``filter_scores_and_topk``). Dense, so that NMS takes the points'
        boxes once for all classes."""
        cfg = self.detector.bbox_head.test_cfg
        dense = []
        for cls_score in cls_scores:
            level = cls_score[0].permute(1, 2, 0)  # (h, w, C): point-major pairs
            flat = level.reshape(-1).sigmoid()
            valid = torch.nonzero(flat > cfg.get('score_thr', 0)).reshape(-1)
            count = torch.clamp(torch.as_tensor(valid.shape[0]), max=cfg.nms_pre)
            top, order = flat[valid].topk(count)
            kept = torch.full_like(flat, float('-inf')).scatter(0, valid[order], top)
            dense.append(kept.reshape(-1, level.shape[-1]))
        return torch.cat(dense).t()

    def forward(self, image: torch.Tensor, scale_factor: torch.Tensor):
        x = self._preprocess(image)
        height, width = torch.as_tensor(x.shape[-2]), torch.as_tensor(x.shape[-1])
        head = self.detector.bbox_head
        cfg = head.test_cfg
        cls_scores, bbox_preds = head(self.detector.extract_feat(x))
        points = head.prior_generator.grid_priors([s.shape[-2:] for s in cls_scores],
                                                  dtype=cls_scores[0].dtype,
                                                  device=cls_scores[0].device)
        scores = self._candidate_scores(cls_scores)  # (C, P)
        distances = torch.cat([p[0].permute(1, 2, 0).reshape(-1, 4) for p in bbox_preds])
        # every point's box (mmdet decodes the candidates' only: the same boxes)
        boxes = decode_distances(torch.cat(points), distances, height, width,
                                 bool(getattr(head.bbox_coder, 'clip_border', True)))
        # rescale, as mmdet's scale_boxes: times the reciprocals of the factors
        boxes = boxes * (1 / scale_factor.to(boxes.dtype)).repeat(2)[None, :]
        if cfg.get('min_bbox_size', -1) >= 0:
            sizes = boxes[:, 2:] - boxes[:, :2]
            large = (sizes[:, 0] > cfg.min_bbox_size) & (sizes[:, 1] > cfg.min_bbox_size)
            scores = torch.where(large[None, :], scores, torch.full_like(scores, float('-inf')))
        # NMS within each class (mmdet: batched_nms of the candidates), then the best
        # max_per_img (at most all candidates where it sets no limit)
        per_class = cfg.max_per_img if cfg.max_per_img > 0 else len(cls_scores) * cfg.nms_pre
        pairs = MulticlassNMS.apply(boxes, scores, float(cfg.nms.iou_threshold),
                                    float(cfg.get('score_thr', 0)), int(per_class))
        labels, index = pairs[:, 0], pairs[:, 1]
        boxes, scores = boxes[index], scores[labels, index]
        count = torch.as_tensor(scores.shape[0])
        if cfg.max_per_img > 0:
            count = torch.clamp(count, max=cfg.max_per_img)
        scores, order = scores.topk(count)  # best first, as batched_nms orders them
        return boxes[order], scores, labels[order]

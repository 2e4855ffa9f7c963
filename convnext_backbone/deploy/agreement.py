"""How far two runs of a model agree on one image (numpy only): detections matched one to one,
label maps pixel by pixel. For comparing runtimes and precisions (fp32 / bf16 / INT8) in the
tests, ``tools/benchmark_deploy.py`` and docs/deploy.md's figures."""
from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` (N, 4) with each of ``b`` (M, 4), x1 y1 x2 y2."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-12)


def matched_detections(reference, other, min_iou: float = 0.5) -> int:
    """How many of ``reference``'s detections have one of ``other``'s of the same label and
    box IoU >= ``min_iou``, each taken once (reference best first, its best free match).
    Both have ``boxes``, ``labels`` (``runtime.DetectionResult``)."""
    if not len(reference.boxes) or not len(other.boxes):
        return 0
    ious = box_iou(np.asarray(reference.boxes), np.asarray(other.boxes))
    ious[np.asarray(reference.labels)[:, None] != np.asarray(other.labels)[None, :]] = 0
    free = np.ones(len(other.boxes), bool)
    matched = 0
    for row in ious:
        candidates = np.where(free & (row >= min_iou), row, -1)
        best = int(candidates.argmax())
        if candidates[best] >= 0:
            free[best] = False
            matched += 1
    return matched


def detection_agreement(reference, other, min_iou: float = 0.5) -> float:
    """Detections matched one to one (``matched_detections``) over the larger of the two
    counts: 1.0 when both find the same objects, also when both find none."""
    count = max(len(reference.boxes), len(other.boxes))
    return 1.0 if not count else matched_detections(reference, other, min_iou) / count


def label_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """The share of pixels with the same label in two label maps of one size."""
    if reference.shape != other.shape:
        raise ValueError(f'Label maps of sizes {reference.shape} and {other.shape}')
    return float((reference == other).mean())

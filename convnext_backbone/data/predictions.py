"""Predictions written as data, as MMDetection's and MMSegmentation's inferencers write them
with ``pred_out_dir``: for detection one JSON per image (``labels``, class names, ``scores``,
``bboxes`` as x1, y1, x2, y2 in the original image's pixels, ``masks`` as COCO RLE), for
segmentation the label map as a PNG of class indices (8-bit, 16-bit beyond 256 classes).

Reads the data samples that mmdet's / mmseg's models and ``deploy.evaluate``'s
``OnnxInferencer`` return alike (``pred_instances``, ``pred_sem_seg``); needs pycocotools for
masks and OpenCV for the PNG.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Optional, Sequence

import numpy as np


def detection_record(sample, classes: Optional[Sequence[str]] = None) -> dict:
    """The ``pred_instances`` of a DetDataSample as plain data (every prediction, no score
    threshold, as DetInferencer writes them)."""
    instances = sample.pred_instances
    labels = instances.labels.tolist()
    record = dict(labels=labels, scores=[round(float(s), 6) for s in instances.scores],
                  bboxes=[[round(float(v), 3) for v in box] for box in instances.bboxes])
    if classes:
        record['label_names'] = [classes[label] for label in labels]
    if 'masks' in instances:
        from pycocotools import mask as mask_util
        record['masks'] = []
        for mask in instances.masks:
            rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
            record['masks'].append(dict(size=rle['size'], counts=rle['counts'].decode()))
    return record


def write_prediction(sample, image_path: str, out_dir: str,
                     classes: Optional[Sequence[str]] = None) -> str:
    """Write the prediction for ``image_path`` into ``out_dir`` as ``<image name>.json``
    (detection) or ``<image name>.png`` (segmentation); returns the path."""
    import cv2
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.join(out_dir, osp.splitext(osp.basename(image_path))[0])
    if 'pred_sem_seg' in sample:
        labels = np.asarray(sample.pred_sem_seg.data[0].cpu())
        path = stem + '.png'
        cv2.imwrite(path, labels.astype(np.uint8 if labels.max() < 256 else np.uint16))
        return path
    path = stem + '.json'
    with open(path, 'w') as f:
        json.dump(detection_record(sample, classes), f)
    return path

"""Pictures of the data: training samples as the model sees them with their ground truth, and
ground truth beside a prediction, drawn with mmdet's / mmseg's own visualizers.

Needs mmdet or mmseg (the config's stack); the caller sets the default scope.
"""
from __future__ import annotations

import copy
import os.path as osp
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config

from .configure import innermost_dataset


def build_visualizer(cfg: Config, dataset_meta: dict):
    """The config's visualizer (DetLocalVisualizer / SegLocalVisualizer), without backends,
    with the dataset's classes and palette."""
    from mmengine.registry import VISUALIZERS
    visualizer_cfg = dict(cfg.visualizer, vis_backends=None,
                          name=f'convnext_backbone_{time.monotonic_ns()}')  # names are unique
    visualizer = VISUALIZERS.build(visualizer_cfg)
    visualizer.dataset_meta = {k: v for k, v in dataset_meta.items()
                               if k in ('classes', 'palette')}
    return visualizer


def draw_sample(visualizer, image_rgb: np.ndarray, data_sample, draw_gt: bool = True,
                draw_pred: bool = False, **kwargs) -> np.ndarray:
    """The image with the sample's ground truth, or prediction, or both side by side (ground
    truth on the left) drawn; RGB.

    NOTE: mmdet's visualizer jitters mask colours with numpy's global generator; it is seeded
    here so that the same sample gives the same picture."""
    if draw_gt and draw_pred:  # mmseg's visualizer keeps only the last panel: draw each
        return np.concatenate([draw_sample(visualizer, image_rgb, data_sample, True, False,
                                           **kwargs),
                               draw_sample(visualizer, image_rgb, data_sample, False, True,
                                           **kwargs)], axis=1)
    np.random.seed(0)
    instances = data_sample.get('gt_instances') if hasattr(data_sample, 'get') else None
    if instances is not None:  # as mmdet's browse_dataset: box objects and masks as arrays
        if hasattr(instances.get('bboxes'), 'tensor'):
            instances.bboxes = instances.bboxes.tensor
        if hasattr(instances.get('masks'), 'to_ndarray'):
            instances.masks = instances.masks.to_ndarray().astype(bool)
    visualizer.add_datasample('sample', image_rgb, data_sample, draw_gt=draw_gt,
                              draw_pred=draw_pred, show=False, **kwargs)
    return visualizer.get_image()


def training_samples(cfg: Config, count: int, phase: str = 'train',
                     seed: int = 0) -> Tuple[List[Tuple[str, np.ndarray, object]], dict]:
    """``count`` samples of a phase's dataset after its pipeline (random picks, random
    augmentation, both from ``seed``): (image path, RGB image as the model gets it, data sample
    with the ground truth), and the dataset's metainfo."""
    import random

    import torch
    from mmengine.registry import DATASETS
    dataset = DATASETS.build(copy.deepcopy(cfg[f'{phase}_dataloader']['dataset']))
    rng = random.Random(seed)
    indices = rng.sample(range(len(dataset)), min(count, len(dataset)))
    samples = []
    for index in indices:
        # the pipeline's random transforms draw from these generators
        random.seed(seed + index)
        np.random.seed(seed + index)
        torch.manual_seed(seed + index)
        item = dataset[index]
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # CHW BGR -> HWC RGB
        samples.append((dataset.get_data_info(index).get('img_path', str(index)),
                        np.ascontiguousarray(image), item['data_samples']))
    return samples, dataset.metainfo


def ground_truth_of(cfg: Config, image_path: str, phase: str = 'test') -> Optional[object]:
    """The ground truth of an image of the config's ``phase`` dataset, in the image's own
    size (the dataset's annotation loading without resizing); None when the dataset does not
    hold the image."""
    from mmengine.registry import DATASETS
    dataset_cfg = copy.deepcopy(cfg[f'{phase}_dataloader']['dataset'])
    inner = innermost_dataset(dataset_cfg)
    pipeline = inner.get('pipeline') or []
    load_annotations = [t for t in pipeline if t.get('type') == 'LoadAnnotations']
    pack = [t for t in pipeline if str(t.get('type', '')).startswith('Pack')]
    inner['pipeline'] = [dict(type='LoadImageFromFile'), *load_annotations[:1], *pack[-1:]]
    inner['lazy_init'] = True
    dataset = DATASETS.build(dataset_cfg)
    dataset.full_init()
    wanted = osp.abspath(image_path)
    for index in range(len(dataset)):
        if osp.abspath(dataset.get_data_info(index)['img_path']) == wanted:
            return dataset[index]['data_samples']
    return None


def grid(images: Sequence[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Images (RGB, any sizes) tiled row by row on a white background."""
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    canvas = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255,
                     np.uint8)
    for n, image in enumerate(images):
        r, c = divmod(n, columns)
        y, x = r * (height + gap), c * (width + gap)
        canvas[y:y + image.shape[0], x:x + image.shape[1]] = image[..., :3]
    return canvas

"""Fitting a config to a dataset found by ``layouts.find_layout``: the classes go everywhere
they belong (every dataset's metainfo, every class-dependent head's ``num_classes``, the COCO
evaluators' annotation files), so that one slip cannot leave them out of step."""
from __future__ import annotations

import colorsys
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config, ConfigDict

from .layouts import DataLayout

PHASES = ('train', 'val', 'test')


def innermost_dataset(dataset: dict) -> dict:
    """The dataset inside wrappers (``RepeatDataset``, ``ClassBalancedDataset``...)."""
    while isinstance(dataset.get('dataset'), dict):
        dataset = dataset['dataset']
    return dataset


def class_heads(model: dict, path: str = '') -> Iterator[Tuple[str, dict]]:
    """(path, config) of every part of a model config that has ``num_classes``: the bbox and
    mask heads of (Cascade) Mask R-CNN, the ``bbox_head`` of DINO (whose denoising queries
    take its number) and of RTMDet, the decode and auxiliary heads of the segmentors
    (UPerNet, DeepLabV3+, Mask2Former). The RPN (class-agnostic) is left out."""
    if isinstance(model, dict):
        if 'num_classes' in model and not path.startswith('rpn_head'):
            yield path, model
        for key, value in model.items():
            yield from class_heads(value, f'{path}.{key}' if path else key)
    elif isinstance(model, (list, tuple)):
        for i, value in enumerate(model):
            yield from class_heads(value, f'{path}.{i}')


def palette_for(num_classes: int) -> List[Tuple[int, int, int]]:
    """Distinct colours, the same for the same number of classes (golden-ratio hues)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1, 0.75, 0.95))
            for i in range(num_classes)]


def fit_config_to_data(cfg: Config, layout: DataLayout) -> List[str]:
    """Point the config's datasets at ``layout`` and set its classes everywhere. Returns what
    was changed, in words (the tools log it; the work dir's copy of the config shows it)."""
    changed = []
    for phase in PHASES:
        loader = cfg.get(f'{phase}_dataloader')
        if not loader:
            continue
        split_name = phase if phase in layout.splits else 'val'
        split = layout.splits[split_name]
        dataset = innermost_dataset(loader['dataset'])
        dataset['data_root'] = layout.root
        if layout.kind == 'coco':
            dataset.update(ann_file=split.ann_file, data_prefix=dict(img=_folder(split.img_dir)))
        else:
            dataset['data_prefix'] = dict(img_path=split.img_dir, seg_map_path=split.seg_dir)
        if layout.kind == 'masks':
            dataset.update(type='BaseSegDataset', img_suffix=split.img_suffix,
                           seg_map_suffix='.png', reduce_zero_label=False)
            _follow_dataset_zero_label(dataset.get('pipeline'))
        if layout.classes:
            dataset['metainfo'] = dict(classes=layout.classes,
                                       palette=palette_for(len(layout.classes)))
        changed.append(f'{phase} dataset: {split_name} split')
        evaluator = cfg.get(f'{phase}_evaluator')
        for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
            if isinstance(metric, dict) and 'ann_file' in metric and layout.kind == 'coco':
                metric['ann_file'] = osp.join(layout.root, split.ann_file)
                changed.append(f'{phase}_evaluator.ann_file')
    if layout.kind == 'masks':
        _follow_dataset_zero_label(cfg.get('tta_pipeline'))
    if layout.classes:
        for path, head in class_heads(cfg.model):
            old = head['num_classes']
            head['num_classes'] = len(layout.classes)
            changed.append(f'model.{path}.num_classes')
            changed += _fit_class_weights(head, path, old, len(layout.classes))
    return changed


def _fit_class_weights(head: dict, path: str, old: int, new: int) -> List[str]:
    """Resize the per-class ``class_weight`` lists of a head's losses to ``new`` classes.
    Mask2Former's ``loss_cls`` weighs ``num_classes`` classes and then the "no object" slot
    (``[1.0] * 150 + [0.1]`` for ADE20K): a list left at the old length makes the loss fail at
    the first step. Per-class weights of other classes mean nothing for the folder's classes,
    so they become one value (the config's, where all were equal, else 1.0); a trailing
    no-object weight is kept."""
    changed = []
    for key, losses in head.items():
        # (mmseg's loss_decode may be a list of losses)
        for i, loss in enumerate(losses if isinstance(losses, list) else [losses]):
            weights = loss.get('class_weight') if isinstance(loss, dict) else None
            if not isinstance(weights, (list, tuple)) or len(weights) not in (old, old + 1):
                continue
            per_class = list(weights[:old])
            value = per_class[0] if len(set(per_class)) == 1 else 1.0
            loss['class_weight'] = [value] * new + list(weights[old:])
            where = f'{key}.{i}' if isinstance(losses, list) else key
            changed.append(f'model.{path}.{where}.class_weight'
                           + ('' if len(set(per_class)) == 1 else ' (per-class weights reset '
                              'to 1.0: they weighed the config\'s classes)'))
    return changed


def _folder(path: str) -> str:
    return path.rstrip('/') + '/' if path else ''


def _follow_dataset_zero_label(pipeline) -> None:
    """Make mmseg's ``LoadAnnotations`` of a pipeline (also inside ``TestTimeAug``) follow the
    dataset's ``reduce_zero_label`` (``None``): ADE20K's pipelines say ``True``, which a mask
    folder's label 0 (a class) must not get."""
    if isinstance(pipeline, (list, tuple)):
        for transform in pipeline:
            _follow_dataset_zero_label(transform)
    elif isinstance(pipeline, (dict, ConfigDict)):
        if pipeline.get('type') == 'LoadAnnotations':
            pipeline['reduce_zero_label'] = None
        _follow_dataset_zero_label(pipeline.get('transforms'))

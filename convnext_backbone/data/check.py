"""The data check: what a config's datasets hold, and what would break or silently empty a run,
found before anything is built (mmdet's "need at least one array to concatenate" and its kin).

Fatal (a ``DataError`` that lists them all): files or folders that are not there, images that
annotations refer to but that do not exist, annotations of unknown images or categories, label
maps that are missing or hold values beyond the classes, heads whose ``num_classes`` is not the
dataset's number of classes, and above all a dataset that would be empty. Mild (warnings): boxes
and polygons that mmdet drops, images without annotations, categories the config's classes
leave out. Every check ends with a table of images and instances (or pixels) per class.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log

from .fit import class_heads, innermost_dataset
from .layouts import DataError, quote_names

__all__ = ['DataReport', 'check_dataset', 'config_classes']

LIST_LIMIT = 5  # how many file names a message shows


@dataclass
class SplitStats:
    phase: str
    images: int = 0
    empty_images: int = 0  # without a (kept) annotation
    per_class: Counter = field(default_factory=Counter)  # instances or pixels
    unit: str = 'instances'


@dataclass
class DataReport:
    """Errors (fatal), warnings and statistics of a data check."""
    classes: Sequence[str] = ()
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    splits: List[SplitStats] = field(default_factory=list)

    def table(self) -> str:
        """Markdown table: one row per class, one column per split (instances or pixels),
        and the images of each split (and how many have no annotation)."""
        if not self.splits:
            return ''
        head = '| class | ' + ' | '.join(f'{s.phase} {s.unit}' for s in self.splits) + ' |'
        lines = [head, '|' + '---|' * (len(self.splits) + 1)]
        for index, name in enumerate(self.classes):
            lines.append(f'| {name} | ' + ' | '.join(str(s.per_class.get(index, 0))
                                                       for s in self.splits) + ' |')
        lines.append('| (images) | ' + ' | '.join(
            f'{s.images}' + (f' ({s.empty_images} without annotations)' if s.empty_images else '')
            for s in self.splits) + ' |')
        return '\n'.join(lines)

    def __str__(self) -> str:
        """The table and the warnings (errors are raised, see ``check_dataset``)."""
        return '\n'.join([self.table()] + [f'warning: {w}' for w in self.warnings])


def config_classes(dataset: dict) -> tuple:
    """The classes a dataset config trains or evaluates on: its ``metainfo``, else its type's
    ``METAINFO`` (needs the stack's default scope)."""
    classes = (dataset.get('metainfo') or {}).get('classes')
    if classes:
        return tuple(classes)
    return tuple(getattr(_dataset_class(dataset), 'METAINFO', {}).get('classes') or ())


def _dataset_class(dataset: dict):
    """The class of a dataset config's ``type``, from the default scope's registry (mmdet's or
    mmseg's; the root registry's ``get`` does not look there)."""
    from mmengine.registry import DATASETS, DefaultScope
    scope = DefaultScope.get_current_instance()
    with DATASETS.switch_scope_and_registry(scope and scope.scope_name) as registry:
        return registry.get(dataset.get('type'))


def check_dataset(cfg: Config, phases: Sequence[str] = ('train', 'val', 'test'),
                  raise_errors: bool = True) -> DataReport:
    """Check the datasets of ``phases`` of a config (detection: COCO-format; segmentation:
    image + label-map folders), log the table and warnings, and raise ``DataError`` listing
    every fatal problem (unless ``raise_errors`` is False)."""
    from mmengine.registry import DefaultScope
    report = DataReport()
    seen = set()
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        for phase in phases:
            loader = cfg.get(f'{phase}_dataloader')
            if not loader:
                continue
            dataset = innermost_dataset(loader['dataset'])
            key = (dataset.get('data_root'), dataset.get('ann_file'),
                   json.dumps(dataset.get('data_prefix'), sort_keys=True, default=str))
            if key in seen:  # test often is val
                continue
            seen.add(key)
            classes = config_classes(dataset)
            report.classes = report.classes or classes
            if 'ann_file' in dataset and str(dataset['ann_file']).endswith('.json'):
                _check_coco(phase, dataset, classes, report)
            elif 'seg_map_path' in (dataset.get('data_prefix') or {}):
                _check_label_maps(phase, dataset, classes, report)
            else:
                report.warnings.append(f'{phase}: a {dataset.get("type")} dataset, which the '
                                       'data check does not read')
        _check_heads(cfg, report)
    print_log('Data check:\n' + str(report), logger='current')
    if report.errors and raise_errors:
        raise DataError('The data does not fit the config:\n' +
                        '\n'.join(f'  - {e}' for e in report.errors))
    return report


def _path(dataset: dict, relative: str) -> str:
    return osp.join(dataset.get('data_root') or '', relative or '')


def _not_found(phase: str, path: str, dataset: dict) -> str:
    return (f'{phase} data not found: {path} does not exist. Put the dataset under '
            f'{dataset.get("data_root") or "the data root"} as README.md describes, point the '
            'config at your own data (tools/train.py CONFIG --data DIR), or run a built-in demo '
            '(tools/make_demo_data.py and configs/demo/).')


def _some(items: Sequence) -> str:
    items = list(items)
    return ', '.join(str(i) for i in items[:LIST_LIMIT]) + (
        f' (and {len(items) - LIST_LIMIT} more)' if len(items) > LIST_LIMIT else '')


# ------------------------------------------------------------------------------------- COCO
def _check_coco(phase: str, dataset: dict, classes: tuple, report: DataReport) -> None:
    ann_path = _path(dataset, dataset['ann_file'])
    img_dir = osp.normpath(_path(dataset, (dataset.get('data_prefix') or {}).get('img', '')))
    for path in (ann_path, img_dir):
        if not osp.exists(path):
            report.errors.append(_not_found(phase, path, dataset))
            return
    try:
        with open(ann_path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        report.errors.append(f'{phase}: cannot read {ann_path}: {exc}')
        return
    images = {im['id']: im for im in data.get('images', [])}
    categories = {c['id']: c['name'] for c in data.get('categories', [])}
    where = f'{phase} ({ann_path})'
    # Classes: which categories the config's classes take; the rest is ignored by mmdet.
    taken = {cid: classes.index(name) for cid, name in categories.items() if name in classes}
    if not taken:
        report.errors.append(
            f"{where}: the config's classes ({quote_names(classes)}) match none of the dataset's "
            f'categories ({quote_names(categories.values())}), so it would train on nothing. '
            'Set the classes from the data with --data DIR (or metainfo.classes and every '
            "head's num_classes).")
    else:
        unmatched = [c for c in classes if c not in categories.values()]
        if unmatched:
            report.warnings.append(f"{where}: the config's classes ({quote_names(unmatched)}) are "
                                   'not among its categories')
    # Annotations: their images and categories must exist; boxes and polygons must not be
    # degenerate (mmdet drops those).
    annotations = data.get('annotations', [])
    no_image = sorted({a.get('image_id') for a in annotations} - set(images), key=str)
    if no_image:
        report.errors.append(f'{where}: {len(no_image)} image ids that annotations refer to are '
                             f'not in its images: {_some(no_image)}')
    unknown = Counter(a.get('category_id') for a in annotations
                      if a.get('category_id') not in categories)
    if unknown:
        report.errors.append(f'{where}: {sum(unknown.values())} annotations of unknown category '
                             f'ids {_some(sorted(unknown, key=str))}')
    ignored = Counter(categories[a['category_id']] for a in annotations
                      if a.get('category_id') in categories and a['category_id'] not in taken)
    if ignored and taken:
        report.warnings.append(f"{where}: {sum(ignored.values())} annotations of categories "
                               f"outside the config's classes are ignored: "
                               + ', '.join(f'{n} ({c})' for n, c in ignored.most_common()))
    stats = SplitStats(phase, images=len(images))
    kept_images = set()
    degenerate_boxes, degenerate_polygons, crowd = [], 0, 0
    for ann in annotations:
        if ann.get('category_id') not in taken or ann.get('image_id') not in images:
            continue
        x, y, w, h = (ann.get('bbox') or [0, 0, 0, 0])[:4]
        if ann.get('iscrowd'):
            crowd += 1
            continue
        if w < 1 or h < 1 or ann.get('area', 1) <= 0:
            degenerate_boxes.append(ann.get('id'))
            continue
        segmentation = ann.get('segmentation')
        if isinstance(segmentation, list) and any(len(p) < 6 or len(p) % 2 for p in
                                                  segmentation):
            degenerate_polygons += 1
        stats.per_class[taken[ann['category_id']]] += 1
        kept_images.add(ann['image_id'])
    if degenerate_boxes:
        report.warnings.append(f'{where}: {len(degenerate_boxes)} annotations with an empty '
                               f'box (width or height < 1, or area 0) are dropped by mmdet; '
                               f'annotation ids {_some(degenerate_boxes)}')
    if degenerate_polygons:
        report.warnings.append(f'{where}: {degenerate_polygons} annotations have polygons of '
                               'fewer than 3 points, which give empty masks')
    if crowd:
        report.warnings.append(f'{where}: {crowd} crowd annotations (iscrowd=1) are ignored in '
                               'training and evaluation')
    stats.empty_images = len(set(images) - kept_images)
    if stats.empty_images:
        filtered = phase == 'train' and (dataset.get('filter_cfg') or {}).get('filter_empty_gt')
        report.warnings.append(
            f'{where}: {stats.empty_images} of {len(images)} images have no annotation of the '
            'config\'s classes; ' + ('they are left out (filter_cfg.filter_empty_gt)' if filtered
                                     else 'they are kept, as background'))
    if phase == 'train' and taken and not kept_images:
        report.errors.append(f'{where}: no image has a usable annotation of the config\'s '
                             'classes: the training set would be empty')
    # Files: every image must be there.
    missing = [im['file_name'] for im in images.values()
               if not osp.isfile(osp.join(img_dir, im.get('file_name', '')))]
    if missing:
        report.errors.append(f'{where}: {len(missing)} of {len(images)} images are not in '
                             f'{img_dir}: {_some(missing)}')
    report.splits.append(stats)


# ------------------------------------------------------------------------------ label maps
def _check_label_maps(phase: str, dataset: dict, classes: tuple, report: DataReport) -> None:
    prefix = dataset['data_prefix']
    img_dir, seg_dir = _path(dataset, prefix.get('img_path')), _path(dataset,
                                                                      prefix['seg_map_path'])
    for path in (img_dir, seg_dir):
        if not osp.isdir(path):
            report.errors.append(_not_found(phase, path, dataset))
            return
    img_suffix = dataset.get('img_suffix', _default(dataset, 'img_suffix', '.jpg'))
    seg_suffix = dataset.get('seg_map_suffix', _default(dataset, 'seg_map_suffix', '.png'))
    reduce_zero = dataset.get('reduce_zero_label', _default(dataset, 'reduce_zero_label', False))
    ignore_index = dataset.get('ignore_index', 255)
    where = f'{phase} ({img_dir})'
    images = sorted(_relative_files(img_dir, img_suffix))
    if not images:
        report.errors.append(f'{where}: no images ending in {img_suffix}, so it would '
                             f'{"train" if phase == "train" else "evaluate"} on nothing')
        return
    stats = SplitStats(phase, images=len(images), unit='pixels')
    missing, wrong_size, beyond = [], [], Counter()
    beyond_files = []
    from PIL import Image
    for name in images:
        seg_path = osp.join(seg_dir, name[:-len(img_suffix)] + seg_suffix)
        if not osp.isfile(seg_path):
            missing.append(seg_path)
            continue
        label = np.asarray(Image.open(seg_path))
        with Image.open(osp.join(img_dir, name)) as image:  # reads the header only
            if image.size != (label.shape[1], label.shape[0]):
                wrong_size.append(f'{name} {image.size[0]}x{image.size[1]} vs label map '
                                  f'{label.shape[1]}x{label.shape[0]}')
        counts = np.bincount(label.ravel().astype(np.int64), minlength=256)
        if reduce_zero:  # as mmseg: 0 -> ignore, v -> v - 1, 255 stays ignored (ADE20K)
            counts = np.concatenate([counts[1:255], [0], [counts[0] + counts[255]]])
        values = np.flatnonzero(counts)
        bad = [int(v) for v in values if v >= len(classes) and v != ignore_index]
        if bad:
            beyond.update(bad)
            beyond_files.append(name)
        for value in values:
            if value < len(classes):
                stats.per_class[int(value)] += int(counts[value])
        if not any(v < len(classes) for v in values):
            stats.empty_images += 1
    if missing:
        report.errors.append(f'{where}: {len(missing)} of {len(images)} images have no label '
                             f'map: {_some(missing)}')
    if wrong_size:
        report.errors.append(f'{where}: {len(wrong_size)} label maps are not the size of their '
                             f'image: {_some(wrong_size)}')
    if beyond:
        shift = ' after reduce_zero_label (label - 1)' if reduce_zero else ''
        report.errors.append(
            f'{where}: label values {sorted(beyond)}{shift} are beyond the {len(classes)} '
            f'classes (0..{len(classes) - 1}) and not the ignore index {ignore_index}, in '
            f'{len(beyond_files)} label maps: {_some(beyond_files)}')
    if stats.empty_images:
        report.warnings.append(f'{where}: {stats.empty_images} label maps hold only ignored '
                               'pixels')
    report.splits.append(stats)


def _default(dataset: dict, name: str, fallback):
    """A dataset class's default for an argument (ADE20KDataset: reduce_zero_label=True)."""
    import inspect
    try:
        parameter = inspect.signature(_dataset_class(dataset)).parameters.get(name)
    except (TypeError, ValueError):
        return fallback
    return fallback if parameter is None or parameter.default is inspect._empty \
        else parameter.default


def _relative_files(folder: str, suffix: str) -> List[str]:
    found = []
    for parent, _, names in os.walk(folder):
        found += [osp.relpath(osp.join(parent, n), folder) for n in names if n.endswith(suffix)]
    return found


# ----------------------------------------------------------------------------------- heads
def _check_heads(cfg: Config, report: DataReport) -> None:
    """Every class-dependent head must predict the datasets' number of classes."""
    if not report.classes:
        return
    wrong = [(path, head['num_classes']) for path, head in class_heads(cfg.get('model', {}))
             if head['num_classes'] != len(report.classes)]
    if wrong:
        report.errors.append(
            f"the config's heads predict other numbers of classes than its dataset has "
            f'({len(report.classes)}: ({quote_names(report.classes)})): ' +
            ', '.join(f'model.{p}.num_classes={n}' for p, n in wrong) +
            '. --data DIR sets them all from the data.')

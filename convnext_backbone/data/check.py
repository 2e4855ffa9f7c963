"""The data check: what a config's datasets hold, and what would break or silently empty a run,
found before training starts (mmdet's "need at least one array to concatenate" and its kin).

The counts are those of the dataset mmdet / mmseg build from the config (``build_dataset``:
through the registry, in the config's default scope, its annotations parsed and ``filter_cfg``
applied as for the run; the pipeline is not run). Where mmdet leaves annotations or images out,
the check names the rule, as mmdet's ``CocoDataset`` applies them (``DROP_RULES``): the ignore
flag, boxes outside their image, degenerate boxes, crowd annotations (kept as ignored regions),
and, in training, ``filter_cfg``'s ``filter_empty_gt`` and ``min_size``.

Fatal (a ``DataError`` that lists them all): files or folders that are not there, image files
that are empty, not images, of another size than their annotation says (or than their label
map), or (``decode``) that do not decode; annotations of unknown images or categories; classes
that mmdet would number otherwise than the config; label maps that are missing or hold values
beyond the classes; heads whose ``num_classes`` is not the dataset's number of classes; and
above all a training set without anything to learn from. Mild (warnings): what the rules drop,
polygons that give empty masks, images without annotations, categories the config's classes
leave out. Every check ends with a table of images and instances (or pixels) per class.

Every image's header is read (PIL; ``data.images``), so a check of COCO's 118k training images
reads 118k headers; see README.md for the rate.
"""
from __future__ import annotations

import copy
import json
import os.path as osp
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log

from ..errors import DataError, shorten
from .configure import class_heads, innermost_dataset
from .images import (ImageFile, decoded_size, decoder_of, orientation_note, parallel_map,
                     inspect_image, inspect_images)
from .layouts import quote_names

__all__ = ['DataReport', 'check_dataset', 'config_classes', 'build_dataset', 'drop_rule',
           'DROP_RULES']

# What mmdet's CocoDataset.parse_data_info does with an annotation of the config's classes, by
# rule, in the order ``drop_rule`` tests them (the first that applies names it); crowd
# annotations stay in the dataset as ignored regions (ignore_flag=1), not trained on.
DROP_RULES = {
    'ignore': 'annotations with the ignore flag ("ignore": true) are dropped by mmdet',
    'degenerate': 'annotations with an empty box (degenerate: width or height < 1, or area '
                  '<= 0) are dropped by mmdet',
    'outside': 'annotations with a box outside its image (no overlap with the width x height '
               'of its image entry) are dropped by mmdet',
    'crowd': 'crowd annotations (iscrowd=1) are ignored in training and evaluation (mmdet '
             'keeps them as ignored regions, not as instances)',
}


@dataclass
class SplitStats:
    """One split as the run sees it: the dataset's images, instances (pixels) per class."""
    phase: str
    images: int = 0  # in the dataset mmdet / mmseg build
    empty_images: int = 0  # of those, without an instance (pixel) of the classes
    left_out: int = 0  # in the annotation file, but left out of the dataset (filter_cfg...)
    per_class: Counter = field(default_factory=Counter)  # instances or pixels
    unit: str = 'instances'

    def images_cell(self) -> str:
        """The table's (images) cell: ``'12 (3 without annotations; 2 left out)'``."""
        notes = [f'{self.empty_images} without annotations'] if self.empty_images else []
        notes += [f'{self.left_out} left out'] if self.left_out else []
        return f'{self.images}' + (f' ({"; ".join(notes)})' if notes else '')


@dataclass
class DataReport:
    """Errors (fatal), warnings and statistics of a data check."""
    classes: Sequence[str] = ()
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    splits: List[SplitStats] = field(default_factory=list)

    def table(self) -> str:
        """Markdown table: one row per class, one column per split (instances or pixels),
        and the images of each split (how many have no annotation, how many were left out)."""
        if not self.splits:
            return ''
        head = '| class | ' + ' | '.join(f'{s.phase} {s.unit}' for s in self.splits) + ' |'
        lines = [head, '|' + '---|' * (len(self.splits) + 1)]
        for index, name in enumerate(self.classes):
            lines.append(f'| {name} | ' + ' | '.join(str(s.per_class.get(index, 0))
                                                       for s in self.splits) + ' |')
        lines.append('| (images) | ' + ' | '.join(s.images_cell() for s in self.splits) + ' |')
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
                  raise_errors: bool = True, decode: bool = False) -> DataReport:
    """Check the datasets of ``phases`` of a config (detection: COCO-format; segmentation:
    image + label-map folders), log the table and warnings, and raise ``DataError`` listing
    every fatal problem (unless ``raise_errors`` is False). ``decode``: decode every image
    fully (finds truncated files; a header read finds the rest)."""
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
                   json.dumps(dataset.get('data_prefix'), sort_keys=True, default=str),
                   json.dumps(dataset.get('filter_cfg'), sort_keys=True, default=str),
                   dataset.get('test_mode'))
            if key in seen:  # test often is val
                continue
            seen.add(key)
            classes = config_classes(dataset)
            report.classes = report.classes or classes
            if 'ann_file' in dataset and str(dataset['ann_file']).endswith('.json'):
                _check_coco(phase, dataset, classes, report, decode)
            elif 'seg_map_path' in (dataset.get('data_prefix') or {}):
                _check_label_maps(phase, dataset, classes, report, decode)
            else:
                report.warnings.append(f'{phase}: a {dataset.get("type")} dataset, which the '
                                       'data check does not read')
        _check_heads(cfg, report)
    print_log('Data check:\n' + str(report), logger='current')
    if report.errors and raise_errors:
        raise DataError('The data does not fit the config:\n' +
                        '\n'.join(f'  - {e}' for e in report.errors))
    return report


def build_dataset(dataset: dict):
    """The dataset that mmdet / mmseg build from a config's dataset dict, through the registry
    in the current default scope, not yet initialised (``lazy_init``): ``full_init()`` parses
    the annotations and applies ``filter_cfg`` (and ``indices``) as for the run. Its pipeline
    is left empty (nothing is loaded or transformed) and its ``data_list`` unserialised."""
    from mmengine.registry import DATASETS
    config = copy.deepcopy(dataset)
    config.update(pipeline=[], serialize_data=False, lazy_init=True)
    return DATASETS.build(config)


def _full_init_keeping_annotations(built) -> Optional[dict]:
    """``built.full_init()``, keeping the annotation file's contents as the dataset's COCO api
    read them (``CocoDataset`` drops its api once parsed): the file is read once. ``None`` for
    a dataset without a ``COCOAPI``."""
    api_class = getattr(built, 'COCOAPI', None)
    kept = []

    def keep(*args, **kwargs):
        api = api_class(*args, **kwargs)
        kept.append(api.dataset)
        return api
    if api_class is not None:
        built.COCOAPI = keep
    try:
        built.full_init()
    finally:
        if api_class is not None:
            del built.COCOAPI  # the class's again
    return kept[0] if kept else None


def _path(dataset: dict, relative: str) -> str:
    return osp.join(dataset.get('data_root') or '', relative or '')


def _not_found(phase: str, path: str, dataset: dict) -> str:
    return (f'{phase} data not found: {path} does not exist. Put the dataset under '
            f'{dataset.get("data_root") or "the data root"} as README.md describes, point the '
            'config at your own data (tools/train.py CONFIG --data DIR), or run a built-in demo '
            '(tools/make_demo_data.py and configs/demo/).')


def _build_failed(where: str, dataset: dict, exc: Exception) -> str:
    return (f'{where}: its {dataset.get("type")} cannot be built from the config '
            f'({type(exc).__name__}: {exc}); mmdet / mmseg would fail the same way at the '
            'start of the run')


# ------------------------------------------------------------------------------------- COCO
def drop_rule(annotation: dict, image: dict) -> str:
    """The rule (a key of ``DROP_RULES``) by which mmdet's ``CocoDataset`` leaves an annotation
    of the config's classes out of training (in its order, but a degenerate box that is also
    outside is named degenerate); ``''`` for one it trains on.
    ``image``: the annotation's entry in the file's images (its width and height)."""
    if annotation.get('ignore', False):
        return 'ignore'
    x, y, w, h = (list(annotation.get('bbox') or []) + [0, 0, 0, 0])[:4]
    if annotation.get('area', 0) <= 0 or w < 1 or h < 1:
        return 'degenerate'  # mmdet tests overlap first, which a box of width 0 fails too
    inter_w = max(0, min(x + w, image.get('width', 0)) - max(x, 0))
    inter_h = max(0, min(y + h, image.get('height', 0)) - max(y, 0))
    if inter_w * inter_h == 0:
        return 'outside'
    if annotation.get('iscrowd', False):
        return 'crowd'
    return ''


def _check_coco(phase: str, dataset: dict, classes: tuple, report: DataReport,
                decode: bool) -> None:
    """A COCO-format split: the file against its images and the config's classes, the
    dataset mmdet builds of it (the table), the rules that left things out, the image files."""
    ann_path = _path(dataset, dataset['ann_file'])
    img_dir = osp.normpath(_path(dataset, (dataset.get('data_prefix') or {}).get('img', '')))
    for path in (ann_path, img_dir):
        if not osp.exists(path):
            report.errors.append(_not_found(phase, path, dataset))
            return
    where = f'{phase} ({ann_path})'
    built, data = None, None
    try:
        built = build_dataset(dataset)
        data = _full_init_keeping_annotations(built)
    except Exception as exc:  # noqa: BLE001 what parsing the user's file raises
        report.errors.append(_build_failed(where, dataset, exc))
        built = None
    if data is None:
        try:
            with open(ann_path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            report.errors.append(f'{phase}: cannot read {ann_path}: {exc}')
            return
    images = {im.get('id'): im for im in data.get('images', [])}
    categories = {c.get('id'): c.get('name') for c in data.get('categories', [])}
    taken = _check_categories(where, classes, categories, built, report)
    annotations = data.get('annotations', [])
    _check_references(where, annotations, images, categories, taken, report)
    if built is not None:
        stats = _coco_stats(phase, where, built, images, annotations, taken, report)
        report.splits.append(stats)
    _check_image_files(where, img_dir, list(images.values()), decoder_of(
        dataset.get('pipeline')), decode, report)


def _check_categories(where: str, classes: tuple, categories: Dict, built,
                      report: DataReport) -> Dict:
    """The categories that the config's classes take, ``{category id: label}`` as the built
    dataset numbers them (``cat2label``: in the file's order of categories); errors when they
    match none or mmdet would number them otherwise than the config's classes."""
    cat2label = getattr(built, 'cat2label', None)
    if cat2label is None:
        cat2label = {cid: classes.index(name) for cid, name in categories.items()
                     if name in classes}
    taken = {cid: label for cid, label in cat2label.items() if cid in categories}
    if not taken:
        report.errors.append(
            f"{where}: the config's classes ({quote_names(classes)}) match none of the dataset's "
            f'categories ({quote_names(categories.values())}), so it would train on nothing. '
            'Set the classes from the data with --data DIR (or metainfo.classes and every '
            "head's num_classes).")
        return taken
    unmatched = [c for c in classes if c not in categories.values()]
    if unmatched:
        report.warnings.append(f"{where}: the config's classes ({quote_names(unmatched)}) are "
                               'not among its categories')
    misnumbered = [f'category {cid} {categories[cid]!r} would be label {label} '
                   f'({repr(classes[label]) if label < len(classes) else "beyond the classes"})'
                   for cid, label in taken.items()
                   if label >= len(classes) or classes[label] != categories[cid]]
    if misnumbered:
        order = [categories[cid] for cid in taken]
        report.errors.append(
            f"{where}: mmdet numbers the classes in the order of the file's categories, not of "
            f"the config's classes, so training would mislabel them: {shorten(misnumbered)}. "
            f'List metainfo.classes in the order of the file ({quote_names(order)}), and '
            'each category name once; --data DIR does.')
    return taken


def _check_references(where: str, annotations: List[dict], images: Dict, categories: Dict,
                      taken: Dict, report: DataReport) -> None:
    """Annotations must name images and categories of the file; those of categories that the
    config's classes leave out are ignored (a warning)."""
    no_image = sorted({a.get('image_id') for a in annotations} - set(images), key=str)
    if no_image:
        report.errors.append(f'{where}: {len(no_image)} image ids that annotations refer to are '
                             f'not in its images: {shorten(no_image)}')
    unknown = Counter(a.get('category_id') for a in annotations
                      if a.get('category_id') not in categories)
    if unknown:
        report.errors.append(f'{where}: {sum(unknown.values())} annotations of unknown category '
                             f'ids {shorten(sorted(unknown, key=str))}')
    ignored = Counter(categories[a['category_id']] for a in annotations
                      if a.get('category_id') in categories and a['category_id'] not in taken)
    if ignored and taken:
        report.warnings.append(f"{where}: {sum(ignored.values())} annotations of categories "
                               f"outside the config's classes are ignored: "
                               + ', '.join(f'{n} ({c})' for n, c in ignored.most_common()))


def _coco_stats(phase: str, where: str, built, images: Dict, annotations: List[dict],
                taken: Dict, report: DataReport) -> SplitStats:
    """The table's column from the built dataset, and the rules that left annotations and
    images out of it, in words; the errors of a training set without anything to learn."""
    kept = {info.get('img_id'): info for info in built.data_list}
    stats = SplitStats(phase, images=len(kept), left_out=len(set(images) - set(kept)))
    for info in kept.values():
        labels = [i['bbox_label'] for i in info.get('instances', []) if not i.get('ignore_flag')]
        stats.per_class.update(labels)
        stats.empty_images += not labels
    # The rules, per annotation of the classes; and what they predict the dataset holds.
    dropped, predicted = defaultdict(list), Counter()
    with_classes = set()  # images with an annotation of the classes (filter_empty_gt's test)
    for ann in annotations:
        image = images.get(ann.get('image_id'))
        if ann.get('category_id') not in taken or image is None:
            continue
        with_classes.add(ann['image_id'])
        rule = drop_rule(ann, image)
        if rule:
            dropped[rule].append(ann.get('id'))
        elif ann['image_id'] in kept:
            predicted[taken[ann['category_id']]] += 1
    for rule, text in DROP_RULES.items():
        if dropped[rule]:
            report.warnings.append(f'{where}: {len(dropped[rule])} {text}; '
                                   f'annotation ids {shorten(dropped[rule])}')
    _warn_empty_polygons(where, annotations, taken, report)
    if predicted != stats.per_class:
        report.warnings.append(
            f"{where}: its {type(built).__name__} keeps other instances than CocoDataset's "
            'rules give (the table shows the dataset): per class, dataset vs rules: ' +
            ', '.join(f'{i}: {stats.per_class[i]} vs {predicted[i]}' for i in
                      sorted(set(predicted) | set(stats.per_class))))
    left_out = _warn_image_filters(where, built, images, kept, with_classes, report)
    _check_not_empty(phase, where, stats, len(images), dropped, left_out, taken, report)
    return stats


def _check_not_empty(phase: str, where: str, stats: SplitStats, total: int, dropped: Dict,
                     left_out: List[str], taken: Dict, report: DataReport) -> None:
    """A training set must hold an instance to learn from, a split an image to run on; the
    error says which rules emptied it."""
    if not total:
        report.errors.append(f'{where}: no images, so it would '
                             f'{"train" if phase == "train" else "evaluate"} on nothing')
    elif phase == 'train' and taken and not sum(stats.per_class.values()):
        detail = (f"mmdet keeps none of its {total} images: {'; '.join(left_out)}"
                  if not stats.images else
                  f'its {stats.images} images would train as background only')
        why = ', '.join(f'{len(dropped[rule])} {rule}' for rule in DROP_RULES if dropped[rule])
        report.errors.append(
            f"{where}: no image has a usable annotation of the config's classes: the training "
            f'set would be empty ({detail}' + (f'; annotations dropped by rule: {why}'
                                              if why else '') + ')')


def _warn_empty_polygons(where: str, annotations: List[dict], taken: Dict,
                         report: DataReport) -> None:
    """Polygons of fewer than 3 points: mmdet's ``LoadAnnotations`` ignores such instances."""
    count = sum(1 for a in annotations if a.get('category_id') in taken
                and isinstance(a.get('segmentation'), list)
                and any(len(p) < 6 or len(p) % 2 for p in a['segmentation']))
    if count:
        report.warnings.append(f'{where}: {count} annotations have polygons of fewer than 3 '
                               "points, which give empty masks (mmdet's LoadAnnotations then "
                               'ignores the instance)')


def _left_out(built, images: Dict, kept: Dict, with_classes: set) -> Dict[str, List[str]]:
    """The images of the file that the dataset left out, by the rule that did: ``'empty'``
    (``filter_cfg.filter_empty_gt``: no annotation of the classes), ``'small'``
    (``filter_cfg.min_size``, on the shorter side of the image entry) or ``'other'``."""
    filter_cfg = {} if built.test_mode else (built.filter_cfg or {})
    out = {'empty': [], 'small': [], 'other': []}
    for image_id, image in images.items():
        if image_id in kept:
            continue
        name = image.get('file_name')
        if filter_cfg.get('filter_empty_gt', False) and image_id not in with_classes:
            out['empty'].append(name)
        elif min(image.get('width', 0), image.get('height', 0)) < filter_cfg.get('min_size', 0):
            out['small'].append(f'{name} ({image.get("width")}x{image.get("height")})')
        else:
            out['other'].append(name)
    return out


def _warn_image_filters(where: str, built, images: Dict, kept: Dict, with_classes: set,
                        report: DataReport) -> List[str]:
    """Warnings on the images the dataset left out (``_left_out``) and on those it keeps
    without an annotation to train on. Returns a summary of those left out, per rule."""
    filter_cfg = {} if built.test_mode else (built.filter_cfg or {})
    filter_empty = bool(filter_cfg.get('filter_empty_gt', False))
    min_size = filter_cfg.get('min_size', 0)
    out = _left_out(built, images, kept, with_classes)
    unannotated = [im.get('file_name') for i, im in images.items() if i not in with_classes]
    if unannotated:
        report.warnings.append(
            f"{where}: {len(unannotated)} of {len(images)} images have no annotation of the "
            "config's classes; " + ('they are left out (filter_cfg.filter_empty_gt)'
                                    if filter_empty else 'they are kept, as background') +
            f': {shorten(unannotated)}')
    background = [images[i].get('file_name') for i, info in kept.items()
                  if i in with_classes and i in images and not any(
                      not instance.get('ignore_flag') for instance in info.get('instances', []))]
    if background:
        report.warnings.append(
            f"{where}: {len(background)} images have annotations of the config's classes, but "
            'none that mmdet trains on (dropped by the rules above, or crowds); they are kept, '
            'as background' + (' (filter_cfg.filter_empty_gt looks at the annotations before '
                               'those rules)' if filter_empty else '') +
            f': {shorten(background)}')
    if out['small']:
        report.warnings.append(f'{where}: {len(out["small"])} images smaller than '
                               f'filter_cfg.min_size={min_size} on their shorter side (as '
                               f'their entries give it) are left out: {shorten(out["small"])}')
    if out['other']:
        report.warnings.append(f'{where}: {len(out["other"])} images are left out by its '
                               f'{type(built).__name__} for another reason (indices, or its '
                               f'own filter): {shorten(out["other"])}')
    texts = {'empty': 'without annotations of the classes (filter_cfg.filter_empty_gt)',
             'small': f'smaller than filter_cfg.min_size={min_size}',
             'other': 'left out for another reason'}
    return [f'{len(names)} {texts[rule]}' for rule, names in out.items() if names]


def _check_image_files(where: str, img_dir: str, images: List[dict], decoder: Tuple[str, str],
                       decode: bool, report: DataReport) -> None:
    """Every image of the file must be there and readable, of the size its entry gives once
    mmcv's decoder (``decoder``: backend, colour type) has applied any EXIF orientation."""
    names = [im.get('file_name', '') for im in images]
    found = inspect_images([osp.join(img_dir, name) for name in names], decode)
    missing = [name for name, image in zip(names, found) if image.missing]
    if missing:
        report.errors.append(f'{where}: {len(missing)} of {len(images)} images are not in '
                             f'{img_dir}: {shorten(missing)}')
    _report_unusable(where, names, found, len(images), report)
    wrong = []
    for entry, name, image in zip(images, names, found):
        size = decoded_size(image, *decoder)
        expected = (entry.get('width'), entry.get('height'))
        if size is not None and size != expected:
            note = orientation_note(image, *decoder) or f'{size[0]}x{size[1]}'
            wrong.append(f'{name}: {note}; its entry says {expected[0]}x{expected[1]}')
    if wrong:
        report.errors.append(f'{where}: {len(wrong)} images are not of the size (width x '
                             'height) their image entries give, so their boxes and masks would '
                             f'not fit: {shorten(wrong)}')


def _report_unusable(where: str, names: List[str], found: List[ImageFile], total: int,
                     report: DataReport) -> None:
    """An error naming the files that are there but cannot be used (empty, not images, or not
    decoding)."""
    unusable = [f'{name} ({image.problem})' for name, image in zip(names, found)
                if image.problem and not image.missing]
    if unusable:
        report.errors.append(f'{where}: {len(unusable)} of {total} images cannot be used '
                             "(mmcv's LoadImageFromFile cannot decode them): "
                             f'{shorten(unusable)}')


# ------------------------------------------------------------------------------ label maps
def _check_label_maps(phase: str, dataset: dict, classes: tuple, report: DataReport,
                      decode: bool) -> None:
    """An image + label-map split: the pairs of the dataset mmseg builds, their files and
    sizes, the pixels per class as mmseg's ``LoadAnnotations`` will label them."""
    prefix = dataset['data_prefix']
    img_dir, seg_dir = _path(dataset, prefix.get('img_path')), _path(dataset,
                                                                      prefix['seg_map_path'])
    for path in (img_dir, seg_dir):
        if not osp.isdir(path):
            report.errors.append(_not_found(phase, path, dataset))
            return
    where = f'{phase} ({img_dir})'
    try:
        built = build_dataset(dataset)
        built.full_init()
    except Exception as exc:  # noqa: BLE001 what listing the user's folders raises
        report.errors.append(_build_failed(where, dataset, exc))
        return
    pairs = [(info['img_path'], info.get('seg_map_path')) for info in built.data_list]
    if not pairs:
        report.errors.append(f'{where}: no images ending in {built.img_suffix}, so it would '
                             f'{"train" if phase == "train" else "evaluate"} on nothing')
        return
    stats = SplitStats(phase, images=len(pairs), unit='pixels')
    decoder = decoder_of(dataset.get('pipeline'))
    read = parallel_map(lambda pair: (inspect_image(pair[0], decode), _read_label_map(pair[1])),
                        pairs)
    names = [osp.relpath(image, img_dir) for image, _ in pairs]
    images = [image for image, _ in read]
    missing_images = [name for name, image in zip(names, images) if image.missing]
    if missing_images:
        report.errors.append(f'{where}: {len(missing_images)} of {len(pairs)} images are not '
                             f'there: {shorten(missing_images)}')
    _report_unusable(where, names, images, len(pairs), report)
    missing, unreadable, wrong_size, beyond = [], [], [], Counter()
    beyond_files = []
    for name, (_, seg_path), (image, label) in zip(names, pairs, read):
        if label is None:
            missing.append(seg_path)
            continue
        if isinstance(label, str):
            unreadable.append(f'{seg_path} ({label})')
            continue
        size = decoded_size(image, *decoder)
        if size is not None and size != (label.shape[1], label.shape[0]):
            note = orientation_note(image, *decoder)
            wrong_size.append(f'{name} {size[0]}x{size[1]} vs label map '
                              f'{label.shape[1]}x{label.shape[0]}' + (f' ({note})' if note
                                                                      else ''))
        counts = _label_counts(label, built.reduce_zero_label, built.label_map)
        values = np.flatnonzero(counts)
        bad = [int(v) for v in values if v >= len(classes) and v != built.ignore_index]
        if bad:
            beyond.update(bad)
            beyond_files.append(name)
        for value in values:
            if value < len(classes):
                stats.per_class[int(value)] += int(counts[value])
        if not any(v < len(classes) for v in values):
            stats.empty_images += 1
    if missing:
        report.errors.append(f'{where}: {len(missing)} of {len(pairs)} images have no label '
                             f'map: {shorten(missing)}')
    if unreadable:
        report.errors.append(f'{where}: {len(unreadable)} label maps cannot be read: '
                             f'{shorten(unreadable)}')
    if wrong_size:
        report.errors.append(f'{where}: {len(wrong_size)} label maps are not the size of their '
                             f'image (as mmcv decodes it): {shorten(wrong_size)}')
    if beyond:
        shift = ' after reduce_zero_label (label - 1)' if built.reduce_zero_label else ''
        report.errors.append(
            f'{where}: label values {sorted(beyond)}{shift} are beyond the {len(classes)} '
            f'classes (0..{len(classes) - 1}) and not the ignore index {built.ignore_index}, in '
            f'{len(beyond_files)} label maps: {shorten(beyond_files)}')
    if stats.empty_images:
        report.warnings.append(f'{where}: {stats.empty_images} label maps hold only ignored '
                               'pixels')
    report.splits.append(stats)


def _read_label_map(path: Optional[str]):
    """A label map's values as mmseg reads them (PIL, unchanged: a palette PNG gives its
    indices); ``None`` when there is no such file, a string saying why when it cannot be read."""
    from PIL import Image
    if not path or not osp.isfile(path):
        return None
    try:
        with Image.open(path) as label:
            return np.asarray(label)
    except Exception as exc:  # noqa: BLE001 corrupt files raise what the decoder meets
        return f'{type(exc).__name__}: {exc}'


def _label_counts(label: np.ndarray, reduce_zero_label: bool, label_map: Optional[dict]
                  ) -> np.ndarray:
    """Pixels per label value (index) after mmseg's ``LoadAnnotations``: ``reduce_zero_label``
    (0 -> ignore 255, v -> v - 1, 255 stays ignored: ADE20K), then the dataset's
    ``label_map`` (its classes a subset or reordering of its type's)."""
    counts = np.bincount(label.ravel().astype(np.int64), minlength=256)
    if reduce_zero_label:
        counts = np.concatenate([counts[1:255], [0], [counts[0] + counts[255]], counts[256:]])
    if label_map:
        mapped = counts.copy()
        for old in label_map:
            mapped[old] -= counts[old]
        for old, new in label_map.items():
            mapped[new] += counts[old]
        counts = mapped
    return counts


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

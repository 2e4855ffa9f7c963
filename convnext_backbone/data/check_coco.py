"""The data check of a COCO-format split (``data.check``): the annotation file against its
images and the config's classes, the table of what mmdet's dataset holds, and in words what it
left out and why: its own ``parse_data_info`` decides which annotations it keeps, its own
``filter_data`` (asked again with each ``filter_cfg`` rule alone) which images, and mmdet's
``LoadAnnotations`` which masks it ignores; only the words are this module's."""
from __future__ import annotations

import os.path as osp
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Set

from ..errors import shorten
from .check_report import (DataReport, SplitStats, all_found, build_failed, data_path,
                           pipeline_transform, report_image_files)
from .images import decoded_size, decoder_of, inspect_images, orientation_note
from .layouts import quote_names

# Words for the annotations of the config's classes that a COCO dataset does not train on, by
# the rule that ``_annotation_rule`` names; the dataset itself decides which those are.
ANNOTATION_RULES = {
    'ignore': 'annotations with the ignore flag ("ignore": true) are dropped by mmdet',
    'degenerate': 'annotations with an empty box (degenerate: width or height < 1, or area '
                  '<= 0) are dropped by mmdet',
    'outside': 'annotations with a box outside its image (no overlap with the width x height '
               'of its image entry) are dropped by mmdet',
    'crowd': 'crowd annotations (iscrowd=1) are ignored in training and evaluation (mmdet '
             'keeps them as ignored regions, not as instances)',
    'other': 'annotations are dropped by the dataset by a rule of its own',
}
# The filter_cfg keys by which mmdet's datasets leave images out, under the names that
# ``_left_out`` gives the images each leaves out.
IMAGE_FILTERS = {'empty': 'filter_empty_gt', 'small': 'min_size'}


def check_coco(phase: str, dataset: dict, built, classes: tuple, report: DataReport,
               decode: bool) -> None:
    """A COCO-format split: the file against its images and the config's classes, the
    dataset mmdet builds of it (the table), what it left out and why, the image files."""
    ann_path = data_path(dataset, dataset['ann_file'])
    img_dir = osp.normpath(data_path(dataset, (dataset.get('data_prefix') or {}).get('img', '')))
    if not all_found(phase, dataset, (ann_path, img_dir), report):
        return
    where, seen = f'{phase} ({ann_path})', {}
    try:
        _full_init(built, seen)
    except Exception as exc:  # noqa: BLE001 what parsing the user's file raises
        report.errors.append(build_failed(where, dataset, exc))
        built = None  # what it read of the file is still checked below
    if 'file' not in seen:
        return
    images = {im.get('id'): im for im in seen['file'].get('images', [])}
    categories = {c.get('id'): c.get('name') for c in seen['file'].get('categories', [])}
    annotations = seen['file'].get('annotations', [])
    taken = _check_categories(where, classes, categories, built, report)
    _check_references(where, annotations, images, categories, taken, report)
    if built is not None:
        unfiltered = seen.get('unfiltered', built.data_list)  # its full_init filters nothing
        report.splits.append(_coco_stats(phase, where, built, unfiltered, images, annotations,
                                         taken, dataset.get('pipeline'), report))
    entries = list(images.values())
    names = [im.get('file_name', '') for im in entries]
    found = inspect_images([osp.join(img_dir, name) for name in names], decode)
    report_image_files(where, img_dir, names, found, report)
    decoder, wrong = decoder_of(dataset.get('pipeline')), []
    for entry, name, image in zip(entries, names, found):
        size, expected = decoded_size(image, *decoder), (entry.get('width'), entry.get('height'))
        if size is not None and size != expected:
            note = orientation_note(image, *decoder) or f'{size[0]}x{size[1]}'
            wrong.append(f'{name}: {note}; its entry says {expected[0]}x{expected[1]}')
    if wrong:
        report.errors.append(f'{where}: {len(wrong)} images are not of the size (width x '
                             'height) their image entries give, so their boxes and masks would '
                             f'not fit: {shorten(wrong)}')


def _full_init(built, seen: dict) -> None:
    """``built.full_init()``, keeping in ``seen`` what it makes on the way: ``'file'``, the
    annotation file as its COCO api read it (``CocoDataset`` drops the api once parsed; the
    file is read once), and ``'unfiltered'``, the data list before ``filter_data``."""
    api_class = built.COCOAPI

    def read(*args, **kwargs):
        api = api_class(*args, **kwargs)
        seen['file'] = api.dataset
        return api

    def filter_data():
        seen['unfiltered'] = built.data_list
        return type(built).filter_data(built)
    built.COCOAPI, built.filter_data = read, filter_data
    try:
        built.full_init()
    finally:  # the class's own again
        del built.COCOAPI, built.filter_data


def _check_categories(where: str, classes: tuple, categories: Dict, built,
                      report: DataReport) -> Dict:
    """The categories that the config's classes take, ``{category id: label}`` as the built
    dataset numbers them (``cat2label``: in the file's order of categories); errors when they
    match none or mmdet would number them otherwise than the config's classes."""
    cat2label = getattr(built, 'cat2label', None)
    if cat2label is None:  # not parsed: the labels the config means
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
    """Annotations must name images and categories of the file (mmdet silently passes over
    those that do not); those of categories outside the config's classes are ignored."""
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


def _coco_stats(phase: str, where: str, built, unfiltered: List[dict], images: Dict,
                annotations: List[dict], taken: Dict, pipeline, report: DataReport
                ) -> SplitStats:
    """The table's column from the built dataset, and in words what it left out and why; the
    error of a training set without anything to learn from."""
    kept = {info['img_id']: info for info in built.data_list}
    stats = SplitStats(phase, images=len(kept), left_out=len(set(images) - set(kept)))
    for info in kept.values():
        labels = [i['bbox_label'] for i in info['instances'] if not i['ignore_flag']]
        stats.per_class.update(labels)
        stats.empty_images += not labels
    by_rule = _annotation_rules(built, annotations, images, taken)
    for rule, text in ANNOTATION_RULES.items():
        if by_rule[rule]:
            report.warnings.append(f'{where}: {len(by_rule[rule])} {text}; '
                                   f'annotation ids {shorten(by_rule[rule])}')
    _warn_ignored_masks(where, built, pipeline, report)
    with_classes = {a.get('image_id') for a in annotations if a.get('category_id') in taken}
    left_out = _warn_left_out(where, built, unfiltered, images, kept, with_classes, report)
    if not images:
        report.errors.append(f'{where}: no images, so it would '
                             f'{"train" if phase == "train" else "evaluate"} on nothing')
    elif phase == 'train' and taken and not sum(stats.per_class.values()):
        detail = (f"mmdet keeps none of its {len(images)} images: {'; '.join(left_out)}"
                  if not stats.images else
                  f'its {stats.images} images would train as background only')
        why = ', '.join(f'{len(by_rule[r])} {r}' for r in ANNOTATION_RULES if by_rule[r])
        report.errors.append(
            f"{where}: no image has a usable annotation of the config's classes: the training "
            f'set would be empty ({detail}' + (f'; annotations dropped by rule: {why}'
                                              if why else '') + ')')
    return stats


def _annotation_rules(built, annotations: List[dict], images: Dict, taken: Dict
                      ) -> Dict[str, list]:
    """The ids of the annotations of the classes that the dataset does not train on, by rule.
    Its own ``parse_data_info``, given one annotation at a time, decides (dropped: no instance;
    a crowd: an ignored one); ``_annotation_rule`` only names the rule."""
    by_rule = defaultdict(list)
    for ann in annotations:
        image = images.get(ann.get('image_id'))
        if image is None or ann.get('category_id') not in taken:
            continue
        instances = built.parse_data_info(dict(raw_img_info=dict(image, img_id=image['id']),
                                               raw_ann_info=[ann]))['instances']
        if not instances:
            by_rule[_annotation_rule(ann, image)].append(ann.get('id'))
        elif instances[0]['ignore_flag']:
            by_rule['crowd'].append(ann.get('id'))
    return by_rule


def _annotation_rule(ann: dict, image: dict) -> str:
    """The rule (a key of ``ANNOTATION_RULES``) that says why the dataset dropped ``ann``: the
    first of CocoDataset's that it meets, but a box both degenerate and outside its image is
    named degenerate (the fault to fix); ``'other'`` when none does."""
    if ann.get('ignore', False):
        return 'ignore'
    x, y, w, h = ann['bbox']
    if ann['area'] <= 0 or w < 1 or h < 1:
        return 'degenerate'
    if min(x + w, image['width']) <= max(x, 0) or min(y + h, image['height']) <= max(y, 0):
        return 'outside'
    return 'other'


def _warn_ignored_masks(where: str, built, pipeline, report: DataReport) -> None:
    """Instances without a mask where the pipeline loads masks (an error), and those that its
    mask loader ignores for their mask (no polygon of 3 points or more, an unreadable RLE):
    mmdet's ``LoadAnnotations._process_masks`` decides, as in the run (the whole transform
    would also draw every mask)."""
    from mmengine.registry import TRANSFORMS
    entry = pipeline_transform(pipeline, 'LoadAnnotations')
    if not entry or not entry.get('with_mask'):
        return
    # mmdet's loader reads the mask of every instance, ignored ones too: KeyError without
    without = {info['img_id']: sum('mask' not in i for i in info['instances'])
               for info in built.data_list}
    if sum(without.values()):
        report.errors.append(
            f'{where}: {sum(without.values())} annotations have no mask ("segmentation" '
            f'missing or empty; images {shorten([i for i, n in without.items() if n])}), but '
            "the pipeline's LoadAnnotations loads masks (with_mask=True) and mmdet stops at "
            "the first without one (KeyError: 'mask'): give every annotation a polygon or "
            'RLE, or train a box-only config (dino_4scale_convnext_t_12e.py, '
            'rtmdet_l_convnext_b.py)')
    loader, count = TRANSFORMS.build(entry), 0
    for info in built.data_list:
        instances = [dict(i) for i in info['instances'] if 'mask' in i and not i['ignore_flag']]
        loader._process_masks(dict(instances=instances))  # sets ignore_flag where it ignores
        count += sum(i['ignore_flag'] for i in instances)
    if count:
        report.warnings.append(f'{where}: {count} annotations have polygons of fewer than 3 '
                               "points (or masks it cannot read): mmdet's LoadAnnotations "
                               'ignores those instances')


def _left_out(built, unfiltered: List[dict]) -> Dict[str, Set]:
    """The images (ids) that the dataset left out, by the rule that did: its own
    ``filter_data``, run again on the unfiltered list with each ``IMAGE_FILTERS`` rule of its
    ``filter_cfg`` alone, names those that the rule leaves out and no ``filter_cfg`` would
    (an image goes to the first rule); ``'other'``: the rest (``indices``, or a filter of the
    dataset's own)."""
    everything = {info['img_id'] for info in unfiltered}
    filter_cfg, data_list = built.filter_cfg, built.data_list

    def left_out_by(cfg: Optional[dict]) -> Set:
        built.filter_cfg = cfg
        return everything - {info['img_id'] for info in built.filter_data()}
    try:
        built.data_list = unfiltered
        out, regardless = {}, left_out_by(None)
        for rule, key in IMAGE_FILTERS.items():
            cfg = {key: filter_cfg[key]} if key in (filter_cfg or {}) else None
            out[rule] = left_out_by(cfg).difference(regardless, *out.values())
    finally:
        built.filter_cfg, built.data_list = filter_cfg, data_list
    out['other'] = everything.difference({info['img_id'] for info in data_list}, *out.values())
    return out


def _warn_left_out(where: str, built, unfiltered: List[dict], images: Dict, kept: Dict,
                   with_classes: set, report: DataReport) -> List[str]:
    """Warnings on the images the dataset left out (``_left_out``) and on those it keeps
    without an annotation to train on. Returns a summary of those left out, per rule."""
    filter_cfg, out = built.filter_cfg or {}, _left_out(built, unfiltered)
    unannotated = [im.get('file_name') for i, im in images.items() if i not in with_classes]
    if unannotated:
        report.warnings.append(
            f"{where}: {len(unannotated)} of {len(images)} images have no annotation of the "
            "config's classes; " + ('they are left out (filter_cfg.filter_empty_gt)'
                                    if out['empty'] else 'they are kept, as background') +
            f': {shorten(unannotated)}')
    background = [images[i].get('file_name') for i, info in kept.items()
                  if i in with_classes and i in images
                  and all(instance['ignore_flag'] for instance in info['instances'])]
    if background:
        report.warnings.append(
            f"{where}: {len(background)} images have annotations of the config's classes, but "
            'none that mmdet trains on (dropped by the rules above, or crowds); they are kept, '
            'as background' + (' (filter_cfg.filter_empty_gt looks at the annotations before '
                               'those rules)' if filter_cfg.get('filter_empty_gt') else '') +
            f': {shorten(background)}')
    min_size = filter_cfg.get('min_size', 0)
    small = [f'{im.get("file_name")} ({im.get("width")}x{im.get("height")})'
             for i, im in images.items() if i in out['small']]
    if small:
        report.warnings.append(f'{where}: {len(small)} images smaller than '
                               f'filter_cfg.min_size={min_size} on their shorter side (as '
                               f'their entries give it) are left out: {shorten(small)}')
    other = [im.get('file_name') for i, im in images.items() if i in out['other']]
    if other:
        report.warnings.append(f'{where}: {len(other)} images are left out by its '
                               f'{type(built).__name__} for another reason (indices, or its '
                               f'own filter): {shorten(other)}')
    texts = {'empty': 'without annotations of the classes (filter_cfg.filter_empty_gt)',
             'small': f'smaller than filter_cfg.min_size={min_size}',
             'other': 'left out for another reason'}
    return [f'{len(ids)} {texts[rule]}' for rule, ids in out.items() if ids]

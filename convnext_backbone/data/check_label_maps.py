"""The data check of an image + label-map split (``data.check``): the pairs of the dataset
mmseg builds, their files and sizes, and the pixels per class as the pipeline's
``LoadAnnotations`` labels them for training (the dataset's ``reduce_zero_label`` and
``label_map`` applied by mmseg's own code)."""
from __future__ import annotations

import os.path as osp
from collections import defaultdict
from typing import Tuple

import numpy as np
from PIL import Image

from ..errors import shorten
from .check_report import (DataReport, SplitStats, all_found, build_failed, data_path,
                           pipeline_transform, report_image_files)
from .images import decoded_size, decoder_of, inspect_image, orientation_note, parallel_map


def check_label_maps(phase: str, dataset: dict, built, classes: tuple, report: DataReport,
                     decode: bool) -> None:
    """An image + label-map split: the pairs of the dataset mmseg builds, their files and
    sizes, the pixels per class as mmseg's ``LoadAnnotations`` (the pipeline's) labels them."""
    from mmengine.registry import TRANSFORMS
    img_dir, seg_dir = (data_path(dataset, dataset['data_prefix'].get(key))
                        for key in ('img_path', 'seg_map_path'))
    if not all_found(phase, dataset, (img_dir, seg_dir), report):
        return
    where = f'{phase} ({img_dir})'
    try:
        built.full_init()
    except Exception as exc:  # noqa: BLE001 what listing the user's folders raises
        report.errors.append(build_failed(where, dataset, exc))
        return
    infos, ignore = built.data_list, built.ignore_index
    if not infos:
        report.errors.append(f'{where}: no images ending in {built.img_suffix}, so it would '
                             f'{"train" if phase == "train" else "evaluate"} on nothing')
        return
    loader = TRANSFORMS.build(pipeline_transform(dataset.get('pipeline'), 'LoadAnnotations')
                              or dict(type='LoadAnnotations'))
    read = parallel_map(lambda info: (inspect_image(info['img_path'], decode),
                                      *_load_label_map(loader, info)), infos)
    names = [osp.relpath(info['img_path'], img_dir) for info in infos]
    report_image_files(where, img_dir, names, [image for image, _, _ in read], report)
    stats = SplitStats(phase, images=len(infos), unit='pixels')
    decoder, problems, beyond = decoder_of(dataset.get('pipeline')), defaultdict(list), set()
    for name, info, (image, label, mode) in zip(names, infos, read):
        if not isinstance(label, np.ndarray):  # None: no such file; a string: why unreadable
            problems['missing' if label is None else 'unreadable'].append(
                f'{info["seg_map_path"]}' + (f' ({label})' if label else ''))
            continue
        if mode.startswith(('I', 'F')):  # 16 or 32 bits a pixel
            problems['wide'].append(f'{info["seg_map_path"]} ({mode})')
        size = decoded_size(image, *decoder)
        if size is not None and size != label.shape[1::-1]:
            note = orientation_note(image, *decoder)
            problems['wrong size'].append(f'{name} {size[0]}x{size[1]} vs label map '
                                          f'{label.shape[1]}x{label.shape[0]}'
                                          + (f' ({note})' if note else ''))
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        bad = values[(values >= len(classes)) & (values != ignore)]
        if bad.size:
            beyond.update(bad.tolist())
            problems['beyond'].append(name)
        for value in values[values < len(classes)]:
            stats.per_class[int(value)] += int(counts[value])
        stats.empty_images += not (values < len(classes)).any()
    texts = {'missing': f'of {len(infos)} images have no label map',
             'unreadable': 'label maps cannot be read',
             'wrong size': 'label maps are not the size of their image (as mmcv decodes it)'}
    report.errors += [f'{where}: {len(problems[k])} {text}: {shorten(problems[k])}'
                      for k, text in texts.items() if problems[k]]
    if beyond:
        shift = ' after reduce_zero_label (label - 1)' if built.reduce_zero_label else ''
        report.errors.append(
            f'{where}: label values {sorted(beyond)}{shift} are beyond the {len(classes)} '
            f'classes (0..{len(classes) - 1}) and not the ignore index {ignore}, in '
            f'{len(problems["beyond"])} label maps: {shorten(problems["beyond"])}')
    if problems['wide']:
        report.warnings.append(
            f"{where}: {len(problems['wide'])} label maps have 16 or 32 bits a pixel, which "
            "mmseg's LoadAnnotations casts to 8 (uint8): labels above 255 would wrap round "
            f"(the table counts them as it will): {shorten(problems['wide'])}")
    if stats.empty_images:
        report.warnings.append(f'{where}: {stats.empty_images} label maps hold only ignored '
                               'pixels')
    report.splits.append(stats)


def _load_label_map(loader, info: dict) -> Tuple[object, str]:
    """A label map as the pipeline's ``LoadAnnotations`` (mmseg's) gives it to training, with
    the dataset's ``reduce_zero_label`` and ``label_map`` applied, and the file's PIL mode
    (read from its header: the loader's cast to uint8 hides what a wider file held). The labels
    are ``None`` when there is no such file, a string saying why when it cannot be read."""
    path = info.get('seg_map_path')
    if not path or not osp.isfile(path):
        return None, ''
    try:
        with Image.open(path) as header:
            mode = header.mode
        return loader(dict(info, seg_fields=[]))['gt_seg_map'], mode  # info itself untouched
    except Exception as exc:  # noqa: BLE001 corrupt files raise what the decoder meets
        return f'{type(exc).__name__}: {exc}', ''

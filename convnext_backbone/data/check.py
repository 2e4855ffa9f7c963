"""The data check: what a config's datasets hold, and what would break or silently empty a run,
found before training starts (mmdet's "need at least one array to concatenate" and its kin).

The dataset is the one mmdet / mmseg build from the config, loaded and filtered as for the run
(its pipeline is not run), and what it decides, its own code decides here too: which annotations
``CocoDataset.parse_data_info`` keeps, which images ``filter_data`` leaves out, which masks
mmdet's ``LoadAnnotations`` ignores, the labels that mmseg's ``LoadAnnotations`` makes of a
label map. The check adds what no library does: a table of images and instances (or pixels) per
class (``check_report``), and words naming the rules and the files (``check_coco``,
``check_label_maps``, one module per layout).

Fatal (a ``DataError`` listing them all): missing files or folders; image files that are empty,
not images, of another size than their annotation (or label map) says, or (``decode``) that do
not decode; annotations of unknown images or categories; classes that mmdet would number
otherwise than the config; label maps missing or holding values beyond the classes; heads whose
``num_classes`` is not the dataset's; a training set without anything to learn from. Warnings:
what the rules drop, ignored masks, images without annotations, categories left out. Every
image's header is read (PIL, ``data.images``): see README.md for the rate.
"""
from __future__ import annotations

import copy
import json
from typing import Sequence

from mmengine.config import Config
from mmengine.logging import print_log

from ..errors import DataError
from .check_coco import check_coco
from .check_label_maps import check_label_maps
from .check_report import DataReport, build_failed
from .configure import class_heads, innermost_dataset
from .layouts import quote_names


def check_dataset(cfg: Config, phases: Sequence[str] = ('train', 'val', 'test'),
                  raise_errors: bool = True, decode: bool = False) -> DataReport:
    """Check the datasets of ``phases`` of a config (detection: COCO-format; segmentation:
    image + label-map folders), log the table and warnings, and raise ``DataError`` listing
    every fatal problem (unless ``raise_errors`` is False). ``decode``: decode every image
    fully (finds truncated files; a header read finds the rest)."""
    from mmengine.registry import DefaultScope
    report, seen = DataReport(), set()
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        for phase in phases:
            if not cfg.get(f'{phase}_dataloader'):
                continue
            dataset = innermost_dataset(cfg[f'{phase}_dataloader']['dataset'])
            key = json.dumps([dataset.get(k) for k in ('data_root', 'ann_file', 'data_prefix',
                                                       'filter_cfg', 'test_mode')],
                             sort_keys=True, default=str)
            if key not in seen:  # test often is val
                seen.add(key)
                _check_split(phase, dataset, report, decode)
        _check_heads(cfg, report)
    print_log('Data check:\n' + str(report), logger='current')
    if report.errors and raise_errors:
        raise DataError('The data does not fit the config:\n' +
                        '\n'.join(f'  - {e}' for e in report.errors))
    return report


def _check_split(phase: str, dataset: dict, report: DataReport, decode: bool) -> None:
    """One split: its dataset, built but not loaded (for its classes), then read by layout."""
    from mmengine.registry import DATASETS
    try:  # without a pipeline, nothing is read or transformed; full_init loads it as a run
        built = DATASETS.build(dict(copy.deepcopy(dataset), pipeline=[], serialize_data=False,
                                    lazy_init=True))
    except Exception as exc:  # noqa: BLE001 what a dataset's __init__ raises on user settings
        report.errors.append(build_failed(phase, dataset, exc))
        return
    classes = tuple(built.metainfo.get('classes') or ())  # metainfo over the type's METAINFO
    report.classes = report.classes or classes
    if str(dataset.get('ann_file', '')).endswith('.json') and hasattr(built, 'COCOAPI'):
        check_coco(phase, dataset, built, classes, report, decode)
    elif 'seg_map_path' in (dataset.get('data_prefix') or {}):
        check_label_maps(phase, dataset, built, classes, report, decode)
    else:
        report.warnings.append(f'{phase}: a {dataset.get("type")} dataset, which the data '
                               'check does not read')


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

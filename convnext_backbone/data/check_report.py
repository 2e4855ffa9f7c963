"""The data check's report (``data.check``): its statistics per split, the per-class table, and
the messages that the checks of both layouts (``check_coco``, ``check_label_maps``) share."""
from __future__ import annotations

import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from ..errors import shorten
from .images import ImageFile


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


def data_path(dataset: dict, relative: Optional[str]) -> str:
    """A path of a dataset config, under its ``data_root``."""
    return osp.join(dataset.get('data_root') or '', relative or '')


def all_found(phase: str, dataset: dict, paths: Sequence[str], report: DataReport) -> bool:
    """Whether a split's files and folders are there; an error naming the first that is not."""
    for path in paths:
        if not osp.exists(path):
            report.errors.append(
                f'{phase} data not found: {path} does not exist. Put the dataset under '
                f'{dataset.get("data_root") or "the data root"} as README.md describes, point '
                'the config at your own data (tools/train.py CONFIG --data DIR), or run a '
                'built-in demo (tools/make_demo_data.py and configs/demo/).')
            return False
    return True


def build_failed(where: str, dataset: dict, exc: Exception) -> str:
    """The error of a dataset that mmdet / mmseg cannot build or load."""
    return (f'{where}: its {dataset.get("type")} cannot be built from the config '
            f'({type(exc).__name__}: {exc}); mmdet / mmseg would fail the same way at the '
            'start of the run')


def report_image_files(where: str, folder: str, names: List[str], found: List[ImageFile],
                       report: DataReport) -> None:
    """Errors naming the image files that are not there, and those that are but cannot be
    used (empty, not images, not decoding)."""
    missing = [name for name, image in zip(names, found) if image.missing]
    if missing:
        report.errors.append(f'{where}: {len(missing)} of {len(names)} images are not in '
                             f'{folder}: {shorten(missing)}')
    unusable = [f'{name} ({image.problem})' for name, image in zip(names, found)
                if image.problem and not image.missing]
    if unusable:
        report.errors.append(f'{where}: {len(unusable)} of {len(names)} images cannot be used '
                             "(mmcv's LoadImageFromFile cannot decode them): "
                             f'{shorten(unusable)}')


def pipeline_transform(pipeline, name: str) -> Optional[dict]:
    """The first transform of a pipeline config of type ``name`` (with any scope prefix)."""
    return next((t for t in pipeline or [] if isinstance(t, dict)
                 and str(t.get('type', '')).split('.')[-1] == name), None)

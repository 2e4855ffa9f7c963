"""Finding a user's dataset in a folder: its splits, files and classes, read from the data.

Three layouts:
- ``coco``: COCO-format annotation JSONs (``annotations/instances_train2017.json``,
  ``annotations/train.json``, ``train.json``...) and image folders (``train2017/``,
  ``images/train/``, ``train/``, ... or paths inside the JSON's ``file_name``); classes are the
  annotation file's categories.
- ``masks``: ``images/{train,val}/`` and ``annotations/{train,val}/`` (PNG label maps, value i =
  class i, 255 = ignore), class names one per line in ``classes.txt``.
- ``ade20k``: ADE20K's own layout (``ADEChallengeData2016/{images,annotations}/{training,
  validation}``), its 150 classes.
Split folders may also be named ``training``/``validation``/``valid``.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import DataError, shorten

CLASSES_FILE = 'classes.txt'
# Split names, and the folder / file name parts each is known by.
SPLIT_NAMES = {'train': ('train', 'training'), 'val': ('val', 'valid', 'validation'),
               'test': ('test', 'testing')}
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
ADE_FOLDER = 'ADEChallengeData2016'


@dataclass
class Split:
    """One split of a dataset, paths relative to the layout's root."""
    ann_file: str = ''  # COCO: the annotation JSON
    img_dir: str = ''  # folder that the JSON's file names (or the images) are relative to
    seg_dir: str = ''  # masks / ADE20K: the label maps
    img_suffix: str = '.jpg'


@dataclass
class DataLayout:
    """A dataset found in a folder: its kind, root, splits and classes."""
    kind: str  # 'coco', 'masks' or 'ade20k'
    root: str
    splits: Dict[str, Split]
    classes: Tuple[str, ...] = ()
    category_ids: Tuple[int, ...] = ()  # COCO: the category id of each class
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        splits = ', '.join(f'{name}: {s.ann_file or s.img_dir}' for name, s in
                           self.splits.items())
        return (f'{self.kind} dataset in {self.root} ({splits}); {len(self.classes)} classes: '
                f'{quote_names(self.classes)}')


def quote_names(names: Iterable[str]) -> str:
    """``'a', 'b', ... 80 in all``: class names for messages."""
    return shorten(names, 8, quote=True)


def parse_split_overrides(items: Optional[Sequence[str]]) -> Dict[str, Tuple[str, str]]:
    """``['train=annotations/a.json:imgs/a', 'val=b.json']`` -> ``{'train': ('annotations/
    a.json', 'imgs/a'), 'val': ('b.json', '')}`` (for masks: ``train=images/a:labels/a``)."""
    overrides = {}
    for item in items or ():
        name, sep, value = item.partition('=')
        if not sep or name not in SPLIT_NAMES:
            raise DataError(f'--data-split takes SPLIT=PATH[:PATH] with SPLIT one of '
                            f'{", ".join(SPLIT_NAMES)}; got {item!r}')
        first, _, second = value.partition(':')
        overrides[name] = (first, second)
    return overrides


def find_layout(root: str, stack: str,
                overrides: Optional[Dict[str, Tuple[str, str]]] = None) -> DataLayout:
    """The dataset in ``root`` for a detection (``stack='mmdet'``) or segmentation
    (``'mmseg'``) config; ``overrides`` name split files or folders (``parse_split_overrides``)."""
    if not osp.isdir(root):
        raise DataError(f'--data {root}: no such folder')
    overrides = overrides or {}
    if stack == 'mmdet':
        return _find_coco(root, overrides)
    if osp.isdir(osp.join(root, ADE_FOLDER)):
        root = osp.join(root, ADE_FOLDER)
    if osp.basename(osp.normpath(root)) == ADE_FOLDER and not overrides:
        return _find_ade20k(root)
    return _find_masks(root, overrides)


# ------------------------------------------------------------------------------------ COCO
def _find_coco(root: str, overrides: Dict[str, Tuple[str, str]]) -> DataLayout:
    jsons = sorted(osp.relpath(osp.join(folder, name), root)
                   for folder in (root, osp.join(root, 'annotations')) if osp.isdir(folder)
                   for name in os.listdir(folder) if name.endswith('.json'))
    splits: Dict[str, Split] = {}
    for split, names in SPLIT_NAMES.items():
        if split in overrides:
            ann_file, img_dir = overrides[split]
            if not osp.isfile(osp.join(root, ann_file)):
                raise DataError(f'--data-split {split}: {osp.join(root, ann_file)} not found')
        else:
            ann_file = _pick_json(jsons, names)
            img_dir = ''
            if ann_file is None:
                continue
        data = _load_json(root, ann_file)
        if split == 'test' and not data['annotations']:
            continue  # image lists without annotations (COCO's test-dev): evaluate on val
        splits[split] = Split(ann_file=ann_file, img_dir=img_dir or _find_image_dir(
            root, ann_file, names, data['images']))
    if 'train' not in splits:
        segmentation = osp.isfile(osp.join(root, CLASSES_FILE)) or osp.isdir(osp.join(root,
                                                                                     ADE_FOLDER))
        raise DataError(
            f'No COCO-format training annotations in {root}: expected a JSON named like '
            f'annotations/instances_train2017.json, annotations/train.json or train.json (found: '
            f'{", ".join(jsons) or "no JSON files"}); name it with --data-split '
            'train=ANNOTATIONS.json[:IMAGE_FOLDER]' +
            ('. It looks like a segmentation dataset, which a detection config cannot use'
             if segmentation else ''))
    if 'val' not in splits:
        raise DataError(f'No COCO-format validation annotations in {root} (found: '
                        f'{", ".join(jsons)}); name them with --data-split val=ANNOTATIONS.json')
    classes, ids = _coco_classes(root, splits)
    return DataLayout('coco', root, splits, classes, ids)


def _pick_json(jsons: List[str], names: Sequence[str]) -> Optional[str]:
    """The annotation file of a split: ``instances_<name>2017.json`` first, then any JSON
    whose file name has the split's name as a word (not captions or keypoints files)."""
    def words(path):
        return osp.splitext(osp.basename(path))[0].replace('-', '_').split('_')

    for prefer in ('instances', None):
        for path in jsons:
            parts = words(path)
            if prefer and prefer not in parts:
                continue
            if any(p in names or p.rstrip('0123456789') in names for p in parts) and not \
                    {'captions', 'person_keypoints', 'keypoints'} & set(parts):
                return path
    return None


def _load_json(root: str, ann_file: str) -> dict:
    path = osp.join(root, ann_file)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f'Cannot read the annotation file {path}: {exc}') from None
    if not isinstance(data, dict) or not {'images', 'annotations', 'categories'} <= set(data):
        raise DataError(f'{path} is not a COCO-format annotation file: it needs "images", '
                        '"annotations" and "categories"')
    return data


def _find_image_dir(root: str, ann_file: str, names: Sequence[str], images: List[dict]) -> str:
    """The folder that the split's ``file_name``s are relative to: the candidate that holds
    most of the first (up to 20) images (the data check names any that are missing)."""
    stem = osp.splitext(osp.basename(ann_file))[0].replace('instances_', '')
    candidates = list(dict.fromkeys([stem, f'images/{stem}', *[c for n in names for c in (
        f'{n}2017', f'images/{n}', n, f'{n}2014')], 'images', '']))
    sample = [im['file_name'] for im in images[:20] if 'file_name' in im]
    if not sample:
        return ''
    hits = [sum(osp.isfile(osp.join(root, folder, name)) for name in sample)
            for folder in candidates]
    if max(hits) == 0:
        raise DataError(
            f'Cannot find the images of {osp.join(root, ann_file)}: its first file_name '
            f'{sample[0]!r} is in none of {", ".join(repr(c) for c in candidates)} under {root}. '
            f'Name the folder with --data-split SPLIT={ann_file}:IMAGE_FOLDER')
    return candidates[hits.index(max(hits))]


def _coco_classes(root: str, splits: Dict[str, Split]) -> Tuple[Tuple[str, ...],
                                                                  Tuple[int, ...]]:
    """Class names in the order mmdet's CocoDataset gives labels (the file's order of the
    categories, which is by id in COCO's own files); every split must list the same."""
    found = {}
    for name, split in splits.items():
        categories = _load_json(root, split.ann_file)['categories']
        found[name] = tuple((c['id'], c['name']) for c in categories)
    train = found['train']
    if not train:
        raise DataError(f'{osp.join(root, splits["train"].ann_file)} has no categories')
    names = [n for _, n in train]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(f'{osp.join(root, splits["train"].ann_file)} names several categories '
                        f'{quote_names(duplicated)}; mmdet tells classes apart by name')
    for name, categories in found.items():
        if categories and categories != train:
            raise DataError(
                f'The {name} annotations ({splits[name].ann_file}) list other categories than '
                f'the training ones ({splits["train"].ann_file}), or in another order: '
                f'{quote_names([n for _, n in categories])} vs {quote_names(names)}. Labels '
                'follow the order of the file: make the lists the same.')
    return tuple(names), tuple(i for i, _ in train)


# ------------------------------------------------------------------------ masks / ADE20K
def _find_masks(root: str, overrides: Dict[str, Tuple[str, str]]) -> DataLayout:
    classes_path = osp.join(root, CLASSES_FILE)
    if not osp.isfile(classes_path):
        raise DataError(f'{root} has no {CLASSES_FILE}: a segmentation folder names its classes '
                        f'there, one per line, in label order (line 1 is label 0). The folder '
                        f'holds images/{{train,val}}/ and annotations/{{train,val}}/ (PNG label '
                        'maps, 255 = ignore), or is ADE20K\'s ADEChallengeData2016.')
    with open(classes_path) as f:
        classes = tuple(line.strip() for line in f if line.strip())
    if not classes:
        raise DataError(f'{classes_path} names no classes')
    splits = {}
    for split, names in SPLIT_NAMES.items():
        if split in overrides:
            img_dir, seg_dir = overrides[split]
        else:
            img_dir = next((f'images/{n}' for n in names
                            if osp.isdir(osp.join(root, 'images', n))), None)
            seg_dir = next((f'annotations/{n}' for n in names
                            if osp.isdir(osp.join(root, 'annotations', n))), None)
            if img_dir is None:
                continue
        if not seg_dir or not osp.isdir(osp.join(root, seg_dir)):
            raise DataError(f'{root}: the {split} images ({img_dir}) have no label map folder '
                            f'(expected annotations/{names[0]}/)')
        splits[split] = Split(img_dir=img_dir, seg_dir=seg_dir,
                              img_suffix=_image_suffix(osp.join(root, img_dir)))
    for needed in ('train', 'val'):
        if needed not in splits:
            raise DataError(f'{root}: no {needed} images (expected images/{needed}/ and '
                            f'annotations/{needed}/, or --data-split {needed}=IMAGES:LABELS)')
    return DataLayout('masks', root, splits, classes)


def _image_suffix(folder: str) -> str:
    suffixes = [osp.splitext(n)[1].lower() for n in os.listdir(folder)]
    found = [s for s in IMAGE_SUFFIXES if s in suffixes]
    if not found:
        raise DataError(f'{folder} holds no images ({", ".join(IMAGE_SUFFIXES)})')
    if len(found) > 1:
        raise DataError(f'{folder} mixes image types {", ".join(found)}; use one')
    # the file's own spelling (.JPG), which mmseg matches exactly
    return next(osp.splitext(n)[1] for n in os.listdir(folder)
                if osp.splitext(n)[1].lower() == found[0])


def _find_ade20k(root: str) -> DataLayout:
    splits = {}
    for split, folder in (('train', 'training'), ('val', 'validation')):
        img_dir, seg_dir = f'images/{folder}', f'annotations/{folder}'
        if not osp.isdir(osp.join(root, img_dir)) or not osp.isdir(osp.join(root, seg_dir)):
            raise DataError(f'{root} lacks {img_dir} or {seg_dir} of the ADE20K layout')
        splits[split] = Split(img_dir=img_dir, seg_dir=seg_dir)
    return DataLayout('ade20k', root, splits)

"""Deterministic generators of small COCO- and ADE20K-layout datasets of coloured shapes.

COCO and ADE20K cannot be downloaded everywhere, so the demos and end-to-end tests run on data
made here, written in the real layouts so that mmdet's ``CocoDataset``/``CocoMetric`` and mmseg's
``ADE20KDataset``/``IoUMetric`` run unchanged. Same seed, same files.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('circle', 'square', 'triangle')  # the COCO demo's categories, ids 1..3
# The ADE20K demo uses a few of ADE20K's 150 classes (label = index in ADE20K's list + 1, since
# label 0 is "ignore" and mmseg's reduce_zero_label shifts it away).
ADE_CLASSES = {'wall': 1, 'floor': 4, 'bed': 8, 'table': 16, 'car': 21}


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    corners = {'circle': 32, 'square': 4, 'triangle': 3}[kind]
    return [(cx + r * math.cos(angle + 2 * math.pi * k / corners),
             cy + r * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    # A smooth random gradient plus noise, so that shapes are not found by colour alone.
    base = rng.integers(40, 200, size=3)
    ramp = np.linspace(-30, 30, size)[None, :, None] * rng.uniform(-1, 1, size=3)
    img = base + ramp + rng.normal(0, 8, size=(size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


# Each object class has its own colour family (as real classes have their own appearance), so
# that a from-scratch model tells them apart within the few minutes a CPU demo can train;
# telling the shape from the background and drawing its mask still has to be learned.
_CLASS_COLOURS = {'circle': (220, 60, 60), 'square': (60, 200, 60), 'triangle': (60, 90, 230),
                  'bed': (220, 60, 60), 'table': (60, 200, 60), 'car': (60, 90, 230)}


def _class_colour(rng: np.random.Generator, name: str) -> Tuple[int, ...]:
    jitter = rng.integers(-35, 36, size=3)
    return tuple(int(c) for c in np.clip(np.add(_CLASS_COLOURS[name], jitter), 0, 255))


def _random_shapes(rng: np.random.Generator, size: int, count: int):
    shapes = []
    for _ in range(count):
        kind = SHAPES[rng.integers(len(SHAPES))]
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        polygon = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
        shapes.append((kind, polygon, _class_colour(rng, kind)))
    return shapes


def make_coco_shapes(root: str, num_train: int = 300, num_val: int = 60, size: int = 192,
                     max_objects: int = 4, seed: int = 0) -> Dict[str, str]:
    """Write ``root/{train2017,val2017}/*.jpg`` and ``root/annotations/instances_*.json``.

    Each image holds 1..max_objects shapes (circle, square, triangle, each in its own colour
    family) on a noisy gradient background. Shapes may overlap: later ones occlude earlier
    ones, and the masks say so (the visible region, rasterized).
    Returns the annotation file paths.
    """
    rng = np.random.default_rng(seed)
    paths = {}
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            img = _background(rng, size)
            draw = ImageDraw.Draw(img)
            instance_map = Image.new('I', (size, size), 0)
            instance_draw = ImageDraw.Draw(instance_map)
            shapes = _random_shapes(rng, size, int(rng.integers(1, max_objects + 1)))
            for index, (_, polygon, colour) in enumerate(shapes, start=1):
                draw.polygon(polygon, fill=colour)
                instance_draw.polygon(polygon, fill=index)
            file_name = f'{image_id:06d}.jpg'
            img.save(os.path.join(root, split, file_name), quality=95)
            images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
            visible = np.asarray(instance_map)
            for index, (kind, polygon, _) in enumerate(shapes, start=1):
                ys, xs = np.nonzero(visible == index)
                if len(xs) < 20:  # almost fully occluded: not an object any more
                    continue
                # The visible region as a run-length mask (COCO's uncompressed RLE).
                mask = (visible == index).astype(np.uint8)
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id,
                    category_id=SHAPES.index(kind) + 1, iscrowd=0, area=int(mask.sum()),
                    bbox=[int(x0), int(y0), int(x1 - x0), int(y1 - y0)],
                    segmentation=_rle(mask)))
        ann = dict(images=images, annotations=annotations,
                   categories=[dict(id=i + 1, name=n, supercategory='shape')
                               for i, n in enumerate(SHAPES)])
        os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
        paths[split] = os.path.join(root, 'annotations', f'instances_{split}.json')
        with open(paths[split], 'w') as f:
            json.dump(ann, f)
    return paths


def _rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major flattened mask, starting with
    a run of zeros."""
    flat = mask.flatten(order='F')
    changes = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], changes, [flat.size]]))
    counts = runs.tolist() if flat[0] == 0 else [0] + runs.tolist()
    return dict(size=list(mask.shape), counts=counts)


def _scene(rng: np.random.Generator, size: int) -> Tuple[Image.Image, Image.Image]:
    """A scene: a "wall" top (noisy gradient) and a "floor" bottom (flat colour), with a few
    "bed" (square), "table" (triangle) and "car" (circle) shapes, each class in its own colour
    family; and its label map in ADE20K's values (``ADE_CLASSES``), 0 (ignore) on a thin
    border."""
    objects = [('bed', 'square'), ('table', 'triangle'), ('car', 'circle')]
    horizon = int(rng.uniform(0.35, 0.65) * size)
    img = _background(rng, size)
    label = Image.new('L', (size, size), ADE_CLASSES['wall'])
    draw, label_draw = ImageDraw.Draw(img), ImageDraw.Draw(label)
    floor = tuple(int(c) for c in rng.integers(0, 256, size=3))
    draw.rectangle([0, horizon, size, size], fill=floor)
    label_draw.rectangle([0, horizon, size, size], fill=ADE_CLASSES['floor'])
    for _ in range(int(rng.integers(1, 4))):
        name, kind = objects[rng.integers(len(objects))]
        r = rng.uniform(0.1, 0.22) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        polygon = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
        draw.polygon(polygon, fill=_class_colour(rng, name))
        label_draw.polygon(polygon, fill=ADE_CLASSES[name])
    label_draw.rectangle([0, 0, size - 1, size - 1], outline=0)  # ignored border
    return img, label


def make_ade_shapes(root: str, num_train: int = 200, num_val: int = 40, size: int = 128,
                    seed: int = 0) -> str:
    """Write ``root/ADEChallengeData2016/{images,annotations}/{training,validation}`` with
    scenes of ``_scene`` (ADE20K's label values). Returns the dataset root."""
    rng = np.random.default_rng(seed)
    data_root = os.path.join(root, 'ADEChallengeData2016')
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir = os.path.join(data_root, 'images', split)
        ann_dir = os.path.join(data_root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            img, label = _scene(rng, size)
            name = f'ADE_{split[:5]}_{index:08d}'
            img.save(os.path.join(img_dir, name + '.jpg'), quality=95)
            label.save(os.path.join(ann_dir, name + '.png'))
    return data_root


def make_mask_shapes(root: str, num_train: int = 200, num_val: int = 40, size: int = 128,
                     seed: int = 0) -> str:
    """Write a segmentation dataset in the plain mask-folder layout that ``--data`` reads:
    ``images/{train,val}/*.jpg``, ``annotations/{train,val}/*.png`` (label i = line i of
    ``classes.txt``, 255 = ignore) and ``classes.txt``; the scenes of ``_scene``."""
    rng = np.random.default_rng(seed)
    names = list(ADE_CLASSES)
    lut = np.full(256, 255, np.uint8)  # ADE values -> 0..4, border (0) -> ignore
    for index, name in enumerate(names):
        lut[ADE_CLASSES[name]] = index
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(os.path.join(root, 'images', split), exist_ok=True)
        os.makedirs(os.path.join(root, 'annotations', split), exist_ok=True)
        for index in range(count):
            img, label = _scene(rng, size)
            img.save(os.path.join(root, 'images', split, f'{index:05d}.jpg'), quality=95)
            Image.fromarray(lut[np.asarray(label)]).save(
                os.path.join(root, 'annotations', split, f'{index:05d}.png'))
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(names) + '\n')
    return root

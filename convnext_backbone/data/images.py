"""Image files as a run will read them, for the data check: what PIL finds in a file's header
(its size, format and EXIF orientation; ``Image.open`` reads nothing more), the size mmcv's
decoder will give, and, when asked, a full decode that finds truncated or corrupt files.

mmcv's ``LoadImageFromFile`` (``imdecode_backend='cv2'``, ``color_type='color'`` by default)
decodes with ``cv2.IMREAD_COLOR``, which applies a JPEG's EXIF orientation: a file stored 640x480
with orientation 6 (rotated 90 degrees) becomes a 480x640 image. So do the ``'pillow'`` backend
and ``'grayscale'``; ``'unchanged'`` and the ``'*_ignore_orientation'`` colour types do not, nor
the ``'turbojpeg'`` and ``'tifffile'`` backends. mmseg reads label maps ``'unchanged'``.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

EXIF_ORIENTATION = 0x0112
# EXIF orientations that swap width and height (the others keep the size).
TRANSPOSING = {5: 'transposed', 6: 'rotated 90 degrees', 7: 'transversed',
               8: 'rotated 270 degrees'}
# mmcv's backends and colour types that apply the EXIF orientation when decoding.
ORIENTING_BACKENDS = ('cv2', 'pillow')
ORIENTING_COLOR_TYPES = ('color', 'grayscale')
LOADERS = ('LoadImageFromFile', 'LoadImageOrSkip')


@dataclass(frozen=True)
class ImageFile:
    """What the check learnt of one image file."""
    path: str
    size: Optional[Tuple[int, int]] = None  # (width, height) as stored
    orientation: int = 1  # EXIF orientation, 1 when none
    format: str = ''  # PIL's name of the file format ('JPEG', 'PNG'...)
    problem: str = ''  # why it cannot be used; '' when it can
    missing: bool = False  # no such file (``problem`` says so too)


def inspect_image(path: str, decode: bool = False) -> ImageFile:
    """Read ``path``'s header (size, format, EXIF orientation) and, with ``decode``, all of its
    pixels. A file that is not there, empty, not an image or (``decode``) that does not decode
    to the end comes back with ``problem`` saying so, not with an exception."""
    try:
        if os.path.getsize(path) == 0:
            return ImageFile(path, problem='an empty file (0 bytes)')
        with Image.open(path) as image:
            size, file_format = image.size, image.format or ''
            orientation = 1
            if 'exif' in image.info:  # parsed from the header; getexif() would decode a PNG
                orientation = int(image.getexif().get(EXIF_ORIENTATION) or 1)
            if decode:
                image.load()
    except FileNotFoundError:
        return ImageFile(path, problem='not found', missing=True)
    except UnidentifiedImageError:
        return ImageFile(path, problem='not an image (PIL cannot identify its format)')
    except Exception as exc:  # noqa: BLE001 corrupt files raise what the decoder meets
        what = 'does not decode' if decode else 'has an unreadable header'
        return ImageFile(path, problem=f'{what}: {type(exc).__name__}: {exc}')
    return ImageFile(path, size, orientation, file_format)


def inspect_images(paths: Sequence[str], decode: bool = False) -> List[ImageFile]:
    """``inspect_image`` of every path, in order. Headers are read in this thread (PIL parses
    them in Python under the GIL: threads only slow it down); full decodes run on a thread per
    CPU (PIL's decoders release the GIL)."""
    return parallel_map(lambda path: inspect_image(path, decode), paths, threads=decode)


def parallel_map(function: Callable, items: Iterable, threads: bool = True) -> list:
    """``list(map(function, items))``, on a pool of one thread per CPU (at most 8) when
    ``threads`` and there is more than one CPU."""
    workers = min(8, os.cpu_count() or 1)
    if not threads or workers == 1:
        return list(map(function, items))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def decoder_of(pipeline) -> Tuple[str, str]:
    """(``imdecode_backend``, ``color_type``) of a pipeline's image loader (mmcv's defaults,
    ``('cv2', 'color')``, when it names none or has no ``LoadImageFromFile``)."""
    for transform in pipeline or []:
        if isinstance(transform, dict) and str(transform.get('type', '')).split('.')[-1] \
                in LOADERS:
            return (transform.get('imdecode_backend', 'cv2'),
                    transform.get('color_type', 'color'))
    return 'cv2', 'color'


def decoded_size(image: ImageFile, backend: str = 'cv2',
                 color_type: str = 'color') -> Optional[Tuple[int, int]]:
    """(width, height) of the array mmcv's ``imfrombytes(backend, flag=color_type)`` makes
    of ``image``: the stored size, swapped when the EXIF orientation transposes it and the
    decoder applies it."""
    if image.size is None:
        return None
    width, height = image.size
    if image.orientation in TRANSPOSING and backend in ORIENTING_BACKENDS \
            and color_type in ORIENTING_COLOR_TYPES:
        return height, width
    return width, height


def orientation_note(image: ImageFile, backend: str = 'cv2', color_type: str = 'color') -> str:
    """Words on how ``image``'s EXIF orientation changes its decoded size ('' when it does
    not), and what to do about it."""
    if image.orientation not in TRANSPOSING or image.size is None:
        return ''
    width, height = image.size
    turn = TRANSPOSING[image.orientation]
    if backend in ORIENTING_BACKENDS and color_type in ORIENTING_COLOR_TYPES:
        return (f"stored {width}x{height} with EXIF orientation {image.orientation} ({turn}), "
                f"which mmcv's decoder ({backend}, color_type={color_type!r}) applies, giving "
                f'{height}x{width}: annotate the turned image, or store it turned without the '
                "tag (PIL's ImageOps.exif_transpose), or load with color_type="
                "'color_ignore_orientation'")
    return (f'EXIF orientation {image.orientation} ({turn}) would make it {height}x{width}, '
            f"but mmcv's decoder ({backend}, color_type={color_type!r}) ignores the tag: load "
            "with color_type='color' (imdecode_backend 'cv2' or 'pillow') to turn it")

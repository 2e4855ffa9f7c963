"""Training goes on past an image that cannot be loaded, and its log names the file.

The data check (``data.check``) reads every image's header before a run, but a file can still
fail to load during it: truncated or corrupt pixels behind a good header (the check finds those
only with ``tools/check_data.py --decode``), or a file changed or gone since the check. mmcv's
``LoadImageFromFile`` then raises in a dataloader worker and the run ends, hours in, often
without the file's name (an empty file gives a bare OpenCV assertion); its ``ignore_empty=True``
skips the file without a word instead.

``LoadImageOrSkip`` logs the file and the reason as a warning and returns ``None``, for which
mmengine's ``BaseDataset.__getitem__`` loads another random sample in its place (up to its
``max_refetch``). Each process of a distributed run does this alone, within its own
``__getitem__``, so no rank waits on another: nothing can deadlock. A run whose images are all
gone (a lost mount) stops after ``max_failures_in_a_row`` consecutive failures, naming them.

Only training pipelines use it (``skip_unreadable_training_images``): in test mode the dataset
refuses ``None``, and evaluating without an image would change the metric, so val and test keep
mmcv's loader, which stops at the file.
"""
from __future__ import annotations

import logging
from typing import List, Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

from ..errors import DataError, shorten
from .images import inspect_image

MODULE = __name__


@TRANSFORMS.register_module()
class LoadImageOrSkip(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (same arguments) for training pipelines: an image that
    cannot be read or decoded is logged by name and skipped (``None``: the dataset takes
    another sample). ``ignore_empty`` is ignored: nothing is skipped without a log line.
    ``max_failures_in_a_row`` consecutive failures in one process raise ``DataError``."""

    def __init__(self, max_failures_in_a_row: int = 20, **kwargs):
        kwargs['ignore_empty'] = False
        super().__init__(**kwargs)
        self.max_failures_in_a_row = max_failures_in_a_row
        self._failures: List[str] = []  # the consecutive ones, in this process

    def transform(self, results: dict) -> Optional[dict]:
        """mmcv's loading; on a failure, the warning and ``None``."""
        path = results.get('img_path')
        try:
            loaded = super().transform(results)
        except Exception as exc:  # noqa: BLE001 what the reader or decoder raises
            reason = self._reason(path, exc)
            self._failures.append(f'{path} ({reason})')
            print_log(f'Skipping training image {path}: cannot load it ({reason}); the run goes '
                      'on with another image in its place. tools/check_data.py CONFIG --decode '
                      'lists all such files.', logger='current', level=logging.WARNING)
            if len(self._failures) >= self.max_failures_in_a_row:
                raise DataError(f'{len(self._failures)} training images in a row cannot be '
                                f'loaded: {shorten(self._failures)}. Is the data still there? '
                                'Check it with tools/check_data.py CONFIG --decode.') from None
            return None
        self._failures.clear()
        return loaded

    def _reason(self, path: str, exc: Exception) -> str:
        """Why ``path`` did not load, in words: what PIL finds in a local file (empty, not an
        image, truncated...), else the loader's exception."""
        local = self.backend_args is None and self.file_client_args is None
        problem = inspect_image(path, decode=True).problem if local and path else ''
        return problem or str(exc).strip() or type(exc).__name__


def skip_unreadable_training_images(cfg) -> List[str]:
    """Make a config's training pipelines (of the dataset and of any wrapper around it) load
    images with ``LoadImageOrSkip`` instead of ``LoadImageFromFile``, keeping its arguments,
    and import this module through ``custom_imports`` (for the work dir's copy of the config;
    importing this function has registered it already). Returns what was changed, in words."""
    changed = []
    loader = cfg.get('train_dataloader')
    dataset = loader.get('dataset') if loader else None
    path = 'train_dataloader.dataset'
    while isinstance(dataset, dict):
        for index, transform in enumerate(dataset.get('pipeline') or []):
            if isinstance(transform, dict) and transform.get('type') == 'LoadImageFromFile':
                transform['type'] = 'LoadImageOrSkip'
                changed.append(f'{path}.pipeline.{index}: LoadImageOrSkip')
        dataset, path = dataset.get('dataset'), f'{path}.dataset'
    if changed:
        imports = dict(cfg.get('custom_imports') or dict(imports=[]))
        names = imports.get('imports') or []
        names = [names] if isinstance(names, str) else list(names)
        if MODULE not in names:
            imports['imports'] = names + [MODULE]
            cfg['custom_imports'] = imports
    return changed

"""The errors the package raises for what a user gave it, and how their messages list things.

A leaf: imports nothing of the package, so every layer can raise these. The command-line tools
end with the message and exit status 1 on any of them (``cli.run_tool``), not with a traceback.
"""
from __future__ import annotations

from typing import Iterable


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DataError(ValueError):
    """A dataset that cannot be used: missing files, no classes, no annotations..."""


class DeviceError(RuntimeError):
    """The run's device cannot run what the config needs (mmcv's compiled ops)."""


class DeployError(ValueError):
    """A model that cannot be exported, or an exported file that cannot run what it is given
    (another config, other classes, an image of another size)."""


def shorten(items: Iterable, limit: int = 5, quote: bool = False, unit: str = '') -> str:
    """The first ``limit`` items, comma-separated, and how many there are in all:
    ``"'a', 'b', ... 7 in all"`` (``quote``: as ``repr``); ``'none'`` for no items. ``unit``
    names what is counted (``'... 12 modules in all'``)."""
    items = list(items)
    if not items:
        return 'none'
    shown = ', '.join(repr(i) if quote else str(i) for i in items[:limit])
    if len(items) <= limit:
        return shown
    return f'{shown}, ... {len(items)}{" " + unit if unit else ""} in all'

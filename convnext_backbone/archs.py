"""The ConvNeXt sizes: the one table of depths and widths, and how to name a size in messages.

Kept apart from the model so that checkpoint code can name what a file holds without importing
the model (and the model can import the checkpoint code without a circle).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

# The one table of ConvNeXt sizes: name -> (blocks per stage, channels per stage).
ARCH_SETTINGS: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    'atto': ((2, 2, 6, 2), (40, 80, 160, 320)),
    'femto': ((2, 2, 6, 2), (48, 96, 192, 384)),
    'pico': ((2, 2, 6, 2), (64, 128, 256, 512)),
    'nano': ((2, 2, 8, 2), (80, 160, 320, 640)),
    'tiny': ((3, 3, 9, 3), (96, 192, 384, 768)),
    'small': ((3, 3, 27, 3), (96, 192, 384, 768)),
    'base': ((3, 3, 27, 3), (128, 256, 512, 1024)),
    'large': ((3, 3, 27, 3), (192, 384, 768, 1536)),
    'xlarge': ((3, 3, 27, 3), (256, 512, 1024, 2048)),
    'xxlarge': ((3, 4, 30, 3), (384, 768, 1536, 3072)),
    'huge': ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
# Which sizes each version was published in (official V1/V2 releases).
PUBLISHED_ARCHS: Dict[str, Tuple[str, ...]] = {
    'v1': ('atto', 'femto', 'pico', 'nano', 'tiny', 'small', 'base', 'large', 'xlarge',
           'xxlarge'),
    'v2': ('atto', 'femto', 'pico', 'nano', 'tiny', 'base', 'large', 'huge'),
}


def arch_name(depths: Sequence[int], widths: Sequence[int]) -> Optional[str]:
    """The table's name for these depths and widths, or None."""
    for name, (arch_depths, arch_widths) in ARCH_SETTINGS.items():
        if tuple(depths) == arch_depths and tuple(widths) == arch_widths:
            return name
    return None


def describe_arch(depths: Sequence[int], widths: Sequence[int], version: str = 'v1') -> str:
    """``'ConvNeXt femto (widths 48..384)'``, ``'ConvNeXt-V2 tiny (widths 96..768)'``, or the
    depths and widths of a size that is not in the table."""
    family = 'ConvNeXt-V2' if version == 'v2' else 'ConvNeXt'
    name = arch_name(depths, widths)
    if name is None:
        return (f'{family} of depths {",".join(map(str, depths))} and widths '
                f'{",".join(map(str, widths))}')
    return f'{family} {name} (widths {widths[0]}..{widths[-1]})'

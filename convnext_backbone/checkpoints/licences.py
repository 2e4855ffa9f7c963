"""The terms under which the published ConvNeXt weights may be used, by URL: what
``tools/download_weights.py`` prints beside each file. The terms in full, with their sources:
docs/weights.md, "Licences of the weights".
"""
from __future__ import annotations

import re
from typing import Optional

V1_TERMS = 'MIT (facebookresearch/ConvNeXt)'
V2_TERMS = ('CC-BY-NC 4.0: non-commercial use only, with attribution '
            '(facebookresearch/ConvNeXt-V2 weights)')
# ConvNeXt-V2 weights wherever they are published: the official files (.../convnextv2/...),
# mmpretrain's conversions (.../convnext-v2/...), timm's and Hugging Face's (convnextv2_*).
V2_URL = re.compile(r'convnext[-_]?v2', re.IGNORECASE)
# The official ConvNeXt (V1) release files.
V1_URL = re.compile(r'^https?://dl\.fbaipublicfiles\.com/convnext/convnext_')


def weights_licence(url: str) -> Optional[str]:
    """The terms of the weights at ``url`` in a few words; None where this package does not
    know them (weights of other publishers: see where they come from)."""
    if V2_URL.search(url):
        return V2_TERMS
    if V1_URL.match(url):
        return V1_TERMS
    return None

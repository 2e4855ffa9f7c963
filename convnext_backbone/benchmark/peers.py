"""The benchmark's peers: our ConvNeXt, timm's and mmpretrain's, built for one arch with the
same weights, so that they compute the same function and their times compare.

Our weights reach the peers through the checkpoint converters (``to_timm``, ``to_mmpretrain``),
the inverses of those that load the peers' published checkpoints into ours; every peer loads
them key for key, so that a converter's mistake fails here instead of leaving a peer with
random weights (which would time the same, and compare wrongly).
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence

import timm
import torch
from timm.models import FeatureListNet
from torch import nn

from ..backbone import LN_EPS, ConvNeXt
from ..checkpoints.imagenet import StateDict, to_mmpretrain, to_timm

# Every peer the benchmark knows, ours first (``--peers`` chooses among them).
PEERS = ('convnext_backbone', 'timm', 'mmpretrain')
# Our per-stage output norms: timm's model has none (``TimmWithNorms`` adds them).
OUTPUT_NORM_KEYS = re.compile(r'^norm[0-3]\.')


class TimmWithNorms(nn.Module):
    """timm's features-only ConvNeXt plus one channels-first LayerNorm per stage, as ours has,
    so that the two do the same work."""

    def __init__(self, body: FeatureListNet) -> None:
        super().__init__()
        self.body = body
        self.norms = nn.ModuleList(
            timm.layers.LayerNorm2d(c, eps=LN_EPS) for c in body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> tuple:
        return tuple(norm(f) for norm, f in zip(self.norms, self.body(x)))


def timm_peer(arch: str, version: str, weights: StateDict, *, with_cp: bool = False,
              output_stride: int = 32) -> TimmWithNorms:
    """timm's ConvNeXt of ``arch`` with ``weights`` (official layout, with our output norms),
    dilated past ``output_stride`` as timm does it (ours follows timm there).

    The whole model loads ``to_timm(weights)`` (all but its classifier head, which the weights
    lack), then timm's own ``FeatureListNet`` wraps it, as ``features_only=True`` does: a
    features-only model renames its modules (``stem_0``, ``stages_1``), the full one does not.
    """
    name = f'convnext_{arch}' if version == 'v1' else f'convnextv2_{arch}'
    full = timm.create_model(name, pretrained=False, output_stride=output_stride)
    expected = full.state_dict()
    converted = to_timm(weights)
    # timm's smallest models (atto to nano) have 1x1 convolutions for the MLP: their weights
    # are (out, in, 1, 1) where ours (and to_timm's) are the Linear's (out, in).
    result = full.load_state_dict(
        {k: v.reshape(expected[k].shape) for k, v in converted.items() if k in expected},
        strict=False)
    missing = [k for k in result.missing_keys if not k.startswith('head.')]
    unused = [k for k in converted if k not in expected and not OUTPUT_NORM_KEYS.match(k)]
    if missing or unused:
        raise RuntimeError(f'to_timm does not fit timm {name}: missing {missing}, '
                           f'unused {unused}')
    peer = TimmWithNorms(FeatureListNet(full, out_indices=(0, 1, 2, 3), flatten_sequential=True))
    peer.norms.load_state_dict(
        {f'{i}.{p}': weights[f'norm{i}.{p}'] for i in range(4) for p in ('weight', 'bias')})
    if with_cp:
        peer.body.set_grad_checkpointing(True)
    return peer


def mmpretrain_peer(arch: str, version: str, weights: StateDict, *,
                    with_cp: bool = False) -> Optional[nn.Module]:
    """mmpretrain's dense ConvNeXt backbone of ``arch`` with ``weights`` (loaded strictly);
    None where mmpretrain cannot be imported (it needs mmcv, absent e.g. on a GPU machine with
    torch alone)."""
    try:
        from mmpretrain.models.backbones import ConvNeXt as PretrainConvNeXt
    except ImportError:
        return None
    # Its V2 is V1 with GRN and without layer scale, as ours.
    extra = dict(use_grn=True, layer_scale_init_value=0.) if version == 'v2' else {}
    model = PretrainConvNeXt(arch=arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                             with_cp=with_cp, **extra)
    model.load_state_dict(to_mmpretrain(weights, dense=True))
    return model


def build_peers(arch: str, version: str, *, with_cp: bool = False,
                state_dict: Optional[StateDict] = None,
                output_stride: int = 32) -> Dict[str, nn.Module]:
    """Our backbone and its peers (timm's; mmpretrain's where importable), keyed by the names of
    ``PEERS``, all with the same weights: ``state_dict`` (official layout) if given, else ours
    as initialized under seed 0 (the same in every process, which the memory measurement's
    fresh processes rely on; ``output_stride`` changes no parameter).

    At ``output_stride`` 16 or 8 the peers are ours and timm's, both dilated; mmpretrain's
    ConvNeXt has no output stride (it would compute another function) and is left out."""
    torch.manual_seed(0)
    ours = ConvNeXt(arch, version=version, with_cp=with_cp, output_stride=output_stride)
    if state_dict is not None:
        ours.load_state_dict(state_dict)
    weights = ours.state_dict()
    peers: Dict[str, nn.Module] = {
        'convnext_backbone': ours,
        'timm': timm_peer(arch, version, weights, with_cp=with_cp,
                          output_stride=output_stride)}
    mmpretrain = mmpretrain_peer(arch, version, weights, with_cp=with_cp) \
        if output_stride == 32 else None
    if mmpretrain is not None:
        peers['mmpretrain'] = mmpretrain
    return peers


def max_relative_difference(peers: Dict[str, nn.Module], device: str,
                            size: Sequence[int] = (96, 128)) -> Dict[str, float]:
    """How far each peer's eval outputs are from ours, relative to
    the output scale, at a random input of ``size``: the peers compute the same function with
    the same weights, so this is rounding (or a bug)."""
    x = torch.randn(1, 3, *size, device=device)
    ours = peers['convnext_backbone']
    ours.eval()
    diffs = {}
    with torch.no_grad():
        reference = ours(x)
        for name, model in peers.items():
            model.eval()  # (mmpretrain's train() returns None: no chaining)
            outs = model(x)
            diffs[name] = max(float((a - b).abs().max() / b.abs().max())
                              for a, b in zip(outs, reference))
    return diffs

"""ImageNet (backbone-only) ConvNeXt checkpoints: converting every published layout and loading
it into the backbone, exactly and safely.

Every published layout is converted to the official one (which the backbone uses) by a pure
function over state dicts; ``convert_state_dict`` detects the layout and dispatches. Loading
compares the converted keys and shapes with the model before anything is copied, so a checkpoint
either loads completely or not at all, and reports what it did.

Supported layouts (docs/weights.md, "ImageNet weights"; their key names in ``from_*`` below):
``official`` (facebookresearch ConvNeXt / ConvNeXt-V2 and this package), ``timm``, ``mmpretrain``,
``transformers`` (``ConvNextModel`` / ``ConvNextV2Model`` and their classifiers) and ``fcmae``
(ConvNeXt-V2's self-supervised FCMAE model: a MinkowskiEngine encoder beside its decoder). Each
``from_*`` converter refuses a state dict of another layout; ``to_timm`` and ``to_mmpretrain``
go the other way (the benchmark gives the peers our weights with them).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn

from ..archs import arch_name
from ..errors import CheckpointError, shorten
from .reading import read_checkpoint

StateDict = Dict[str, torch.Tensor]

# Keys of a classification checkpoint that a dense backbone does not use: the classifier head
# and the final (pooled) norm.
CLASSIFIER_KEYS = re.compile(r'^(head|norm)\.')
# Keys of the backbone that no classification checkpoint has: the per-stage output norms.
DENSE_ONLY_KEYS = re.compile(r'^norm[0-3]\.')
# Keys of an FCMAE pre-training checkpoint beside its encoder (ConvNeXt-V2 models/fcmae.py): the
# decoder's input projection, mask token, blocks and pixel prediction.
FCMAE_DECODER_KEYS = re.compile(r'^(proj\.|mask_token$|decoder\.|pred\.)')
# The keys of each layout that a dense backbone does not use, and does not report as unexpected.
NOT_BACKBONE_KEYS = {'fcmae': FCMAE_DECODER_KEYS}


def extract_state_dict(checkpoint: dict, use_ema: bool = False) -> StateDict:
    """The state dict inside a checkpoint: ``model`` (official), ``model_ema`` (official EMA,
    with ``use_ema``), ``state_dict`` (mmengine) or the dict itself."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'Expected a dict of tensors, got {type(checkpoint).__name__}')
    key = 'model_ema' if use_ema else 'model'
    if use_ema and key not in checkpoint:
        raise CheckpointError(f'use_ema=True, but the checkpoint has no model_ema; its top-level '
                              f'keys are {shorten(sorted(checkpoint), 10)}')
    for candidate in (key, 'state_dict'):
        if isinstance(checkpoint.get(candidate), dict):
            checkpoint = checkpoint[candidate]
            break
    return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}


def strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    """The entries under ``prefix`` (e.g. ``'backbone.'``), without it."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------- layouts
def detect_layout(state_dict: StateDict) -> str:
    """``'official'``, ``'timm'``, ``'mmpretrain'``, ``'transformers'`` or ``'fcmae'``, from
    marker keys."""
    keys = list(state_dict)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, k) for k in keys)

    if has(r'(^|\.)embeddings\.patch_embeddings\.'):
        return 'transformers'
    if has(r'^stem\.0\.') or has(r'^stages\.\d+\.blocks\.'):
        return 'timm'
    if has(r'^(backbone\.)?stages\.\d+\.\d+\.depthwise_conv\.'):
        return 'mmpretrain'
    if has(r'^encoder\.downsample_layers\.0\.0\.weight$') or (
            has(r'^downsample_layers\.0\.0\.weight$') and has(r'\.kernel$')):
        return 'fcmae'  # with its encoder. prefix, or its encoder alone (prefix='encoder.')
    if has(r'^downsample_layers\.0\.0\.weight$'):
        return 'official'
    raise CheckpointError(
        'This is not a ConvNeXt checkpoint of a known layout (official, timm, mmpretrain, '
        f'transformers, fcmae); first keys: {shorten(keys, quote=True)}')


def _expect_layout(state_dict: StateDict, layout: str) -> None:
    """Converters convert one layout: another is refused, not passed through as if converted."""
    found = detect_layout(state_dict)
    if found != layout:
        raise CheckpointError(f'Expected a {layout}-layout ConvNeXt state dict, got one of the '
                              f'{found} layout: convert_state_dict() detects the layout')


def _grn(value: torch.Tensor) -> torch.Tensor:
    # GRN parameters are (C,) in timm and mmpretrain, (1, 1, 1, C) in the official layout.
    return value.reshape(1, 1, 1, -1)


def _dense_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """A 2-D MinkowskiEngine convolution kernel -> torch's ``(out, in, k, k)`` weight.

    MinkowskiEngine keeps one ``(C_in, C_out)`` matrix per kernel offset, ``(k*k, C_in, C_out)``,
    and a depthwise kernel one vector of channels per offset, ``(k*k, C)``. Its offsets run over
    the two spatial axes in the order opposite to torch's: offset ``a * k + b`` holds torch's
    weight at row ``b``, column ``a`` (what ConvNeXt-V2's ``remap_checkpoint_keys`` does by
    reshaping and then swapping the two spatial axes).
    """
    k = math.isqrt(kernel.shape[0])
    if k * k != kernel.shape[0] or kernel.dim() not in (2, 3):
        raise CheckpointError(f'Not a square 2-D MinkowskiEngine kernel: {tuple(kernel.shape)} '
                              '(expected (k*k, C) or (k*k, C_in, C_out))')
    if kernel.dim() == 2:  # depthwise: one input channel per group
        kernel = kernel.unsqueeze(1)
    # (column, row, in, out) -> (out, in, row, column)
    return kernel.unflatten(0, (k, k)).permute(3, 2, 1, 0).contiguous()


def _conv1x1_as_linear(value: torch.Tensor) -> torch.Tensor:
    # Small timm models use 1x1 convs for the MLP: (out, in, 1, 1) -> (out, in).
    return value.flatten(1) if value.dim() == 4 else value


# Names of the same tensors in two layouts, (official, other), applied in order; ``{n}`` stands
# for a number, the same in both. One table serves both directions.
NameTable = Sequence[Tuple[str, str]]
TIMM_NAMES: NameTable = (
    ('^downsample_layers.0.', '^stem.'),
    ('^downsample_layers.{n}.', '^stages.{n}.downsample.'),
    ('^stages.{n}.{n}.', '^stages.{n}.blocks.{n}.'),
    ('.dwconv.', '.conv_dw.'),
    ('.pwconv{n}.', '.mlp.fc{n}.'),
    ('.grn.gamma', '.mlp.grn.weight'),
    ('.grn.beta', '.mlp.grn.bias'),
    ('^head.', '^head.fc.'),  # before the norm: head.norm. must not become head.fc.norm.
    ('^norm.', '^head.norm.'),
)
MMPRETRAIN_NAMES: NameTable = (
    ('.dwconv.', '.depthwise_conv.'),
    ('.pwconv{n}.', '.pointwise_conv{n}.'),
    ('^head.', '^head.fc.'),
)


def _rename(key: str, table: NameTable, to_official: bool) -> str:
    """``key`` renamed by the entries of ``table`` that match, in one direction (the table's
    order towards the other layout, the reverse order back)."""
    entries = [(other, official) for official, other in reversed(table)] if to_official \
        else list(table)
    for source, target in entries:
        anchor = '^' if source.startswith('^') else ''
        pattern = anchor + re.escape(source.lstrip('^')).replace(r'\{n\}', r'(\d+)')
        numbers = iter(range(1, 10))  # the n-th {n} of the target is the n-th group
        replacement = re.sub(r'\{n\}', lambda _: f'\\{next(numbers)}', target.lstrip('^'))
        key = re.sub(pattern, replacement, key, count=1)
    return key


def from_timm(state_dict: StateDict) -> StateDict:
    """timm (``stem``, ``stages.i.downsample``, ``stages.i.blocks.j``) -> official."""
    _expect_layout(state_dict, 'timm')
    out = {}
    for key, value in state_dict.items():
        key = _rename(key, TIMM_NAMES, to_official=True)
        if re.search(r'\.pwconv[12]\.weight$', key):
            value = _conv1x1_as_linear(value)
        if '.grn.' in key:
            value = _grn(value)
        out[key] = value
    return out


def from_mmpretrain(state_dict: StateDict, dense: Optional[bool] = None) -> StateDict:
    """mmpretrain (``backbone.`` prefix, ``depthwise_conv``, ``pointwise_conv1/2``, ``norm3``
    as the final norm, ``head.fc``) -> official.

    ``dense``: whether ``norm{i}`` are a dense model's per-stage output norms (True) or ``norm3``
    is a classifier's final norm (False); None guesses from the keys (only a dense model has
    ``norm0..2``), which a dense model returning the last stage alone would fool.
    """
    _expect_layout(state_dict, 'mmpretrain')
    if dense is None:
        dense = any(re.match(r'^(backbone\.)?norm[012]\.', k) for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        key = _rename(re.sub(r'^backbone\.', '', key), MMPRETRAIN_NAMES, to_official=True)
        if '.grn.' in key:
            value = _grn(value)
        if not dense:
            # A classifier's only norm, on the last stage, is the final (pre-head) norm; a
            # dense model's norm0..3 are per-stage output norms, as in this package.
            key = re.sub(r'^norm3\.', 'norm.', key)
        out[key] = value
    return out


def from_transformers(state_dict: StateDict) -> StateDict:
    """Hugging Face ``ConvNext(V2)Model`` / ``...ForImageClassification`` -> official."""
    _expect_layout(state_dict, 'transformers')
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r'^convnext(v2)?\.', '', key)
        key = key.replace('embeddings.patch_embeddings.', 'downsample_layers.0.0.')
        key = key.replace('embeddings.layernorm.', 'downsample_layers.0.1.')
        key = re.sub(r'^encoder\.stages\.(\d+)\.downsampling_layer\.',
                     r'downsample_layers.\1.', key)
        key = re.sub(r'^encoder\.stages\.(\d+)\.layers\.(\d+)\.', r'stages.\1.\2.', key)
        key = re.sub(r'^(stages\.\d+\.\d+\.)layernorm\.', r'\1norm.', key)
        key = key.replace('.layer_scale_parameter', '.gamma')
        if '.grn.' in key:
            key = key.replace('.grn.weight', '.grn.gamma').replace('.grn.bias', '.grn.beta')
            value = _grn(value)
        key = re.sub(r'^layernorm\.', 'norm.', key)
        # ConvNextBackbone (e.g. inside UperNetForSemanticSegmentation): per-stage output norms.
        key = re.sub(r'^hidden_states_norms\.stage(\d)\.',
                     lambda m: f'norm{int(m.group(1)) - 1}.', key)
        key = re.sub(r'^classifier\.', 'head.', key)
        if key.startswith('pooler.'):
            continue  # parameter-free in the model; nothing to load
        out[key] = value
    return out


def from_fcmae(state_dict: StateDict) -> StateDict:
    """ConvNeXt-V2's FCMAE pre-training checkpoint -> official: the encoder converted (without
    its ``encoder.`` prefix), the decoder's keys (``FCMAE_DECODER_KEYS``) kept as they are, for
    the load to report as not used.

    The encoder is a MinkowskiEngine (sparse) ConvNeXt-V2 (models/convnextv2_sparse.py): its
    stem is dense; its convolutions have a ``kernel`` (see ``_dense_kernel``) and a ``(1, C)``
    bias; its LayerNorms and Linears hold the torch module as ``ln`` and ``linear``; GRN's
    ``gamma`` / ``beta`` are ``(1, 4C)``. Keys already in the dense form pass unchanged.
    """
    _expect_layout(state_dict, 'fcmae')
    out = {}
    for key, value in state_dict.items():
        if FCMAE_DECODER_KEYS.match(key):
            out[key] = value
            continue
        key = re.sub(r'^encoder\.', '', key)
        if key.endswith('.kernel'):
            key, value = key[:-len('kernel')] + 'weight', _dense_kernel(value)
        key = re.sub(r'\.(ln|linear)\.(weight|bias)$', r'.\2', key)
        if '.grn.' in key:
            value = _grn(value)
        elif key.endswith('.bias'):
            value = value.reshape(-1)  # MinkowskiEngine's convolution biases are (1, C)
        out[key] = value
    return out


def from_official(state_dict: StateDict) -> StateDict:
    """Official -> official: the same tensors, except GRN parameters stored flat (``(C,)`` or
    ``(1, C)``: the sparse FCMAE encoder keeps them as ``(1, C)``, and a file converted from it
    by hand may too), which take the official ``(1, 1, 1, C)``."""
    return {k: _grn(v) if '.grn.' in k and v.dim() != 4 else v for k, v in state_dict.items()}


def to_timm(state_dict: StateDict, conv_mlp: bool = False) -> StateDict:
    """Official -> timm (the inverse of ``from_timm``). ``conv_mlp``: the MLP as 1x1
    convolutions, as timm builds its atto..nano models (``conv_mlp=True``)."""
    _expect_layout(state_dict, 'official')
    out = {}
    for key, value in state_dict.items():
        if conv_mlp and re.search(r'\.pwconv[12]\.weight$', key):
            value = value[:, :, None, None]
        if '.grn.' in key:
            value = value.reshape(-1)
        out[_rename(key, TIMM_NAMES, to_official=False)] = value
    return out


def to_mmpretrain(state_dict: StateDict, dense: bool = True) -> StateDict:
    """Official -> mmpretrain's ``ConvNeXt`` backbone keys (the inverse of ``from_mmpretrain``;
    ``dense=False``: a classifier's final ``norm`` becomes mmpretrain's ``norm3``)."""
    _expect_layout(state_dict, 'official')
    out = {}
    for key, value in state_dict.items():
        if '.grn.' in key:
            value = value.reshape(-1)
        if not dense:
            key = re.sub(r'^norm\.', 'norm3.', key)
        out[_rename(key, MMPRETRAIN_NAMES, to_official=False)] = value
    return out


CONVERTERS: Dict[str, Callable[[StateDict], StateDict]] = {
    'official': from_official,
    'timm': from_timm,
    'mmpretrain': from_mmpretrain,
    'transformers': from_transformers,
    'fcmae': from_fcmae,
}


def convert_state_dict(state_dict: StateDict,
                       dense: Optional[bool] = None) -> Tuple[StateDict, str]:
    """Convert a ConvNeXt state dict of any supported layout to the official one.

    ``dense=True`` says that the weights are a dense model's backbone (see
    ``from_mmpretrain``). Returns the converted dict and the name of the detected source layout.
    """
    layout = detect_layout(state_dict)
    if layout == 'mmpretrain':
        return from_mmpretrain(state_dict, dense), layout
    return CONVERTERS[layout](state_dict), layout


def backbone_of(state_dict: StateDict) -> Optional[StateDict]:
    """The backbone of a whole detector's or segmentor's state dict: its keys under
    ``backbone.``, without the prefix; None for any other dict (an mmpretrain classifier,
    ``backbone.`` + ``head.`` only, is not a whole dense model)."""
    backbone = strip_prefix(state_dict, 'backbone.')
    others = {k.split('.', 1)[0] for k in state_dict if not k.startswith('backbone.')}
    return backbone if backbone and others != {'head'} else None


def arch_of(state_dict: StateDict) -> Tuple[Tuple[int, ...], Tuple[int, ...], str]:
    """(depths, widths, version) of an official-layout state dict, read off its keys and
    shapes (the stem's and the downsampling convolutions' output channels)."""
    convs = [f'downsample_layers.{i}.{0 if i == 0 else 1}.weight' for i in range(4)]
    widths = tuple(state_dict[k].shape[0] for k in convs if k in state_dict)
    depths = tuple(
        len({int(m.group(1)) for k in state_dict if (m := re.match(rf'stages\.{i}\.(\d+)\.', k))})
        for i in range(4))
    version = 'v2' if any('.grn.' in k for k in state_dict) else 'v1'
    return depths, widths, version


def guess_arch(state_dict: StateDict) -> Tuple[str, str]:
    """(arch name or 'custom', version) of an official-layout state dict, from its shapes."""
    depths, widths, version = arch_of(state_dict)
    return arch_name(depths, widths) or f'custom (depths={depths}, widths={widths})', version


# ----------------------------------------------------------------------------------- loading
class LoadReport:
    """What a load did: loaded keys, missing model keys, unused checkpoint keys."""

    def __init__(self, source: str, layout: str, loaded: List[str], missing: List[str],
                 unused: List[str]) -> None:
        self.source, self.layout = source, layout
        self.loaded, self.missing, self.unused = loaded, missing, unused

    def __str__(self) -> str:
        return (f'Loaded ConvNeXt weights from {self.source} ({self.layout} layout): '
                f'{len(self.loaded)} tensors loaded\n'
                f'  model keys not in the checkpoint, kept at their initialisation '
                f'({len(self.missing)}): {_summarize(self.missing)}\n'
                f'  checkpoint keys not used ({len(self.unused)}): {_summarize(self.unused)}')


def _summarize(keys: List[str]) -> str:
    """Group keys by module (``head.weight, head.bias`` -> ``head.{weight,bias}``)."""
    if not keys:
        return 'none'
    groups: Dict[str, List[str]] = {}
    for key in keys:
        module, _, leaf = key.rpartition('.')
        groups.setdefault(module, []).append(leaf)
    return ', '.join(', '.join(v) if not m else  # top-level keys (FCMAE's mask_token)
                     f'{m}.{{{",".join(v)}}}' if len(v) > 1 else f'{m}.{v[0]}'
                     for m, v in groups.items())


def check_state_dict(model: nn.Module, state_dict: StateDict, strict: bool = True,
                     source: str = 'checkpoint',
                     layout: str = 'official') -> Tuple[List[str], List[str]]:
    """Compare an official-layout state dict with the model before loading anything.

    Returns (missing, unused) keys. Raises ``CheckpointError`` on any shape mismatch (naming the
    key, both shapes and the checkpoint's arch), and, with ``strict``, on missing keys other than
    the dense output norms or unused keys other than those the source ``layout`` has beside a
    backbone (``NOT_BACKBONE_KEYS``: FCMAE's decoder; the classifier for the others).
    """
    expected = model.state_dict()
    for key, value in state_dict.items():
        if key in expected and expected[key].shape != value.shape:
            arch, version = guess_arch(state_dict)
            mine = getattr(model, 'depths', None), getattr(model, 'widths', None)
            raise CheckpointError(
                f'Shape mismatch in {source} for {key}: checkpoint {tuple(value.shape)}, model '
                f'{tuple(expected[key].shape)}. The checkpoint looks like ConvNeXt {version} '
                f'{arch!r}, the model has depths={mine[0]}, widths={mine[1]}: set the backbone '
                f'arch to match the checkpoint.')
    missing = [k for k in expected if k not in state_dict]
    unused = [k for k in state_dict if k not in expected]
    if strict:
        bad_missing = [k for k in missing if not DENSE_ONLY_KEYS.match(k)]
        beside = NOT_BACKBONE_KEYS.get(layout, CLASSIFIER_KEYS)
        bad_unused = [k for k in unused if not beside.match(k)]
        if bad_missing or bad_unused:
            arch, version = guess_arch(state_dict)
            raise CheckpointError(
                f'{source} does not fit this backbone (a ConvNeXt {version} {arch!r} checkpoint?'
                f'); missing: {_summarize(bad_missing)}; unexpected: {_summarize(bad_unused)}. '
                'Check arch and version (V2 has grn, V1 gamma), or pass strict=False in '
                'init_cfg to load the rest anyway.')
    return missing, unused


def load_pretrained(model: nn.Module,
                    checkpoint: str,
                    prefix: Optional[str] = None,
                    map_location: str = 'cpu',
                    strict: bool = True,
                    use_ema: bool = False) -> LoadReport:
    """Load a checkpoint of any supported layout into a ``ConvNeXt`` backbone.

    The arguments extend mmengine's ``Pretrained`` init: ``init_cfg=dict(type='Pretrained',
    checkpoint=..., prefix='backbone.', strict=True, use_ema=False)``.

    Args:
        model (nn.Module): The backbone.
        checkpoint (str): File path, Hugging Face model folder or http(s) URL.
        prefix (str, optional): Take only the keys under this prefix, without it. A whole
            detector's or segmentor's checkpoint needs none: its ``backbone.`` part is taken.
        map_location (str): Device to read tensors to.
        strict (bool): Raise on keys that are missing or unused other than the expected ones
            (the dense output norms; the classifier head and final norm, or an FCMAE
            checkpoint's decoder). Shape mismatches always raise.
        use_ema (bool): Load the ``model_ema`` copy of an official checkpoint.
    """
    state_dict = extract_state_dict(read_checkpoint(checkpoint, map_location), use_ema)
    dense = None
    if prefix:
        state_dict = strip_prefix(state_dict, prefix)
        if not state_dict:
            raise CheckpointError(f'No key of {checkpoint} starts with prefix {prefix!r}')
    elif (backbone := backbone_of(state_dict)) is not None:
        # A whole detector's or segmentor's checkpoint (any layout) given without prefix.
        state_dict, dense = backbone, True
    try:
        state_dict, layout = convert_state_dict(state_dict, dense)
    except CheckpointError as exc:
        raise CheckpointError(f'{checkpoint}: {exc}') from None
    return load_converted(model, state_dict, strict, source=str(checkpoint), layout=layout)


def load_converted(model: nn.Module, state_dict: StateDict, strict: bool = True,
                   source: str = 'checkpoint', layout: str = 'official') -> LoadReport:
    """Check an official-layout state dict against the model (``check_state_dict``), then
    load it: all of it or, on any error, nothing. Logs and returns the report."""
    missing, unused = check_state_dict(model, state_dict, strict, source=source, layout=layout)
    loadable = {k: v for k, v in state_dict.items() if k not in unused}
    model.load_state_dict(loadable, strict=False)
    report = LoadReport(source, layout, sorted(loadable), missing, unused)
    print_log(str(report), logger='current')
    return report

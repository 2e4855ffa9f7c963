"""Whole detector / segmentor checkpoints: read any published ConvNeXt layout, convert it to this
package's, check it against the built model, then load it completely, or refuse in words.

This replaces mmengine's ``load_checkpoint`` (behind ``load_from``, ``resume`` and the
inferencers), which loads with ``strict=False`` and only logs what did not fit.

Layouts (docs/weights.md, "Evaluate a published checkpoint"):
- this package's (mmengine Runner checkpoints; backbone keys in the official layout);
- the official ConvNeXt detection / segmentation releases (MMDetection 2 / MMSegmentation 0.x:
  the same keys, class names in ``meta.CLASSES`` / ``meta.PALETTE``);
- the MMDetection 3 / MMSegmentation 1 model zoo (``mmpretrain.ConvNeXt`` backbone keys,
  ``meta.dataset_meta``);
- Hugging Face ``UperNetForSemanticSegmentation`` with a ConvNeXt (V2) backbone (a model folder;
  ``batch_norm`` for ``bn``, ``classifier`` for ``conv_seg``).
The backbone part goes through the ImageNet converters of ``checkpoints.imagenet``.

What is checked depends on the purpose:
- ``'eval'`` (test, inference) and ``'resume'``: every key and shape must fit; only
  ``num_batches_tracked`` counters may differ.
- ``'finetune'`` (``load_from`` in training): the class-specific output layers (``fc_cls``,
  ``fc_reg``, ``conv_logits``, ``conv_seg``, ``cls_embed``; DINO's ``cls_branches`` and
  denoising ``label_embedding``, RTMDet's ``rtm_cls``) whose number of classes differs keep
  their initialization and are reported; everything else must fit.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from ..archs import describe_arch
from ..errors import CheckpointError, shorten
from .imagenet import (arch_of, convert_state_dict, detect_layout, extract_state_dict,
                       strip_prefix)
from .reading import read_checkpoint

StateDict = Dict[str, torch.Tensor]
PURPOSES = ('eval', 'finetune', 'resume')
_VERBS = {'eval': 'evaluate', 'finetune': 'fine-tune from', 'resume': 'resume from'}

# Layers whose output size is set by the number of classes: the classifier and box regressor
# of every bbox head, the mask logits, the segmentation classifiers (Mask2Former's is
# cls_embed, a class per query plus "no object"); DINO's classifiers (one per decoder layer
# and the encoder's, cls_branches.i) and its denoising queries' class embedding (a row per
# class); RTMDet's classifier of each level (rtm_cls.i).
CLASS_SPECIFIC = re.compile(
    r'(^|\.)(fc_cls|fc_reg|conv_logits|conv_seg|cls_embed|label_embedding|cls_branches\.\d+|'
    r'rtm_cls\.\d+)\.(weight|bias)$')
# Entries whose absence or presence changes no computation.
HARMLESS = re.compile(r'(^|\.)num_batches_tracked$')
DETECTOR_PARTS = {'rpn_head', 'roi_head', 'bbox_head'}
SEGMENTOR_PARTS = {'decode_head'}
# The names of the layout of each backbone converter, as the published whole models use them.
LAYOUT_NAMES = {
    'mmpretrain': 'MMDetection 3 / MMSegmentation 1 model zoo (mmpretrain ConvNeXt backbone)',
    'transformers': 'Hugging Face transformers',
    'timm': 'timm-layout backbone',
}


@dataclass
class ConvertedCheckpoint:
    """A whole-model checkpoint converted to this package's layout."""
    source: str
    layout: str  # in words: where it comes from
    state_dict: StateDict
    dataset_meta: Optional[dict]  # classes (and palette) the file names, if it does
    checkpoint: dict = field(repr=False)  # the file as read (meta, message_hub, optimizer...)


@dataclass
class ModelLoadReport:
    """What a load did: tensors loaded, layers left at their initialization, keys not used."""
    source: str
    layout: str
    loaded: List[str]
    reinitialized: List[str]
    unused: List[str]

    def __str__(self) -> str:
        lines = [f'Loaded {self.source} ({self.layout}): {len(self.loaded)} tensors loaded']
        if self.reinitialized:
            lines.append(f'  re-initialised (other number of classes): '
                         f'{", ".join(_modules(self.reinitialized))}')
        lines.append(f'  unused: {", ".join(_modules(self.unused)) or "none"}')
        return '\n'.join(lines)


# --------------------------------------------------------------------------------- reading
def read_model_checkpoint(source: str, map_location: str = 'cpu') -> ConvertedCheckpoint:
    """Read a whole detector / segmentor checkpoint of any supported layout and convert it."""
    return convert_model_checkpoint(read_checkpoint(source, map_location), str(source))


def convert_model_checkpoint(checkpoint: dict, source: str) -> ConvertedCheckpoint:
    """Convert a whole-model checkpoint as ``read_checkpoint`` returned it (a pure function:
    ``checkpoint`` is not changed)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint.get('meta'), dict) else {}
    hf_config = meta.get('hf_config') or {}
    hf_backbone = (hf_config.get('backbone_config') or hf_config).get('model_type')
    if hf_config and hf_backbone not in ('convnext', 'convnextv2'):
        raise CheckpointError(f'{source} is a Hugging Face {hf_config.get("model_type")} model '
                              f'with a {hf_backbone} backbone, not a ConvNeXt')
    state_dict = extract_state_dict(checkpoint)  # a new dict: the prefix goes in place
    if state_dict and all(k.startswith('module.') for k in state_dict):  # saved from a wrapper
        consume_prefix_in_state_dict_if_present(state_dict, 'module.')
    backbone = strip_prefix(state_dict, 'backbone.')
    if not backbone:
        raise CheckpointError(_not_a_whole_model(source, state_dict))
    try:
        converted, backbone_layout = convert_state_dict(backbone, dense=True)
    except CheckpointError:
        raise CheckpointError(
            f'{source}: the checkpoint\'s backbone is not a ConvNeXt of a known layout '
            f'(official, timm, mmpretrain, transformers); its first keys: '
            f'{shorten(("backbone." + k for k in backbone), 4)}') from None
    out = {f'backbone.{k}': v for k, v in converted.items()}
    for key, value in state_dict.items():
        if not key.startswith('backbone.'):
            out[_from_hf_head(key) if backbone_layout == 'transformers' else key] = value
    return ConvertedCheckpoint(source, _layout_name(backbone_layout, meta), out,
                           dataset_meta_of(meta), checkpoint)


def _not_a_whole_model(source: str, state_dict: StateDict) -> str:
    try:
        detect_layout(state_dict)
    except CheckpointError:
        return (f'{source} is not a detector or segmentor checkpoint: it has no backbone.* '
                f'weights (first keys: {shorten(state_dict, 4)})')
    return (f'{source} is an ImageNet (backbone-only) ConvNeXt checkpoint, not a whole detector '
            f'or segmentor: load it into the backbone with model.backbone.init_cfg='
            f"dict(type='Pretrained', checkpoint='{source}')")


def _from_hf_head(key: str) -> str:
    """Hugging Face UperNet head keys -> mmseg's (the modules are the same)."""
    key = key.replace('.batch_norm.', '.bn.')
    return re.sub(r'^(decode_head|auxiliary_head)\.classifier\.', r'\1.conv_seg.', key)


def _layout_name(backbone_layout: str, meta: dict) -> str:
    if backbone_layout == 'transformers':
        architectures = (meta.get('hf_config') or {}).get('architectures') or ['a model']
        return f'Hugging Face {architectures[0]}'
    if backbone_layout != 'official':
        return LAYOUT_NAMES[backbone_layout]
    if 'CLASSES' in meta and 'dataset_meta' not in meta:
        return 'official ConvNeXt release (MMDetection 2 / MMSegmentation 0.x)'
    return 'convnext_backbone layout'


def dataset_meta_of(meta: dict) -> Optional[dict]:
    """The class names (and palette) a checkpoint's meta carries: mmengine's ``dataset_meta``,
    MMDetection 2 / MMSegmentation 0.x's ``CLASSES`` / ``PALETTE``, or a Hugging Face config's
    ``id2label`` unless it holds only the default ``LABEL_i`` names."""
    if isinstance(meta.get('dataset_meta'), dict) and meta['dataset_meta'].get('classes'):
        found = {k.lower(): v for k, v in meta['dataset_meta'].items()}
    elif meta.get('CLASSES'):
        found = dict(classes=meta['CLASSES'], palette=meta.get('PALETTE'))
    elif (meta.get('hf_config') or {}).get('id2label'):
        id2label = meta['hf_config']['id2label']
        names = [id2label[k] for k in sorted(id2label, key=int)]
        if all(name == f'LABEL_{i}' for i, name in enumerate(names)):
            return None
        found = dict(classes=names)
    else:
        return None
    found['classes'] = tuple(found['classes'])
    if found.get('palette') is None:
        found.pop('palette', None)
    return found


def resolve_dataset_meta(checkpoint_meta: Optional[dict],
                         config_meta: Optional[dict]) -> Tuple[Optional[dict], Optional[str]]:
    """The class names and palette to use, and a note when the checkpoint's and the config's
    disagree: the checkpoint's when they agree with the config's (its palette too), the
    config's otherwise."""
    config_classes = tuple((config_meta or {}).get('classes') or ())
    if not checkpoint_meta:
        return config_meta, None
    if not config_classes:
        return checkpoint_meta, None
    if tuple(checkpoint_meta['classes']) == config_classes:
        return {**config_meta, **checkpoint_meta}, None
    return config_meta, (f"the checkpoint's classes "
                         f"({shorten(checkpoint_meta['classes'], quote=True)}) differ from the "
                         f"config's ({shorten(config_classes, quote=True)}); using the config's")


# -------------------------------------------------------------------------------- checking
def bare_model(model: nn.Module) -> nn.Module:
    """The detector or segmentor inside distributed and test-time-augmentation wrappers."""
    while not hasattr(model, 'backbone') and isinstance(getattr(model, 'module', None),
                                                         nn.Module):
        model = model.module
    return model


def check_model_checkpoint(model: nn.Module, checkpoint: ConvertedCheckpoint,
                           purpose: str = 'eval') -> Tuple[List[str], List[str]]:
    """Compare a converted checkpoint with the model, copying nothing.

    Returns the keys to load and the class-specific keys to leave at their initialization
    (``'finetune'`` only). Raises ``CheckpointError`` that says in words what does not fit.
    """
    if purpose not in PURPOSES:
        raise ValueError(f'purpose must be one of {PURPOSES}, got {purpose!r}')
    model = bare_model(model)
    expected = model.state_dict()
    given = checkpoint.state_dict
    problems, reinit = _diagnose(model, expected, given, purpose)
    if problems:
        raise CheckpointError(
            f'Cannot {_VERBS[purpose]} {checkpoint.source} ({checkpoint.layout}): it does not '
            f"fit the config's model.\n" + ''.join(f'  - {text}\n' for _, text in problems) +
            'Nothing was loaded.' + _hint({cause for cause, _ in problems}, purpose))
    loadable = [k for k in given if k in expected and k not in reinit]
    return loadable, reinit


# What a problem is about, for the closing hint of the refusal.
KIND, CLASSES, OTHER = 'kind', 'classes', 'other'
Problem = Tuple[str, str]  # (one of the causes above, the sentence)


def _hint(causes: set, purpose: str) -> str:
    if KIND in causes:  # a segmentor checkpoint for a detector, or the reverse
        return (" To start from its backbone only, set model.backbone.init_cfg=dict("
                "type='Pretrained', checkpoint=...).")
    if CLASSES in causes and purpose == 'eval':
        return (" Evaluate with the config the checkpoint was trained with, or fine-tune it "
                "onto the config's classes (tools/train.py CONFIG --load-from CHECKPOINT).")
    return " Use the config the checkpoint was trained with, or change the config to match."


def _diagnose(model: nn.Module, expected: StateDict, given: StateDict,
              purpose: str) -> Tuple[List[Problem], List[str]]:
    """(problems, class-specific keys to re-initialise)."""
    model_parts, file_parts = _parts(expected), _parts(given)
    model_kind, file_kind = _kind(model_parts), _kind(file_parts)
    if model_kind and file_kind and model_kind != file_kind:
        return [(KIND, f'this is a {file_kind} checkpoint ({", ".join(sorted(file_parts))}), '
                 f'the config is a {model_kind} ({", ".join(sorted(model_parts))})')], []
    problems: List[Problem] = []
    missing = [k for k in expected if k not in given and not HARMLESS.search(k)]
    unused = [k for k in given if k not in expected and not HARMLESS.search(k)]
    mismatched = [k for k in given if k in expected and given[k].shape != expected[k].shape]
    explained = set()

    for part in sorted(model_parts - file_parts):
        problems.append((OTHER, f'the checkpoint has no {part}'))
    for part in sorted(file_parts - model_parts):
        problems.append((OTHER, f"the checkpoint has a {part}, the config's model has none"))
    explained |= {k for k in missing + unused if k.split('.', 1)[0] in model_parts ^ file_parts}

    backbone_problem = _backbone_difference(model, given)
    if backbone_problem:
        problems.append((OTHER, backbone_problem))
        explained |= {k for k in missing + unused + mismatched if k.startswith('backbone.')}

    reinit: List[str] = []
    by_classes: Dict[Tuple[int, int], List[str]] = {}
    for key in mismatched:
        if key in explained or not CLASS_SPECIFIC.search(key):
            continue
        if given[key].shape[1:] != expected[key].shape[1:]:
            continue  # the layer's input differs too: not a matter of classes
        counts = _class_counts(model, key, given[key].shape[0], expected[key].shape[0])
        by_classes.setdefault(counts, []).append(key)
        explained.add(key)
    for (file_classes, model_classes), keys in by_classes.items():
        if purpose == 'finetune':
            reinit += keys
        else:
            problems.append((CLASSES, f'the checkpoint predicts {file_classes} classes '
                             f'({", ".join(_modules(keys))}), the config {model_classes}'))

    rest = [k for k in mismatched if k not in explained]
    if rest:
        shown = shorten((f'{k}: checkpoint {tuple(given[k].shape)}, config '
                         f'{tuple(expected[k].shape)}' for k in rest), 3)
        problems.append((OTHER, f'shapes differ: {shown}'))
    rest = [k for k in missing if k not in explained]
    if rest:
        problems.append((OTHER, 'missing from the checkpoint: '
                         f'{shorten(_modules(rest), 6, unit="modules")}'))
    rest = [k for k in unused if k not in explained]
    if rest:
        problems.append((OTHER, "in the checkpoint but not in the config's model: "
                         f'{shorten(_modules(rest), 6, unit="modules")}'))
    return problems, reinit


def _parts(state_dict: StateDict) -> set:
    return {k.split('.', 1)[0] for k in state_dict if not HARMLESS.search(k)}


def _kind(parts: set) -> Optional[str]:
    if parts & SEGMENTOR_PARTS:
        return 'segmentor'
    if parts & DETECTOR_PARTS:
        return 'detector'
    return None


def _backbone_difference(model: nn.Module, given: StateDict) -> Optional[str]:
    """A sentence when the checkpoint's ConvNeXt is another size, version or set of outputs
    than the config's backbone; None when they agree or the model's backbone is no ConvNeXt."""
    backbone = getattr(model, 'backbone', None)
    if not all(hasattr(backbone, a) for a in ('depths', 'widths', 'version', 'out_indices')):
        return None
    file_backbone = strip_prefix(given, 'backbone.')
    if not file_backbone:
        return None
    depths, widths, file_version = arch_of(file_backbone)
    mine = describe_arch(backbone.depths, backbone.widths, backbone.version)
    if (depths, widths, file_version) != (tuple(backbone.depths), tuple(backbone.widths),
                                          backbone.version):
        return (f"the checkpoint's backbone is {describe_arch(depths, widths, file_version)}, "
                f"the config's is {mine}")
    file_outputs = sorted(int(m.group(1)) for k in file_backbone
                          if (m := re.match(r'norm(\d)\.weight$', k)))
    if tuple(file_outputs) != tuple(backbone.out_indices):
        return (f"the checkpoint's backbone has output norms for stages {file_outputs}, the "
                f"config's returns stages {list(backbone.out_indices)} (out_indices)")
    return None


def _class_counts(model: nn.Module, key: str, file_rows: int, model_rows: int) -> Tuple:
    """(classes the checkpoint predicts, classes of the config) for a class-specific layer:
    rows = a * classes + b, with (a, b) read off the config's head (``num_classes``): fc_cls
    has a background row (softmax), as Mask2Former's cls_embed a no-object row, fc_reg four rows
    a class, conv_logits and conv_seg one."""
    owner = key.rsplit('.', 2)[0]
    while owner and not hasattr(_submodule(model, owner), 'num_classes'):
        owner = owner.rpartition('.')[0]
    classes = getattr(_submodule(model, owner), 'num_classes', None) if owner else None
    if classes:
        for a, b in ((1, 0), (1, 1), (4, 0)):
            if a * classes + b == model_rows and (file_rows - b) % a == 0:
                return (file_rows - b) // a, classes
    return file_rows, model_rows


def _submodule(model: nn.Module, name: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def _modules(keys: Sequence[str]) -> List[str]:
    """Module names of parameter keys, in order, each once."""
    return list(dict.fromkeys(k.rpartition('.')[0] or k for k in keys))


# --------------------------------------------------------------------------------- loading
def load_model_checkpoint(model: nn.Module,
                          checkpoint: 'str | ConvertedCheckpoint',
                          purpose: str = 'eval',
                          map_location: str = 'cpu',
                          config_meta: Optional[dict] = None) -> Tuple[ModelLoadReport,
                                                                        ConvertedCheckpoint,
                                                                        Optional[dict]]:
    """Check a whole-model checkpoint against the model, then load all of it (or nothing).

    Args:
        model (nn.Module): The detector or segmentor (also inside DDP / TTA wrappers).
        checkpoint (str | ConvertedCheckpoint): A file, a Hugging Face folder, a URL, or what
            ``read_model_checkpoint`` returned.
        purpose (str): ``'eval'``, ``'finetune'`` or ``'resume'`` (see the module docstring).
        map_location (str): Device to read tensors to.
        config_meta (dict, optional): The config's dataset meta (classes, palette), to compare
            the checkpoint's class names with.

    Returns:
        The report (also logged), the converted checkpoint, and the dataset meta to use
        (``resolve_dataset_meta``).
    """
    if not isinstance(checkpoint, ConvertedCheckpoint):
        checkpoint = read_model_checkpoint(checkpoint, map_location)
    loadable, reinit = check_model_checkpoint(model, checkpoint, purpose)
    model = bare_model(model)
    model.load_state_dict({k: checkpoint.state_dict[k] for k in loadable}, strict=False)
    expected = model.state_dict()
    unused = [k for k in checkpoint.state_dict if k not in expected]
    report = ModelLoadReport(checkpoint.source, checkpoint.layout, loadable, reinit, unused)
    print_log(str(report), logger='current')
    dataset_meta, note = resolve_dataset_meta(checkpoint.dataset_meta, config_meta)
    if note:
        print_log(f'{checkpoint.source}: {note}', logger='current', level=30)  # WARNING
    return report, checkpoint, copy.deepcopy(dataset_meta)

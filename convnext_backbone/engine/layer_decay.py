"""Layer-wise / stage-wise learning-rate decay for ConvNeXt, as in the paper's recipes.

The rule is the official one (as MMDetection 3.3 and MMSegmentation 1.2 ship it): the
parameter with layer id ``i`` gets ``lr = base_lr * decay_rate ** (num_layers + 1 - i)``;
biases and 1-D parameters get no weight decay. The layer ids come from the backbone itself
(``backbone.get_layer_depth``), so nothing here depends on class or module names.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

DECAY_TYPES = ('layer_wise', 'stage_wise')
PARAMWISE_KEYS = ('decay_rate', 'decay_type', 'num_layers', 'no_decay_keys')


# NOTE: mmdet and mmseg each register a `LearningRateDecayOptimizerConstructor` (and mmseg a
# `LayerDecayOptimizerConstructor`) in their child registries, which would shadow one of ours
# with the same name; this name is unique, and the root registry makes it visible to both.
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ConvNeXtLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with learning-rate decay by ConvNeXt depth.

    ``paramwise_cfg`` keys:
        decay_rate (float): in (0, 1]; the lr shrinks by this factor per layer (or stage)
            from the last stage down to the stem.
        decay_type (str): ``'layer_wise'`` (Mask/Cascade R-CNN recipes) or ``'stage_wise'``
            (UPerNet recipes). Default ``'layer_wise'``.
        num_layers (int | 'auto'): the recipes' ``num_layers``; ``'auto'`` (default) derives it
            from the arch (6 for T, 12 for S/B/L/XL). Any other value is an error, since it
            would give learning-rate scales above 1.
        no_decay_keys (sequence of str): parameters whose names contain one of these get no
            weight decay, besides the 1-D ones and biases (Mask2Former's recipe:
            ``('query_embed', 'query_feat', 'level_embed')``, mmengine's ``custom_keys`` with
            ``decay_mult=0`` upstream). Default none.

    Any other key (mmengine's ``custom_keys``, ``norm_decay_mult``...) is refused: this
    constructor sets every parameter's lr and weight decay itself, so it would be ignored.

    The model must have a ``backbone`` with ``get_layer_depth(name, decay_type, prefix)`` and
    ``num_layers`` (``convnext_backbone.ConvNeXt``); every other parameter gets the full lr.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        # Checked here, not in add_params: mmengine skips add_params for an empty
        # paramwise_cfg, which would silently train without decay.
        self.decay_rate, self.decay_type = self._check_cfg(self.paramwise_cfg)
        self.no_decay_keys = tuple(self.paramwise_cfg.get('no_decay_keys', ()))

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        backbone = getattr(module, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'get_layer_depth'):
            raise TypeError(f'{type(self).__name__} needs a model whose backbone has '
                            'get_layer_depth() (convnext_backbone.ConvNeXt); got backbone '
                            f'{type(backbone).__name__}')
        decay_rate, decay_type = self.decay_rate, self.decay_type
        num_layers = self._num_layers(backbone)
        no_wd_names = {f'backbone.{n}' for n in getattr(backbone, 'no_weight_decay', set)()}

        groups: Dict[Tuple[int, bool], dict] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue  # frozen stages stay out of the optimizer
            layer_id, _ = backbone.get_layer_depth(name, decay_type, prefix='backbone.')
            decay = not (param.ndim == 1 or name.endswith('.bias') or name in no_wd_names
                         or any(key in name for key in self.no_decay_keys))
            if (layer_id, decay) not in groups:
                scale = decay_rate**(num_layers + 1 - layer_id)
                groups[layer_id, decay] = dict(
                    params=[], param_names=[], lr=self.base_lr * scale, lr_scale=scale,
                    weight_decay=self.base_wd if decay else 0.0, layer_id=layer_id,
                    group_name=f'layer_{layer_id}_{"decay" if decay else "no_decay"}')
            groups[layer_id, decay]['params'].append(param)
            groups[layer_id, decay]['param_names'].append(name)

        names = [name for name, _ in module.named_parameters()]
        unmatched = [k for k in self.no_decay_keys if not any(k in name for name in names)]
        if unmatched:  # a misspelt key would silently leave those parameters decayed
            raise ValueError(f'paramwise_cfg.no_decay_keys {unmatched} match no parameter of '
                             f'the model (e.g. {names[-1]!r})')
        ordered = [groups[key] for key in sorted(groups)]
        self._log(ordered, decay_type, decay_rate, num_layers)
        params.extend(ordered)

    @staticmethod
    def _check_cfg(cfg: dict) -> Tuple[float, str]:
        unknown = sorted(set(cfg) - set(PARAMWISE_KEYS))
        if unknown:
            raise ValueError(
                f'paramwise_cfg keys {unknown} are not ones of ConvNeXtLayerDecayOptimizer'
                f'Constructor ({", ".join(PARAMWISE_KEYS)}): it sets every lr by depth and '
                'gives no weight decay to 1-D parameters and biases itself, so they would be '
                'ignored; name further parameters without weight decay in no_decay_keys')
        keys = cfg.get('no_decay_keys', ())
        if isinstance(keys, str) or not all(isinstance(k, str) and k for k in keys):
            raise ValueError('paramwise_cfg.no_decay_keys must be a list of parameter-name '
                             f"parts, e.g. ['query_embed'], got {keys!r}")
        decay_rate = cfg.get('decay_rate')
        if not isinstance(decay_rate, (int, float)) or not 0 < decay_rate <= 1:
            raise ValueError(f'paramwise_cfg.decay_rate must be a number in (0, 1], got '
                             f'{decay_rate!r}')
        decay_type = cfg.get('decay_type', 'layer_wise')
        if decay_type not in DECAY_TYPES:
            raise ValueError(f'paramwise_cfg.decay_type must be one of {DECAY_TYPES}, got '
                             f'{decay_type!r}')
        return float(decay_rate), decay_type

    def _num_layers(self, backbone: nn.Module) -> int:
        cfg = self.paramwise_cfg
        fitting: int = backbone.num_layers
        num_layers: Union[int, str] = cfg.get('num_layers', 'auto')
        if num_layers != 'auto' and num_layers != fitting:
            raise ValueError(
                f'paramwise_cfg.num_layers={num_layers!r} does not fit this ConvNeXt (depths '
                f'{tuple(backbone.depths)}): its stages give {fitting} layers; use '
                f"num_layers={fitting} or 'auto'")
        return fitting

    @staticmethod
    def _log(groups: List[dict], decay_type: str, decay_rate: float, num_layers: int) -> None:
        lines = [f'ConvNeXt {decay_type} lr decay: rate {decay_rate}, num_layers {num_layers}',
                 f'{"group":<22}{"layer":>6}{"lr scale":>12}{"lr":>12}{"wd":>8}{"tensors":>9}']
        for g in groups:
            lines.append(f'{g["group_name"]:<22}{g["layer_id"]:>6}{g["lr_scale"]:>12.6g}'
                         f'{g["lr"]:>12.4g}{g["weight_decay"]:>8.3g}{len(g["params"]):>9}')
        print_log('\n'.join(lines), logger='current')
        for g in groups:
            print_log(f'{g["group_name"]}: {", ".join(g["param_names"])}', logger='current',
                      level=10)  # logging.DEBUG

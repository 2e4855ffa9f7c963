"""A multi-scale ConvNeXt (V1 and V2) backbone for dense prediction.

The architecture follows "A ConvNet for the 2020s" (Liu et al., CVPR 2022) and, with
``version='v2'``, "ConvNeXt V2" (Woo et al., CVPR 2023): a patchify stem, four stages of
depthwise 7x7 / inverted-bottleneck blocks, separate LayerNorm + 2x2-conv downsampling layers, and
one channels-first LayerNorm on every returned stage output (as in the paper's detection and
segmentation code).

Parameter names follow the official checkpoint layout (``downsample_layers.i.*``,
``stages.i.j.{dwconv,norm,pwconv1,pwconv2,gamma,grn}``, ``norm{i}``), so official ImageNet weights
load without renaming and the official layer-decay rule applies by name.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as checkpoint
from mmengine.model import BaseModule
from mmengine.model.weight_init import PretrainedInit, initialize
from mmengine.registry import MODELS
from timm.layers import DropPath, LayerNorm2d, trunc_normal_

from .archs import ARCH_SETTINGS, PUBLISHED_ARCHS
from .checkpoints.imagenet import load_pretrained

# Stride of the stem and of each downsampling layer: at output stride 32 (the default) stage i
# runs at 4 * 2**i.
STEM_STRIDE = 4
STAGE_STRIDES = (4, 8, 16, 32)
# The output strides ConvNeXt(output_stride=...) supports, as timm's ConvNeXt: the stride of the
# last stage; the stages after the one that reaches it keep its resolution and dilate.
OUTPUT_STRIDES = (8, 16, 32)
KERNEL_SIZE = 7  # of the depthwise convolutions
LN_EPS = 1e-6  # the paper's LayerNorm epsilon, everywhere


def _sum_of_squares(flat: torch.Tensor) -> torch.Tensor:
    """(N, HW, C) -> (N, 1, C): the squares summed over HW, as a product with ones (``GRN``)."""
    return torch.matmul(flat.new_ones(flat.shape[0], 1, flat.shape[1]), flat * flat)


class GRN(nn.Module):
    """Global Response Normalization of ConvNeXt V2, on channels-last (N, H, W, C) input.

    NOTE: timm's ``GlobalResponseNorm`` computes the same thing, but names its parameters
    ``weight``/``bias`` with shape (C,); the official checkpoints hold ``grn.gamma``/``grn.beta``
    with shape (1, 1, 1, C), and keeping that layout lets them load without renaming.
    """

    def __init__(self, channels: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # L2 norm over space per channel, divided by its mean over channels. The sum of
        # squares is a (1, HW) x (HW, C) product with ones: on CPU, torch's vector_norm and
        # onnxruntime's ReduceL2 over the leading spatial axes of channels-last tensors run
        # several times slower than that GEMV (docs/speed.md#grn-convnext-v2).
        n, h, w, c = x.shape
        flat = x.reshape(n, h * w, c)
        device = x.device.type  # (the meta device has no autocast)
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            # in float32, as autocast runs vector_norm: a map's squares overflow float16
            with torch.autocast(device, enabled=False):
                gx = _sum_of_squares(flat.float())
        else:
            gx = _sum_of_squares(flat)
        gx = gx.sqrt().reshape(n, 1, 1, c)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return torch.addcmul(self.beta, self.gamma, x * nx) + x


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> LayerNorm -> Linear(4C) -> GELU [-> GRN] -> Linear(C) [-> layer scale]
    -> stochastic depth -> residual.

    Args:
        channels (int): Input and output channels.
        drop_path (float): Stochastic depth probability of the residual branch.
        layer_scale_init_value (float): Initial value of the per-channel layer scale ``gamma``;
            0 disables it (ConvNeXt V2).
        use_grn (bool): Put Global Response Normalization after GELU (ConvNeXt V2).
        with_cp (bool): Recompute the block in backward instead of storing its activations.
        dilation (int): Dilation of the depthwise convolution (stages past the output stride);
            the padding grows with it, so the block keeps its input's size.
    """

    def __init__(self,
                 channels: int,
                 drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 use_grn: bool = False,
                 with_cp: bool = False,
                 dilation: int = 1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=KERNEL_SIZE,
                                padding=dilation * (KERNEL_SIZE - 1) // 2, dilation=dilation,
                                groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LN_EPS)
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.grn = GRN(4 * channels) if use_grn else None
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = (nn.Parameter(torch.full((channels, ), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.with_cp = with_cp

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dwconv(x)
        # (N, C, H, W) -> (N, H, W, C); a free view when x is channels-last in memory.
        x = self.norm(x.permute(0, 2, 3, 1))
        x = self.act(self.pwconv1(x))
        if self.grn is not None:
            x = self.grn(x)
        x = self.pwconv2(x)
        if self.gamma is not None:
            x = x * self.gamma
        return x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The one forward; convnext_backbone.inference replaces the blocks for CPU inference.
        if self.with_cp and self.training:
            branch = checkpoint.checkpoint(self._residual, x, use_reentrant=False)
        else:
            branch = self._residual(x)
        return x + self.drop_path(branch)


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """ConvNeXt backbone returning per-stage feature maps for FPN / UPerNet necks.

    Registered in mmengine's root ``MODELS`` registry, so ``type='ConvNeXt'`` builds from
    ``mmdet.registry.MODELS`` and ``mmseg.registry.MODELS`` alike (child registries fall back to
    the root).

    Input sizes need not be multiples of 32: the stem and downsampling convolutions floor odd
    sizes, exactly like the reference implementation. An input must be at least
    ``output_stride`` pixels high and wide (one cell of the last stage).

    With ``output_stride`` 16 or 8 the stages past it run at that stride, as timm's ConvNeXt
    does it (and DeepLab's dilated backbones): their downsampling convolution stops striding
    (the first such one, 2x2 with dilation 1, pads one zero row and column at the bottom and
    right; the second, dilated by 2, one on each side) and their 7x7 depthwise convolutions
    dilate by 2, then 4. No parameter changes, so every checkpoint loads as it is.

    Args:
        arch (str | dict): A size from ``ARCH_SETTINGS`` published for ``version``, or a dict
            ``dict(depths=(...4 ints), widths=(...4 ints))``.
        version (str): ``'v1'`` (layer scale) or ``'v2'`` (GRN after GELU, no layer scale).
        in_channels (int): Channels of the input image.
        out_indices (Sequence[int]): Stages whose outputs are returned (0..3, negative indices
            count from the end); returned in increasing stage order.
        drop_path_rate (float): Stochastic depth rate of the last block; it rises linearly from
            0 over all blocks.
        layer_scale_init_value (float, optional): Initial layer-scale value; None takes the
            version's default (1e-6 for V1, off for V2); 0 disables it.
        frozen_stages (int): -1 freezes nothing; 0 freezes the stem; k >= 1 freezes the stem and
            stages 0..k-1 with their downsampling layers (no grad, eval mode, also after
            ``train()``).
        with_cp (bool): Gradient checkpointing per block (saves activation memory).
        channels_last (bool): Run in channels-last memory layout, which removes the copies that
            the blocks' permutations otherwise cost. Outputs are equal either way, and always
            contiguous NCHW tensors.
        output_stride (int): Stride of the last stage, one of ``OUTPUT_STRIDES`` (8, 16, 32);
            below 32 the later stages dilate instead of downsampling (see above).
        init_cfg (dict | list[dict], optional): mmengine initialization config;
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL, prefix=None)`` loads ImageNet or
            detector/segmentor weights of any supported layout exactly (see
            ``convnext_backbone.checkpoints.imagenet``), also as an entry of a list.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 version: str = 'v1',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: Optional[float] = None,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 channels_last: bool = True,
                 output_stride: int = 32,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.depths, self.widths = _resolve_arch(arch, version)
        self.version = version
        self.use_grn = version == 'v2'
        if layer_scale_init_value is None:
            layer_scale_init_value = 0.0 if self.use_grn else 1e-6
        elif self.use_grn and layer_scale_init_value > 0:
            raise ValueError('ConvNeXt V2 has no layer scale; got layer_scale_init_value='
                             f'{layer_scale_init_value}, expected None or 0 with version="v2"')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.in_channels = in_channels
        self.out_indices = _resolve_out_indices(out_indices)
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4 (-1: none, 0: stem, k: stem and the '
                             f'first k stages), got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.channels_last = channels_last
        if (not isinstance(output_stride, int) or isinstance(output_stride, bool)
                or output_stride not in OUTPUT_STRIDES):
            raise ValueError(f'output_stride must be one of {", ".join(map(str, OUTPUT_STRIDES))}'
                             ' (the stride of the last stage; the stages past it dilate), got '
                             f'{output_stride!r}')
        self.output_stride = output_stride
        plan = _stage_plan(output_stride)
        # Stride (relative to the input) at which each stage runs, and its blocks' dilation.
        self.stage_strides: Tuple[int, ...] = tuple(p.stride for p in plan)
        self.dilations: Tuple[int, ...] = tuple(p.dilation for p in plan)

        # downsample_layers[0] is the patchify stem, [1..3] the LayerNorm + 2x2 conv between
        # stages (names as in the official code, so official checkpoints load directly).
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_channels, self.widths[0], kernel_size=STEM_STRIDE,
                          stride=STEM_STRIDE),
                LayerNorm2d(self.widths[0], eps=LN_EPS))
        ])
        for i in range(1, 4):
            if plan[i].downsample_stride > 1:
                conv = nn.Conv2d(self.widths[i - 1], self.widths[i], kernel_size=2, stride=2)
            else:
                # NOTE: as timm's ConvNeXtStage: the same 2x2 weights, stride 1, dilated like
                # the previous stage's blocks, 'same' padding. For an even kernel PyTorch pads
                # the odd pixel at the bottom / right with zeros, as timm's Conv2dSame does.
                conv = nn.Conv2d(self.widths[i - 1], self.widths[i], kernel_size=2, stride=1,
                                 dilation=plan[i].downsample_dilation, padding='same')
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(self.widths[i - 1], eps=LN_EPS), conv))

        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        for i, (depth, width) in enumerate(zip(self.depths, self.widths)):
            first = sum(self.depths[:i])
            self.stages.append(
                nn.Sequential(*[
                    ConvNeXtBlock(width, drop_path=rates[first + j],
                                  layer_scale_init_value=layer_scale_init_value,
                                  use_grn=self.use_grn, with_cp=with_cp,
                                  dilation=self.dilations[i]) for j in range(depth)
                ]))
        # One channels-first LayerNorm per returned stage, as in the paper's dense models.
        for i in self.out_indices:
            self.add_module(f'norm{i}', LayerNorm2d(self.widths[i], eps=LN_EPS))

        self._layer_ids_cache: Dict[str, Dict[str, int]] = {}
        self.apply(_init_weights)
        self._freeze_stages()

    # ----------------------------------------------------------------------------- outputs
    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each returned feature map, in output order (a neck's ``in_channels``)."""
        return tuple(self.widths[i] for i in self.out_indices)

    @property
    def out_strides(self) -> Tuple[int, ...]:
        """Stride (relative to the input) of each returned feature map, in output order; none
        above ``output_stride``."""
        return tuple(self.stage_strides[i] for i in self.out_indices)

    @property
    def feature_info(self) -> List[dict]:
        """Outputs as data, timm-style: channels, reduction and the norm module of each."""
        return [
            dict(num_chs=self.widths[i], reduction=self.stage_strides[i], module=f'norm{i}')
            for i in self.out_indices
        ]

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, in_channels, H, W) -> tuple of (N, C_i, H / s_i, W / s_i), one per out index."""
        self._check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        last = self.out_indices[-1]
        for i in range(last + 1):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in self.out_indices:
                # NOTE: contiguous NCHW outputs, whatever the internal layout: mmcv's RoIAlign
                # (the COCO configs' box and mask heads) reads its input's memory as NCHW and
                # returns wrong features for a channels-last tensor.
                outs.append(getattr(self, f'norm{i}')(x).contiguous())
        return tuple(outs)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'ConvNeXt expects input of shape (N, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        least = self.output_stride  # one cell of the last stage
        if x.shape[2] < least or x.shape[3] < least:
            raise ValueError(f'ConvNeXt needs an input of at least {least}x{least} pixels (one '
                             f'stride-{least} cell), got {x.shape[2]}x{x.shape[3]}')

    # ----------------------------------------------------------------------------- freezing
    def _frozen_modules(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        modules: List[nn.Module] = [self.downsample_layers[0]]
        for i in range(self.frozen_stages):
            modules += [self.downsample_layers[i], self.stages[i]]
        return modules

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ConvNeXt':
        super().train(mode)
        self._freeze_stages()  # frozen parts stay in eval mode (drop path off)
        return self

    # ----------------------------------------------------------------------------- weights
    def init_weights(self) -> None:
        """Load every ``dict(type='Pretrained', ...)`` of ``init_cfg`` (a dict or a list) exactly
        (``checkpoints.imagenet.load_pretrained``); mmengine's own ``PretrainedInit`` would load
        it with ``strict=False`` and leave a foreign layout's weights unloaded, silently.

        As mmengine orders them, the other entries are applied first, in order (by mmengine's
        ``initialize``), then the ``Pretrained`` ones, which overwrite what they load."""
        entries = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        pretrained = [e for e in entries if _is_pretrained(e)]
        if not pretrained:
            return super().init_weights()
        others = [e for e in entries if not _is_pretrained(e)]
        if others:
            initialize(self, others)
        for entry in pretrained:
            load_pretrained(self, **{k: v for k, v in entry.items() if k != 'type'})
        self._is_init = True

    def no_weight_decay(self) -> set:
        """Names of parameters that are not 1-D yet must not be decayed: GRN's (1, 1, 1, C)
        gamma and beta (timm's convention)."""
        return {name for name, _ in self.named_parameters() if '.grn.' in name}

    # ----------------------------------------------------------------------------- lr decay
    @property
    def num_layers(self) -> int:
        """The official ``num_layers`` of layer-wise decay for this arch: stem (0), stage 0 (1),
        stage 1 (2), stage 2 in groups of three blocks (3...), stage 3 (last). This gives 6 for
        9-block third stages (T) and 12 for 27-block ones (S/B/L/XL), as the official recipes."""
        return 3 + math.ceil(self.depths[2] / 3)

    def get_layer_depth(self, param_name: str, decay_type: str = 'layer_wise',
                        prefix: str = '') -> Tuple[int, int]:
        """Layer id of a parameter for learning-rate decay, and ``num_layers``.

        Ids run from 0 (stem) to ``num_layers`` (last stage); parameters outside the
        downsampling layers and stages (e.g. the output norms) get ``num_layers + 1``, i.e. the
        full learning rate. The learning-rate scale is ``decay_rate ** (num_layers + 1 - id)``.
        Ids count layers in depth, not resolution: ``output_stride`` changes none of them (a
        dilated stage is as deep, with the same parameters).

        Args:
            param_name (str): Parameter name, as in ``named_parameters()``.
            decay_type (str): ``'layer_wise'`` or ``'stage_wise'`` (every downsampling layer 0,
                stage i at i + 1).
            prefix (str): Prefix to strip from ``param_name`` (e.g. ``'backbone.'``).
        """
        if decay_type not in self._layer_ids_cache:  # the names never change: built once
            self._layer_ids_cache[decay_type] = self._layer_ids(decay_type)
        ids = self._layer_ids_cache[decay_type]
        if param_name.startswith(prefix):
            param_name = param_name[len(prefix):]
        return ids.get(param_name, self.num_layers + 1), self.num_layers

    def _layer_ids(self, decay_type: str) -> Dict[str, int]:
        if decay_type not in ('layer_wise', 'stage_wise'):
            raise ValueError(f"decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}")
        last = self.num_layers
        ids: Dict[str, int] = {}
        for i, layer in enumerate(self.downsample_layers):
            layer_id = 0 if decay_type == 'stage_wise' else (0, 2, 3, last)[i]
            ids.update({name: layer_id for name, _ in
                        layer.named_parameters(prefix=f'downsample_layers.{i}')})
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                if decay_type == 'stage_wise':
                    layer_id = i + 1
                else:
                    layer_id = (1, 2, 3 + j // 3, last)[i]
                ids.update({name: layer_id for name, _ in
                            block.named_parameters(prefix=f'stages.{i}.{j}')})
        return ids


class _StagePlan(NamedTuple):
    """How a stage runs for an output stride."""
    stride: int  # at which the stage's blocks run, relative to the input
    downsample_stride: int  # of its downsampling layer (the stem for stage 0)
    downsample_dilation: int  # of its downsampling convolution
    dilation: int  # of its blocks' depthwise convolutions


def _stage_plan(output_stride: int) -> Tuple[_StagePlan, ...]:
    """timm's rule (``timm.models.convnext.ConvNeXt``): once the running stride has reached
    ``output_stride``, a stage's downsampling layer keeps stride 1 and the dilation doubles in
    its place; the downsampling convolution takes the previous stages' dilation (1 for the
    first dilated stage, 2 for the second, timm's ``first_dilation``)."""
    plan = [_StagePlan(STEM_STRIDE, STEM_STRIDE, 1, 1)]
    running, dilation = STEM_STRIDE, 1
    for _ in range(1, 4):
        stride = 2
        if running >= output_stride:
            dilation, stride = dilation * stride, 1
        running *= stride
        first_dilation = 1 if dilation in (1, 2) else 2
        plan.append(_StagePlan(running, stride, first_dilation, dilation))
    return tuple(plan)


def _is_pretrained(init_cfg) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') in ('Pretrained', PretrainedInit)


def _init_weights(module: nn.Module) -> None:
    # The reference initialization: truncated normal (std 0.02) for convs and linears.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def _resolve_arch(arch: Union[str, dict], version: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    if version not in PUBLISHED_ARCHS:
        raise ValueError(f'version must be one of {sorted(PUBLISHED_ARCHS)}, got {version!r}')
    if isinstance(arch, str):
        if arch not in PUBLISHED_ARCHS[version]:
            raise ValueError(f'Unknown ConvNeXt {version} arch {arch!r}; expected one of '
                             f'{", ".join(PUBLISHED_ARCHS[version])} or a dict(depths=..., '
                             'widths=...)')
        return ARCH_SETTINGS[arch]
    if isinstance(arch, dict) and set(arch) == {'depths', 'widths'}:
        depths, widths = tuple(arch['depths']), tuple(arch['widths'])
        if len(depths) == 4 and len(widths) == 4 and all(
                isinstance(v, int) and v > 0 for v in depths + widths):
            return depths, widths
    raise ValueError('arch must be a name or dict(depths=(4 positive ints), widths=(4 positive '
                     f'ints)), got {arch!r}')


def _resolve_out_indices(out_indices: Sequence[int]) -> Tuple[int, ...]:
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    resolved = []
    for index in out_indices:
        if not -4 <= index <= 3:
            raise ValueError(f"out_indices must be stage indices in -4..3, got "
                             f"{tuple(out_indices)}")
        resolved.append(index % 4)
    if not resolved or len(set(resolved)) != len(resolved):
        raise ValueError(f'out_indices must name distinct stages, got {tuple(out_indices)}')
    return tuple(sorted(resolved))

"""Parameters and FLOPs of a config's whole model and of its backbone, counted as the ConvNeXt
paper, MMDetection's and MMSegmentation's ``get_flops.py`` count them.

The counter is mmengine's ``FlopAnalyzer`` (fvcore's, moved into mmengine): it traces one
forward and counts one FLOP per multiply-add of convolutions, matrix products and linear layers,
plus its estimates of normalization, upsampling and pooling; element-wise operations (GELU,
additions, sigmoid, softmax) and mmcv's compiled ops (NMS, RoIAlign) count nothing. The forward
is the model's ``mode='tensor'`` one, as upstream's tools run it: for a detector the backbone,
the neck, the RPN and the RoI heads on the RPN's proposals (up to 1000 boxes, masks on the
first 100; without the final NMS), for a segmentor the backbone and the decode head (no
auxiliary head), on one image of zeros at ``shape``. Building a config downloads nothing: its
backbone's ``init_cfg`` is dropped, since counting needs no trained weights.
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

# The input size of the paper's detection FLOPs (height, width): MMDetection 2's get_flops.py
# default, 1280x800, that the ConvNeXt and Swin tables use.
DETECTION_SHAPE = (800, 1280)


@dataclass(frozen=True)
class Complexity:
    """Parameters and, where counted, FLOPs (multiply-adds) of a model and its backbone;
    ``uncounted``: the traced operators that counted nothing, and how often each ran."""
    params: int
    backbone_params: int
    shape: Optional[Tuple[int, int]] = None
    flops: Optional[int] = None
    backbone_flops: Optional[int] = None
    uncounted: Counter = field(default_factory=Counter)


def default_shape(cfg: Config) -> Tuple[int, int]:
    """The input (height, width) of the paper's FLOPs for the config: 800x1280 for detection;
    for segmentation the test resize scale (2048x512 for ADE20K at 512, 2560x640 at 640)."""
    if cfg.get('default_scope') == 'mmdet':
        return DETECTION_SHAPE
    pipeline = cfg.test_dataloader.dataset.pipeline
    scales = [step['scale'] for step in pipeline if step['type'] == 'Resize' and 'scale' in step]
    if not scales:
        raise ValueError('The test pipeline has no Resize with a scale to count FLOPs at; '
                         'give the input size (--shape H W)')
    width, height = scales[0]  # mmcv's scales are (width, height)
    return height, width


def build_for_counting(cfg: Config, device: str = 'cpu') -> torch.nn.Module:
    """The config's model in eval mode, its backbone without ``init_cfg`` (nothing downloaded);
    ``device='meta'`` builds it without memory (enough for parameter counts)."""
    from mmengine.model import revert_sync_batchnorm
    cfg = cfg.copy()
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.device(device):
        model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


def count_parameters(cfg: Config) -> Complexity:
    """The parameters of the config's model and of its backbone (built on the meta device)."""
    model = build_for_counting(cfg, device='meta')
    return Complexity(params=_numel(model), backbone_params=_numel(model.backbone))


def count_complexity(cfg: Config, shape: Optional[Tuple[int, int]] = None) -> Complexity:
    """Parameters and FLOPs of the config's model at ``shape`` (height, width; default:
    ``default_shape``), on the CPU: one traced forward of the whole model."""
    from mmengine.analysis import FlopAnalyzer
    from mmengine.analysis.jit_handles import bmm_flop_jit
    shape = tuple(shape or default_shape(cfg))
    model = build_for_counting(cfg)
    inputs = torch.zeros(1, 3, *shape)
    with DefaultScope.overwrite_default_scope(cfg.default_scope), torch.no_grad():
        model.forward = _tensor_forward(model, _data_sample(cfg, shape))
        analyzer = FlopAnalyzer(model, (inputs, ))
        # torch's attention with a mask (Mask2Former's masked attention) multiplies Q by K
        # through baddbmm, which mmengine leaves uncounted: its batch1 @ batch2 is a bmm.
        analyzer.set_op_handle('aten::baddbmm', lambda i, o: bmm_flop_jit(i[1:3], o))
        analyzer.unsupported_ops_warnings(False)  # reported in ``uncounted``
        analyzer.uncalled_modules_warnings(False)  # the auxiliary head, training-only losses
        flops = analyzer.total()
        return Complexity(params=_numel(model), backbone_params=_numel(model.backbone),
                          shape=shape, flops=flops,
                          backbone_flops=analyzer.by_module()['backbone'],
                          uncounted=Counter(analyzer.unsupported_ops()))


def _tensor_forward(model: torch.nn.Module, sample):
    """The model's ``mode='tensor'`` forward on one image; for a decode head that needs the
    data samples (mmseg's Mask2Former head, whose ``mode='tensor'`` call leaves them out) the
    backbone, neck and head called with them."""
    head = getattr(model, 'decode_head', None)
    if head is not None and 'batch_data_samples' in inspect.signature(head.forward).parameters:
        return lambda inputs: head(model.extract_feat(inputs), [sample])
    return partial(model.forward, data_samples=[sample], mode='tensor')


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _data_sample(cfg: Config, shape: Tuple[int, int]):
    """One image's metadata as the data preprocessor leaves it (no resize, no padding)."""
    if cfg.default_scope == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    sample = Sample()
    sample.set_metainfo(dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                             batch_input_shape=shape, scale_factor=(1.0, 1.0)))
    return sample

"""tools/get_flops.py's counts: every paper config's parameters against the paper's tables,
the backbone's multiply-adds against torch's own counter, the whole models' FLOPs (slow)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch.utils.flop_counter import FlopCounterMode

from convnext_backbone import ConvNeXt
from convnext_backbone.analysis.complexity import (count_complexity, count_parameters,
                                                   default_shape)

from .helpers import ROOT

# Parameters (millions) of the ConvNeXt paper's Tables 3 and 4.
PAPER_PARAMS = {
    'mask_rcnn_convnext_t': 48, 'cascade_mask_rcnn_convnext_t': 86,
    'cascade_mask_rcnn_convnext_s': 108, 'cascade_mask_rcnn_convnext_b': 146,
    'cascade_mask_rcnn_convnext_b_in22k': 146, 'cascade_mask_rcnn_convnext_l_in22k': 255,
    'cascade_mask_rcnn_convnext_xl_in22k': 407, 'upernet_convnext_t': 60,
    'upernet_convnext_s': 82, 'upernet_convnext_b': 122, 'upernet_convnext_b_in22k': 122,
    'upernet_convnext_l_in22k': 235, 'upernet_convnext_xl_in22k': 391,
}


def _config(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name + '.py'))


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_parameters_match_the_paper(name):
    assert abs(count_parameters(_config(name)).params / 1e6 - PAPER_PARAMS[name]) < 0.5


# The field's recipes publish no parameter counts; their own models, as MMDetection builds them
# (mmpretrain's ConvNeXt with gap_before_final_norm=False, the backbone detrex and the ConvNeXt-V2
# project configure), are the reference: the same number of parameters, to the one.
MMPRETRAIN = dict(type='mmpretrain.ConvNeXt', gap_before_final_norm=False,
                  layer_scale_init_value=1.0)
UPSTREAM_MODELS = {
    'rtmdet_l_convnext_b': ('mmdet::rtmdet/rtmdet_l_convnext_b_4xb32-100e_coco.py', {}),
    'dino_4scale_convnext_t_12e': ('mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py', dict(
        backbone=dict(MMPRETRAIN, arch='tiny', out_indices=[1, 2, 3]),
        neck=dict(in_channels=[192, 384, 768]))),
    'mask_rcnn_convnextv2_b_lsj_3x': ('mmdet::_base_/models/mask-rcnn_r50_fpn.py', dict(
        backbone=dict(MMPRETRAIN, arch='base', out_indices=[0, 1, 2, 3], use_grn=True,
                      layer_scale_init_value=0.0),
        neck=dict(in_channels=[128, 256, 512, 1024]))),
}


@pytest.mark.parametrize('name', sorted(UPSTREAM_MODELS))
def test_parameters_match_mmdetections_models(name):
    import mmpretrain.models  # noqa: F401  registers mmpretrain.ConvNeXt
    from mmengine.hub import get_config
    from mmengine.registry import MODELS, DefaultScope
    base, change = UPSTREAM_MODELS[name]
    upstream = get_config(base).model
    upstream.backbone.init_cfg = None
    for key, value in change.items():
        upstream[key] = dict(upstream[key], **value) if key == 'neck' else value
    with DefaultScope.overwrite_default_scope('mmdet'):  # (mmpretrain's needs real tensors)
        theirs = MODELS.build(upstream)
    ours = count_parameters(_config(name))
    assert ours.params == sum(p.numel() for p in theirs.parameters())
    assert ours.backbone_params == sum(p.numel() for p in theirs.backbone.parameters())


def test_default_shapes_are_the_papers():
    assert default_shape(_config('mask_rcnn_convnext_t')) == (800, 1280)
    assert default_shape(_config('upernet_convnext_t')) == (512, 2048)
    assert default_shape(_config('upernet_convnext_l_in22k')) == (640, 2560)


def test_backbone_multiply_adds_are_exact():
    """The blocks' two linear layers (C -> 4C -> C) by hand, and with the convolutions as
    torch's FlopCounterMode counts them (2 per multiply-add); mmengine's analyzer adds only its
    norm estimates."""
    from mmengine.analysis import FlopAnalyzer
    model = ConvNeXt('atto').eval()  # depths 2, 2, 6, 2; widths 40, 80, 160, 320
    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.unsupported_ops_warnings(False)
        by_op = analyzer.by_operator()
    pixels = [16 * 24, 8 * 12, 4 * 6, 2 * 3]  # strides 4, 8, 16, 32
    linear = sum(d * p * 8 * c * c for d, p, c in zip((2, 2, 6, 2), pixels, (40, 80, 160, 320)))
    assert by_op['linear'] == linear
    assert by_op['conv'] + by_op['linear'] == counter.get_total_flops() // 2
    assert analyzer.total() == sum(by_op.values()) and by_op['layer_norm'] > 0


@pytest.mark.slow
@pytest.mark.parametrize('name,paper', [('mask_rcnn_convnext_t', 262),
                                        ('upernet_convnext_t', 939)])
def test_whole_model_flops_match_the_paper(name, paper):
    result = count_complexity(_config(name))
    assert abs(result.flops / 1e9 - paper) < 1
    assert 0 < result.backbone_flops < result.flops


def test_mask2former_is_counted_with_its_masked_attention():
    """Its head needs the data samples mmseg's tensor mode leaves out; the Q-K products of its
    masked attention (baddbmm) count as matrix products."""
    result = count_complexity(_config('mask2former_convnext_t'), (64, 64))
    assert 0 < result.backbone_flops < result.flops
    assert 'aten::baddbmm' not in result.uncounted

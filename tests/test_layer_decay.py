"""Learning-rate decay by depth: exact scales, the official rule, and misconfiguration."""
import socket

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from torch import nn

from convnext_backbone import ConvNeXt, ConvNeXtLayerDecayOptimizerConstructor

TINY = dict(depths=(1, 1, 6, 1), widths=(8, 8, 16, 16))  # num_layers = 3 + 6 / 3 = 5


class Classifier(nn.Module):
    def __init__(self, **backbone_kwargs):
        super().__init__()
        self.backbone = ConvNeXt(**backbone_kwargs)
        self.head = nn.Linear(16, 2)


def _optimizer(model, lr=1.0, wd=0.25, **paramwise):
    constructor = ConvNeXtLayerDecayOptimizerConstructor(
        dict(optimizer=dict(type='AdamW', lr=lr, weight_decay=wd)), paramwise)
    return constructor(model).optimizer


def _per_param(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g['lr'], g['weight_decay']) for g in optimizer.param_groups
            for p in g['params']}


def _expected_layer_id(name, decay_type):
    """The official rule, written out for TINY (num_layers 5; 6 = outside the stages)."""
    parts = name.split('.')
    if parts[0] != 'backbone' or parts[1] not in ('downsample_layers', 'stages'):
        return 6
    stage = int(parts[2])
    if decay_type == 'stage_wise':
        return 0 if parts[1] == 'downsample_layers' else stage + 1
    if parts[1] == 'downsample_layers':
        return (0, 2, 3, 5)[stage]
    return (1, 2, 3 + int(parts[3]) // 3, 5)[stage]


@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('version', ['v1', 'v2'])
def test_exact_scales(decay_type, version):
    # Base lr 1 and decay rate 1/2: every expected lr is a power of two, exact in floating point.
    model = Classifier(arch=TINY, version=version)
    got = _per_param(_optimizer(model, decay_rate=0.5, decay_type=decay_type), model)
    assert set(got) == {n for n, _ in model.named_parameters()}
    for name, param in model.named_parameters():
        lr, wd = got[name]
        assert lr == 2.0**-(6 - _expected_layer_id(name, decay_type)), name
        no_decay = param.ndim == 1 or name.endswith('.bias') or '.grn.' in name
        assert wd == (0.0 if no_decay else 0.25), name
    assert got['head.weight'] == (1.0, 0.25) and got['backbone.norm3.weight'] == (1.0, 0.0)
    assert got['backbone.downsample_layers.0.0.weight'][0] == 2.0**-6


@pytest.mark.parametrize('version,arch,expected', [
    ('v1', 'atto', 5), ('v1', 'nano', 6), ('v1', 'tiny', 6), ('v1', 'small', 12),
    ('v1', 'base', 12), ('v1', 'large', 12), ('v1', 'xlarge', 12), ('v1', 'xxlarge', 13),
    ('v2', 'atto', 5), ('v2', 'tiny', 6), ('v2', 'base', 12), ('v2', 'huge', 12)])
def test_auto_num_layers(version, arch, expected):
    with torch.device('meta'):
        model = ConvNeXt(arch, version=version)
    assert model.num_layers == expected
    # The deepest block of the third stage sits just below the last stage, never above it.
    last_block = f'stages.2.{model.depths[2] - 1}.dwconv.weight'
    assert model.get_layer_depth(last_block) == (expected - 1, expected)
    assert model.get_layer_depth('stages.3.0.dwconv.weight') == (expected, expected)


def test_explicit_num_layers_must_fit():
    model = Classifier(arch=TINY)
    assert _per_param(_optimizer(model, decay_rate=0.5, num_layers=5), model) == \
        _per_param(_optimizer(model, decay_rate=0.5), model)
    with pytest.raises(ValueError, match=r'num_layers=4 does not fit .* gives? 5 layers; use '
                       r"num_layers=5 or 'auto'"):
        _optimizer(model, decay_rate=0.5, num_layers=4)


@pytest.mark.parametrize('paramwise,message', [
    (dict(decay_rate=0.0), r'decay_rate must be a number in \(0, 1\], got 0.0'),
    (dict(decay_rate=1.5), r'got 1.5'),
    (dict(), r'got None'),
    (dict(decay_rate=0.9, decay_type='block_wise'), "decay_type must be one of .*'block_wise'"),
    (dict(decay_rate=0.9, custom_keys={'head': dict(decay_mult=0.0)}),
     r"keys \['custom_keys'\] are not ones of .*decay_rate, decay_type, num_layers, "
     r'no_decay_keys.*would be ignored'),
    (dict(decay_rate=0.9, no_decay_keys='head'), r"no_decay_keys must be a list .*'head'"),
])
def test_bad_settings(paramwise, message):
    with pytest.raises(ValueError, match=message):
        _optimizer(Classifier(arch=TINY), **paramwise)


def test_no_decay_keys():
    model = Classifier(arch=TINY)
    plain = _per_param(_optimizer(model, decay_rate=0.5), model)
    got = _per_param(_optimizer(model, decay_rate=0.5, no_decay_keys=['head.']), model)
    assert got['head.weight'] == (1.0, 0.0) and plain['head.weight'] == (1.0, 0.25)
    assert {n: v for n, v in got.items() if n != 'head.weight'} == \
        {n: v for n, v in plain.items() if n != 'head.weight'}
    with pytest.raises(ValueError, match=r"no_decay_keys \['query_embeds'\] match no "
                       r"parameter of the model \(e.g. 'head.bias'\)"):
        _optimizer(model, decay_rate=0.5, no_decay_keys=['head.', 'query_embeds'])


def test_model_without_convnext_backbone():
    model = nn.Module()
    model.backbone = nn.Conv2d(3, 3, 1)
    with pytest.raises(TypeError, match='get_layer_depth'):
        _optimizer(model, decay_rate=0.9)


def test_frozen_parameters_are_left_out():
    model = Classifier(arch=TINY, frozen_stages=1)
    got = _per_param(_optimizer(model, decay_rate=0.5), model)
    assert not any(n.startswith(('backbone.downsample_layers.0', 'backbone.stages.0')) for n in got)
    assert 'backbone.stages.1.0.dwconv.weight' in got


def test_distributed_wrapper(tmp_path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    try:
        model = Classifier(arch=TINY)
        plain = _per_param(_optimizer(model, decay_rate=0.5), model)
        wrapped = MMDistributedDataParallel(model)
        assert _per_param(_optimizer(wrapped, decay_rate=0.5), model) == plain
    finally:
        dist.destroy_process_group()


def test_groups_set_real_learning_rates_and_log_a_table(capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('test_layer_decay', log_level='INFO')
    model = Classifier(arch=TINY)
    optimizer = _optimizer(model, lr=0.001, decay_rate=0.5)
    lrs = sorted({g['lr'] for g in optimizer.param_groups})
    assert lrs == [0.001 * 2.0**-k for k in range(6, -1, -1)]
    out = capsys.readouterr().out
    assert 'layer_wise lr decay: rate 0.5, num_layers 5' in out
    assert 'layer_0_decay' in out and 'lr scale' in out


# ------------------------------------------------------------ against the upstream constructors
def _upstream_equal(model, upstream_cls, paramwise):
    optim = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
    ours = _per_param(ConvNeXtLayerDecayOptimizerConstructor(optim, paramwise)(model).optimizer,
                      model)
    theirs = _per_param(upstream_cls(optim, paramwise)(model).optimizer, model)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name][1] == theirs[name][1], name
        assert ours[name][0] == pytest.approx(theirs[name][0], rel=1e-12), name
    assert len({lr for lr, _ in ours.values()}) > 5


@pytest.mark.parametrize('arch,decay_rate,num_layers', [('tiny', 0.95, 6), ('small', 0.7, 12)])
def test_matches_mmdet_on_mask_rcnn(arch, decay_rate, num_layers):
    import convnext_backbone  # noqa: F401
    from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.hub import get_config
    register_all_modules()
    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model
    cfg.backbone = dict(type='ConvNeXt', arch=arch, drop_path_rate=0.4)
    cfg.neck.in_channels = list(ConvNeXt(arch).out_channels)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg)
    _upstream_equal(model, LearningRateDecayOptimizerConstructor,
                    dict(decay_rate=decay_rate, decay_type='layer_wise', num_layers=num_layers))


def test_matches_mmseg_on_upernet():
    import convnext_backbone  # noqa: F401
    from mmengine.hub import get_config
    from mmseg.engine.optimizers import LearningRateDecayOptimizerConstructor
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = get_config('mmseg::_base_/models/upernet_r50.py').model
    cfg.pretrained = None  # upernet_r50's ResNet weights
    cfg.backbone = dict(type='ConvNeXt', arch='tiny', drop_path_rate=0.4)
    cfg.decode_head.in_channels = [96, 192, 384, 768]
    cfg.auxiliary_head.in_channels = 384
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg)
    for decay_type in ('stage_wise', 'layer_wise'):
        _upstream_equal(model, LearningRateDecayOptimizerConstructor,
                        dict(decay_rate=0.9, decay_type=decay_type, num_layers=6))


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_found_by_name_from_both_stacks(scope):
    __import__(scope)  # the child registries exist
    model = Classifier(arch=TINY)
    cfg = dict(constructor='ConvNeXtLayerDecayOptimizerConstructor',
               optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
               paramwise_cfg=dict(decay_rate=0.5))
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, cfg)
    assert min(g['lr'] for g in wrapper.optimizer.param_groups) == 2.0**-6


def _field_model(name):
    """The model of a config of configs/ (no ImageNet weights)."""
    import os.path as osp

    import convnext_backbone  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import MODELS
    cfg = Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                                   f'{name}.py'))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        return cfg, MODELS.build(cfg.model)  # (no memory: the optimizers need names only)


@pytest.mark.parametrize('name', ['rtmdet_l_convnext_b', 'demo/dino_convnext_shapes_demo'])
def test_matches_mmdet_on_rtmdet_and_dino(name):
    """RTMDet-L-B with its recipe's decay (0.8 over 12 layers, the constructor upstream uses),
    and a DINO: the same lr and weight decay as mmdet's constructor for every parameter, and
    the full lr for every one outside the backbone (neck, head, transformer, queries)."""
    from mmdet.engine.optimizers import LearningRateDecayOptimizerConstructor
    cfg, model = _field_model(name)
    paramwise = dict(decay_rate=0.8, decay_type='layer_wise', num_layers='auto')
    if name.startswith('rtmdet'):
        paramwise = dict(cfg.optim_wrapper.paramwise_cfg)
        assert paramwise == dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12)
    optim = dict(optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05))
    ours = _per_param(ConvNeXtLayerDecayOptimizerConstructor(optim, paramwise)(model).optimizer,
                      model)
    outside = [n for n in ours if not n.startswith('backbone.')]
    assert len(outside) > 50 and all(ours[n][0] == 1.0 for n in outside)
    upstream = dict(paramwise, num_layers=model.backbone.num_layers)
    _upstream_equal(model, LearningRateDecayOptimizerConstructor, upstream)


def test_dino_config_optimizer_is_detrex():
    """The DINO config's optimizer (mmdet's DINO: backbone lr x 0.1 by custom_keys; detrex's
    weight_decay_norm=0): every backbone parameter at 0.1 of the lr with weight decay (detrex's
    ConvNeXt LayerNorm is no torch norm, so its rule decays it), the rest at the full lr;
    no weight decay on the other norms (neck GroupNorm, transformer LayerNorms), decay on
    biases (detectron2 decays them)."""
    cfg, model = _field_model('demo/dino_convnext_shapes_demo')
    with DefaultScope.overwrite_default_scope('mmdet'):
        got = _per_param(build_optim_wrapper(model, cfg.optim_wrapper).optimizer, model)
    norms = {f'{m}.{p}' for m, module in model.named_modules()
             if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) for p in ('weight', 'bias')}
    lr, wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    for name, (param_lr, param_wd) in got.items():
        if name.startswith('backbone.'):
            assert (param_lr, param_wd) == (pytest.approx(0.1 * lr), wd), name
        else:
            assert (param_lr, param_wd) == (lr, 0.0 if name in norms else wd), name
    assert 'neck.convs.0.gn.weight' in norms and 'encoder.layers.0.norms.0.bias' in norms
    assert got['bbox_head.cls_branches.0.bias'] == (lr, wd)
    # The layer-decay constructor refuses custom_keys rather than ignore them.
    with pytest.raises(ValueError, match=r"paramwise_cfg keys \['custom_keys', "
                       r"'norm_decay_mult'\] are not ones of"):
        ConvNeXtLayerDecayOptimizerConstructor(dict(optimizer=cfg.optim_wrapper.optimizer),
                                               cfg.optim_wrapper.paramwise_cfg)

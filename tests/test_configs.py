"""Every shipped config: neck/head channels match the backbone, the ImageNet checkpoint is named,
lr decay fits the arch, and the model, optimizer and datasets build and train one step."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from convnext_backbone import ConvNeXt
from convnext_backbone.data.demo import SHAPES, make_ade_shapes, make_coco_shapes

from .helpers import ROOT

CONFIGS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '*.py')))
DEMOS = sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))
# The official release of each paper config's ImageNet checkpoint (docs/weights.md).
OFFICIAL = 'https://dl.fbaipublicfiles.com/convnext/'
IMAGENET = {
    'mask_rcnn_convnext_t': 'convnext_tiny_1k_224.pth',
    'cascade_mask_rcnn_convnext_t': 'convnext_tiny_1k_224.pth',
    'upernet_convnext_t': 'convnext_tiny_1k_224.pth',
    'cascade_mask_rcnn_convnext_s': 'convnext_small_1k_224.pth',
    'upernet_convnext_s': 'convnext_small_1k_224.pth',
    'cascade_mask_rcnn_convnext_b': 'convnext_base_1k_224.pth',
    'upernet_convnext_b': 'convnext_base_1k_224.pth',
    'cascade_mask_rcnn_convnext_b_in22k': 'convnext_base_22k_224.pth',
    'upernet_convnext_b_in22k': 'convnext_base_22k_224.pth',
    'cascade_mask_rcnn_convnext_l_in22k': 'convnext_large_22k_224.pth',
    'upernet_convnext_l_in22k': 'convnext_large_22k_224.pth',
    'cascade_mask_rcnn_convnext_xl_in22k': 'convnext_xlarge_22k_224.pth',
    'upernet_convnext_xl_in22k': 'convnext_xlarge_22k_224.pth',
    'mask_rcnn_convnextv2_t': 'convnextv2/im1k/convnextv2_tiny_1k_224_ema.pt',  # V2 release
    'deeplabv3plus_convnext_t': 'convnext_tiny_1k_224.pth',
    'mask2former_convnext_t': 'convnext_tiny_1k_224.pth',
}


def _backbone(cfg) -> ConvNeXt:
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    with torch.device('meta'):
        return ConvNeXt(**kwargs)


def test_every_config_is_listed():
    assert len(CONFIGS) == 16 and len(DEMOS) == 4
    assert sorted(IMAGENET) == sorted(osp.splitext(osp.basename(p))[0] for p in CONFIGS)


@pytest.mark.parametrize('path', CONFIGS + DEMOS)
def test_channels_checkpoint_and_decay(path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    assert cfg.model.backbone.type == 'ConvNeXt'
    backbone = _backbone(cfg)
    head = cfg.model.get('decode_head')
    if cfg.default_scope == 'mmdet':
        assert list(cfg.model.neck.in_channels) == list(backbone.out_channels)
    elif head.type == 'Mask2FormerHead':  # all four stages, no auxiliary head
        assert list(head.in_channels) == list(backbone.out_channels)
        assert list(head.strides) == list(backbone.out_strides) == [4, 8, 16, 32]
        assert 'auxiliary_head' not in cfg.model
        # One weight per class, then the no-object class's (Swin-T recipe: 0.1).
        assert head.loss_cls.class_weight == [1.0] * head.num_classes + [0.1]
    else:
        if head.type == 'DepthwiseSeparableASPPHead':  # ASPP at stride 16 on stage 3
            assert head.in_index == 3 and backbone.out_strides[3] == 16
            assert head.in_channels == backbone.out_channels[3]
            # The low-level branch reads the first output, whatever in_index says.
            assert head.c1_in_channels == backbone.out_channels[0]
            assert backbone.out_strides[0] == 4
        else:
            assert list(head.in_channels) == [backbone.out_channels[i] for i in head.in_index]
        aux = cfg.model.auxiliary_head
        assert aux.in_channels == backbone.out_channels[aux.in_index] and aux.in_index == 2
        assert aux.loss_decode.loss_weight == 0.4
    optim = cfg.optim_wrapper
    assert optim.constructor == 'ConvNeXtLayerDecayOptimizerConstructor'
    assert optim.paramwise_cfg.num_layers in ('auto', backbone.num_layers)
    if path in DEMOS:
        assert cfg.model.backbone.init_cfg is None  # trained from scratch on generated data
    elif cfg.default_scope == 'mmseg' and head.type == 'Mask2FormerHead':
        # MMSegmentation's Mask2Former recipe: fp32, gradient clipping at norm 0.01.
        assert optim.type == 'OptimWrapper' and optim.optimizer.weight_decay == 0.05
        assert optim.clip_grad == dict(max_norm=0.01, norm_type=2)
    else:
        assert optim.type == 'AmpOptimWrapper' and optim.optimizer.weight_decay == 0.05
        checkpoint = cfg.model.backbone.init_cfg.checkpoint
        assert checkpoint.startswith(OFFICIAL)  # fetched by the config (docs/weights.md)
        assert checkpoint == OFFICIAL + IMAGENET[osp.splitext(osp.basename(path))[0]]


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    make_coco_shapes(str(root / 'coco'), num_train=4, num_val=2, size=128)
    make_ade_shapes(str(root / 'ade'), num_train=4, num_val=2, size=128)
    return root


def _point_at_demo_data(cfg, root):
    for phase in ('train', 'val', 'test'):
        dataset = cfg[f'{phase}_dataloader'].dataset
        if cfg.default_scope == 'mmdet':
            split = 'train2017' if phase == 'train' else 'val2017'
            dataset.update(data_root=str(root / 'coco'), metainfo=dict(classes=SHAPES),
                           ann_file=f'annotations/instances_{split}.json',
                           data_prefix=dict(img=f'{split}/'))
        else:
            dataset.data_root = str(root / 'ade' / 'ADEChallengeData2016')
        cfg[f'{phase}_dataloader'].update(num_workers=0, persistent_workers=False)


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS)
def test_builds_and_trains_one_step(path, demo_data, tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, path))
    cfg.model.backbone.init_cfg = None  # no ImageNet weights here
    if cfg.default_scope == 'mmdet':  # fewer sampled RoIs: the heads dominate on CPU
        rcnn = cfg.model.train_cfg.rcnn
        for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
            stage.sampler.num = 64
    _point_at_demo_data(cfg, demo_data)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        # The datasets with the config's own (multi-scale, crop) pipelines.
        dataset = Runner.build_dataloader(cfg.train_dataloader).dataset
        sample = dataset[0]
        assert sample['inputs'].shape[0] == 3 and sample['data_samples'] is not None
        # One step of the real model and optimizer, on a small image to keep it fast.
        from mmengine.registry import MODELS
        from mmengine.optim import build_optim_wrapper
        model = revert_sync_batchnorm(MODELS.build(cfg.model))  # as the Runner does on 1 process
        if cfg.default_scope == 'mmseg':
            model.data_preprocessor.size = (128, 128)
        # fp32 here: AMP needs a GPU (tools/train.py makes the same switch).
        optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
        optim_cfg.pop('loss_scale', None)
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
        small = cfg.train_dataloader.dataset.copy()
        if cfg.default_scope == 'mmdet':
            small.pipeline = [dict(type='LoadImageFromFile'),
                              dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                              dict(type='Resize', scale=(128, 128), keep_ratio=True),
                              dict(type='PackDetInputs')]
        else:
            small.pipeline = [dict(type='LoadImageFromFile'),
                              dict(type='LoadAnnotations', reduce_zero_label=True),
                              dict(type='PackSegInputs')]
        loader = Runner.build_dataloader(dict(cfg.train_dataloader, dataset=small, batch_size=2,
                                              sampler=dict(type='DefaultSampler', shuffle=False)))
        before = model.backbone.stages[3][0].pwconv1.weight.detach().clone()
        log_vars = model.train_step(next(iter(loader)), optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(before, model.backbone.stages[3][0].pwconv1.weight)
    lrs = [g['lr'] for g in optim_wrapper.optimizer.param_groups]
    assert max(lrs) == cfg.optim_wrapper.optimizer.lr and min(lrs) < max(lrs)
    if cfg.model.get('decode_head', {}).get('type') == 'Mask2FormerHead':
        wd = {n: g['weight_decay'] for g in optim_wrapper.optimizer.param_groups
              for n in g['param_names']}
        assert [wd[f'decode_head.{n}.weight'] for n in ('query_embed', 'query_feat',
                                                        'level_embed')] == [0.0] * 3
        assert wd['decode_head.pixel_decoder.level_encoding.weight'] == 0.05  # as upstream

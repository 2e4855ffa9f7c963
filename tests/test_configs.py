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
    # The field's recipes: V2-B from its FCMAE pre-training (MMDetection's ConvNeXt-V2 project),
    # DINO-T as detrex (22k, 1k at 384), RTMDet-L-B as MMDetection (the same for B).
    'mask_rcnn_convnextv2_b_lsj_3x': 'convnextv2/pt_only/convnextv2_base_1k_224_fcmae.pt',
    'dino_4scale_convnext_t_12e': 'convnext_tiny_22k_1k_384.pth',
    'rtmdet_l_convnext_b': 'convnext_base_22k_1k_384.pth',
}
# What the field's recipes set and this package's configs keep (docs/configs.md): optimizer
# wrapper, lr, weight decay, clipping, images per GPU, epochs, drop path, backbone outputs.
FIELD_RECIPES = {
    'mask_rcnn_convnextv2_b_lsj_3x': dict(
        wrapper='AmpOptimWrapper', lr=1e-4, weight_decay=0.05, clip_grad=None, batch_size=4,
        epochs=36, drop_path_rate=0.4, out_indices=(0, 1, 2, 3)),
    'dino_4scale_convnext_t_12e': dict(
        wrapper='OptimWrapper', lr=1e-4, weight_decay=1e-4,
        clip_grad=dict(max_norm=0.1, norm_type=2), batch_size=2, epochs=12,
        drop_path_rate=0.0, out_indices=(1, 2, 3)),
    'rtmdet_l_convnext_b': dict(
        wrapper='OptimWrapper', lr=1e-3, weight_decay=0.05, clip_grad=None, batch_size=32,
        epochs=100, drop_path_rate=0.7, out_indices=(1, 2, 3)),
}


def _backbone(cfg) -> ConvNeXt:
    kwargs = {k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')}
    with torch.device('meta'):
        return ConvNeXt(**kwargs)


def test_every_config_is_listed():
    assert len(CONFIGS) == 19 and len(DEMOS) == 6
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
    name = osp.splitext(osp.basename(path))[0]
    if cfg.model.type == 'DINO':  # DINO's recipe: the backbone at 0.1 of the lr, no decay
        assert 'constructor' not in optim
        assert optim.paramwise_cfg == dict(custom_keys=dict(backbone=dict(lr_mult=0.1)),
                                           norm_decay_mult=0.0)
    else:
        assert optim.constructor == 'ConvNeXtLayerDecayOptimizerConstructor'
        assert optim.paramwise_cfg.num_layers in ('auto', backbone.num_layers)
    if path in DEMOS:
        assert cfg.model.backbone.init_cfg is None  # trained from scratch on generated data
    elif name in FIELD_RECIPES:
        recipe = FIELD_RECIPES[name]
        assert optim.type == recipe['wrapper'] and optim.get('clip_grad') == recipe['clip_grad']
        assert (optim.optimizer.type, optim.optimizer.lr, optim.optimizer.weight_decay) == (
            'AdamW', recipe['lr'], recipe['weight_decay'])
        assert cfg.train_dataloader.batch_size == recipe['batch_size']
        assert cfg.train_cfg.max_epochs == recipe['epochs']
        assert cfg.model.backbone.drop_path_rate == recipe['drop_path_rate']
        assert tuple(cfg.model.backbone.out_indices) == recipe['out_indices']
        assert cfg.model.backbone.init_cfg.checkpoint == OFFICIAL + IMAGENET[name]
    elif cfg.default_scope == 'mmseg' and head.type == 'Mask2FormerHead':
        # MMSegmentation's Mask2Former recipe: fp32, gradient clipping at norm 0.01.
        assert optim.type == 'OptimWrapper' and optim.optimizer.weight_decay == 0.05
        assert optim.clip_grad == dict(max_norm=0.01, norm_type=2)
    else:
        assert optim.type == 'AmpOptimWrapper' and optim.optimizer.weight_decay == 0.05
        checkpoint = cfg.model.backbone.init_cfg.checkpoint
        assert checkpoint.startswith(OFFICIAL)  # fetched by the config (docs/weights.md)
        assert checkpoint == OFFICIAL + IMAGENET[osp.splitext(osp.basename(path))[0]]


def _config(name):
    return Config.fromfile(osp.join(ROOT, 'configs', name + '.py'))


def test_v2_b_is_mmdetections_convnext_v2_recipe():
    """projects/ConvNeXt-V2 mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py: FCMAE V2-B, LSJ
    at 1024, layer-wise decay 0.95 / 12, soft-NMS in the R-CNN test (plain NMS in the RPN)."""
    cfg = _config('mask_rcnn_convnextv2_b_lsj_3x')
    assert (cfg.model.backbone.version, cfg.model.backbone.layer_scale_init_value) == ('v2', None)
    assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.95, decay_type='layer_wise',
                                                   num_layers=12)
    assert cfg.model.test_cfg.rcnn.nms.type == 'soft_nms' and cfg.model.test_cfg.rpn.nms.type \
        == 'nms'
    steps = {t['type']: t for t in cfg.train_dataloader.dataset.pipeline}
    assert steps['RandomResize'].scale == (1024, 1024)
    assert steps['RandomResize'].ratio_range == (0.1, 2.0)
    assert steps['RandomCrop'].crop_size == (1024, 1024) and 'FilterAnnotations' in steps
    assert cfg.auto_scale_lr.base_batch_size == 32  # 8 GPUs x 4 images at lr 1e-4
    assert [s.milestones for s in cfg.param_scheduler if s.type == 'MultiStepLR'] == [[27, 33]]


def test_dino_is_mmdetections_dino_fed_as_detrex():
    """mmdet's DINO-4scale (900 queries, 100 denoising, 6 + 6 layers, lr x 0.1 after epoch
    11) with ConvNeXt-T's stages 1-3 into the ChannelMapper and its fourth level."""
    cfg = _config('dino_4scale_convnext_t_12e')
    assert cfg.model.type == 'DINO' and cfg.model.num_queries == 900
    assert cfg.model.dn_cfg.group_cfg.num_dn_queries == 100
    assert (cfg.model.encoder.num_layers, cfg.model.decoder.num_layers) == (6, 6)
    assert cfg.model.neck.type == 'ChannelMapper' and cfg.model.neck.num_outs == 4
    assert cfg.model.backbone.layer_scale_init_value == 1.0
    assert [s.milestones for s in cfg.param_scheduler] == [[11]]


def test_rtmdet_is_mmdetections_rtmdet_l_convnext_b():
    """rtmdet_l_convnext_b_4xb32-100e_coco.py: layer-wise decay 0.8 / 12, EMA, the pipeline
    switch 10 epochs before the end, GroupNorm in neck and head, gradient checkpointing."""
    cfg = _config('rtmdet_l_convnext_b')
    assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.8, decay_type='layer_wise',
                                                   num_layers=12)
    hooks = {h['type']: h for h in cfg.custom_hooks}
    assert hooks['EMAHook'].momentum == 0.0002 and hooks['PipelineSwitchHook'].switch_epoch == 90
    assert cfg.model.neck.norm_cfg == cfg.model.bbox_head.norm_cfg == dict(type='GN',
                                                                          num_groups=32)
    assert cfg.model.backbone.with_cp and cfg.model.bbox_head.type == 'RTMDetSepBNHead'
    assert cfg.model.data_preprocessor.bgr_to_rgb  # ImageNet RGB statistics for ConvNeXt
    assert cfg.custom_imports.imports == ['convnext_backbone']  # not mmpretrain's backbone


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
    rcnn = cfg.model.get('train_cfg', {}).get('rcnn')
    if rcnn:  # fewer sampled RoIs: the heads dominate on CPU
        for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
            stage.sampler.num = 64
    if cfg.model.type == 'DINO':  # 100 queries (of the encoder's 340 tokens at 128 pixels)
        cfg.model.num_queries = 100
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
        # The heads' own initialisation, as the Runner's: without it DINO's classifier starts at
        # p=0.5 for every query and class, its loss is ~5000, and gradient clipping at 0.1
        # leaves the backbone's first step below float32's resolution on some machines.
        model.init_weights()
        if cfg.default_scope == 'mmseg':
            model.data_preprocessor.size = (128, 128)
        # fp32 here: AMP needs a GPU (tools/train.py makes the same switch).
        optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
        optim_cfg.pop('loss_scale', None)
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
        small = cfg.train_dataloader.dataset.copy()
        if cfg.default_scope == 'mmdet':
            small.pipeline = [dict(type='LoadImageFromFile'),
                              dict(type='LoadAnnotations', with_bbox=True,
                                   with_mask='roi_head' in cfg.model),  # Mask R-CNN's masks
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

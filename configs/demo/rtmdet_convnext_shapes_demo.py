# configs/rtmdet_l_convnext_b.py on the generated COCO-layout shapes of the built-in demo
# (tools/make_demo_data.py coco), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image size, schedule (and lr: trained from scratch, no
# ImageNet weights), size (ConvNeXt-atto without gradient checkpointing; a 64-channel neck of
# one CSP block and head; GroupNorm of 8 groups, as its 40-channel layers do not split into 32)
# augmentation: the parent's second-stage pipeline (random resize 0.5-2.0 + crop, colour,
# flip, pad) throughout, without mosaic and mix-up, which make the few objects of these
# images smaller still. Assigner, losses, EMA and post-processing stay RTMDet's.
_base_ = ['../rtmdet_l_convnext_b.py']

data_root = 'data/coco_shapes/'
classes = ('circle', 'square', 'triangle')
image_size = 128
width = 64  # neck and head channels (256 upstream)
norm_cfg = dict(type='GN', num_groups=8)

model = dict(
    backbone=dict(arch='atto', drop_path_rate=0.0, with_cp=False, init_cfg=None),
    neck=dict(in_channels=[80, 160, 320], out_channels=width, num_csp_blocks=1,
              norm_cfg=norm_cfg),
    bbox_head=dict(num_classes=len(classes), in_channels=width, feat_channels=width,
                   norm_cfg=norm_cfg),
    test_cfg=dict(nms_pre=1000, max_per_img=30))

size = (image_size, image_size)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=size, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=size),
    dict(type='YOLOXHSVRandomAug'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Pad', size=size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=size, keep_ratio=True),
    dict(type='Pad', size=size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# The parent's test-time augmentation (tools/test.py --tta) at this size: three scales, 5%
# apart as 608 / 640 / 672 are, with and without flipping.
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[
             [dict(type='Resize', scale=(s, s), keep_ratio=True)
              for s in (image_size, round(1.05 * image_size), round(0.95 * image_size))],
             [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
             [dict(type='Pad', size=size, pad_val=dict(img=(114, 114, 114)))],
             [dict(type='PackDetInputs',
                   meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                              'flip', 'flip_direction'))]])
]
metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json',
                     proposal_nums=(100, 1, 10))
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs, dynamic_intervals=None)
base_lr = 4e-3
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', eta_min=base_lr * 0.05, begin=max_epochs // 2,
         end=max_epochs, T_max=max_epochs // 2, by_epoch=True, convert_to_iter_based=True),
]
optim_wrapper = dict(optimizer=dict(lr=base_lr), paramwise_cfg=dict(num_layers='auto'))
custom_hooks = [  # the parent's EMA; no pipeline switch (one pipeline throughout)
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002, update_buffers=True,
         priority=49),
]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)  # the demo figures (docs/demos.md) come from this seed

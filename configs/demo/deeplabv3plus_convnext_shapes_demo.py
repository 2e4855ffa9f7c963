# configs/deeplabv3plus_convnext_t.py on the generated ADE20K-layout scenes of the segmentation
# demo (tools/make_demo_data.py ade), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent as in upernet_convnext_shapes_demo.py: data, image and crop size,
# schedule (and lr: trained from scratch, no ImageNet weights) and width (ConvNeXt-atto, narrow
# ASPP and FCN heads). Output stride 16 and the ASPP rates stay the parent's.
_base_ = ['../deeplabv3plus_convnext_t.py']

data_root = 'data/ade_shapes/ADEChallengeData2016'
size = 128
crop_size = (size, size)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=320, channels=64, c1_in_channels=40, c1_channels=16),
    auxiliary_head=dict(in_channels=160, channels=32),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(4 * size, size), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4 * size, size), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=1.0, begin=50, end=max_iters, eta_min=0.0, by_epoch=False),
]
optim_wrapper = dict(optimizer=dict(lr=2e-3), paramwise_cfg=dict(num_layers='auto'))
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=max_iters // 2, max_keep_ckpts=2))
randomness = dict(seed=0)

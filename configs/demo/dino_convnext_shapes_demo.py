# configs/dino_4scale_convnext_t_12e.py on the generated COCO-layout shapes of the built-in demo
# (tools/make_demo_data.py coco), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image size, schedule (and lr, with a warm-up: trained from
# scratch, no ImageNet weights) and size (ConvNeXt-atto; 2 encoder and 2 decoder layers with
# 512-wide feed-forward layers, 30 queries and 20 denoising queries for images that hold 1-4
# objects). The width stays 256: mmdet's DINO decoder encodes reference points in 4 x 128
# sine features, fixed. Matching, losses, denoising and clipping stay DINO's.
_base_ = ['../dino_4scale_convnext_t_12e.py']

data_root = 'data/coco_shapes/'
classes = ('circle', 'square', 'triangle')
image_size = 128
ffn = dict(feedforward_channels=512)  # 2048 in the parent

model = dict(
    num_queries=30,
    backbone=dict(arch='atto', init_cfg=None),
    neck=dict(in_channels=[80, 160, 320]),
    encoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=ffn)),
    decoder=dict(num_layers=2, layer_cfg=dict(ffn_cfg=ffn)),
    bbox_head=dict(num_classes=len(classes)),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=20)),
    test_cfg=dict(max_per_img=30))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(image_size - 32, 1000), (image_size, 1000),
                                            (image_size + 32, 1000)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, 1000), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
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
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[11],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)  # the demo figures (docs/demos.md) come from this seed

# The built-in demo: configs/mask_rcnn_convnext_t.py on generated COCO-layout shapes
# (tools/make_demo_data.py coco), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image size, schedule (and lr: trained from scratch, no
# ImageNet weights) and width (ConvNeXt-atto, narrow FPN and heads, fewer sampled RoIs,
# torchvision's RoIAlign, whose CPU backward is much faster than mmcv's).
_base_ = ['../mask_rcnn_convnext_t.py']

data_root = 'data/coco_shapes/'
classes = ('circle', 'square', 'triangle')
image_size = 192
width = 64  # FPN / head channels (256 upstream)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[40, 80, 160, 320], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width,
                  anchor_generator=dict(scales=[4], strides=[4, 8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width,
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2,
                                               use_torchvision=True)),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=width,
                                roi_layer=dict(type='RoIAlign', output_size=14,
                                               sampling_ratio=2, use_torchvision=True)),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=500, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(image_size - 32, 1000), (image_size, 1000),
                                            (image_size + 32, 1000)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, 1000), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_cfg=dict(min_size=8),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[6, 7],
         gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3), paramwise_cfg=dict(num_layers='auto'))
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=1, max_keep_ckpts=2))
randomness = dict(seed=0)  # the demo figures (docs/demos.md) come from this seed

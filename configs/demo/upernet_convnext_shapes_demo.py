# The built-in segmentation demo: configs/upernet_convnext_t.py on generated ADE20K-layout scenes
# (tools/make_demo_data.py ade), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image and crop size, schedule (and lr: trained from scratch,
# no ImageNet weights) and width (ConvNeXt-atto, narrow UPerNet and FCN heads). The data and
# schedule are the segmentation demos' (../_base_/ade_shapes_demo.py, which says why they are
# taken by name).
_base_ = ['../upernet_convnext_t.py', '../_base_/ade_shapes_demo.py']

data_root = _base_.ade_shapes_demo.data_root
crop_size = _base_.ade_shapes_demo.crop_size
train_pipeline = _base_.ade_shapes_demo.train_pipeline
test_pipeline = _base_.ade_shapes_demo.test_pipeline
train_dataloader = _base_.ade_shapes_demo.train_dataloader
val_dataloader = _base_.ade_shapes_demo.val_dataloader
test_dataloader = val_dataloader
train_cfg = _base_.ade_shapes_demo.train_cfg
param_scheduler = _base_.ade_shapes_demo.param_scheduler
default_hooks = _base_.ade_shapes_demo.default_hooks

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(in_channels=[40, 80, 160, 320], channels=64),
    auxiliary_head=dict(in_channels=160, channels=32),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))
optim_wrapper = dict(optimizer=dict(lr=2e-3), paramwise_cfg=dict(num_layers='auto'))

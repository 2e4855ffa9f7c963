# UPerNet + FCN auxiliary head for ConvNeXt on ADE20K, the paper's recipe: AdamW lr 1e-4, wd
# 0.05, stage-wise lr decay 0.9, 160k iterations (1500 linear warm-up, then poly), 16 images per
# step = 8 GPUs x 2, AMP on GPU. The data (512 or 640 crops) comes from
# upernet_convnext_160k_ade20k_{512,640}.py; model configs set arch, drop path, checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['convnext_backbone'], allow_failed_imports=False)
# load_from / resume / tools/test.py checkpoints are converted and checked before loading
# (convnext_backbone.checkpoints); upstream tools build this runner too.
runner_type = 'CheckpointCheckingRunner'
model = dict(
    pretrained=None,  # upernet_r50's ResNet weights; ConvNeXt loads through its init_cfg
    backbone=dict(
        _delete_=True, type='ConvNeXt', arch='tiny', out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4, layer_scale_init_value=1.0),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    # FCN auxiliary head on stage 2, loss weight 0.4 (upstream default).
    auxiliary_head=dict(in_channels=384, in_index=2, num_classes=150,
                        loss_decode=dict(loss_weight=0.4)))

optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',  # tools/train.py falls back to fp32 without CUDA
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers='auto'),
    loss_scale='dynamic')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, begin=1500, end=160000, eta_min=0.0, by_epoch=False),
]

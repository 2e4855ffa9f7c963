# Mask R-CNN + FPN, ConvNeXt-T (ImageNet-1k), the paper's 3x multi-scale + crop COCO recipe:
# AdamW lr 1e-4, wd 0.05, layer-wise decay 0.95 over 6 layers, drop path 0.4, layer scale 1.0.
# 16 images per step = 8 GPUs x 2 (tools/dist_train.sh CONFIG 8). Paper: box AP 46.2, mask 41.7.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/coco_instance_3x_ms_crop.py',
]
arch = 'tiny'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch=arch,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,  # the detection recipes' value, not the 1e-6 of ImageNet
        # Any published layout loads (official, timm, mmpretrain, transformers); see docs/weights.md.
        # A URL is read from checkpoints/<file name>, $CONVNEXT_CHECKPOINTS or the cache
        # (~/.cache/convnext_backbone/checkpoints), else downloaded there once.
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6))

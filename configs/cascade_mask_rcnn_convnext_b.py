# Cascade Mask R-CNN + FPN, ConvNeXt-B (ImageNet-1k), 3x multi-scale + crop COCO recipe with the
# paper's settings for this model: AdamW lr 2e-4, layer-wise decay 0.8 over 12 layers,
# drop path 0.7.
# 16 images per step = 8 GPUs x 2. Paper: box AP 52.7, mask AP 45.6.
_base_ = ['./_base_/cascade_mask_rcnn_convnext_3x.py']
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12))

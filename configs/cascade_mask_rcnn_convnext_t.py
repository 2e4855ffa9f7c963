# Cascade Mask R-CNN + FPN, ConvNeXt-T (ImageNet-1k), 3x multi-scale + crop COCO recipe with the
# paper's settings for this model: AdamW lr 2e-4, layer-wise decay 0.7 over 6 layers,
# drop path 0.4.
# 16 images per step = 8 GPUs x 2. Paper: box AP 50.4, mask AP 43.7.
_base_ = ['./_base_/cascade_mask_rcnn_convnext_3x.py']
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6))

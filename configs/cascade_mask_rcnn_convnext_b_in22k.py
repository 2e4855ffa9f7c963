# Cascade Mask R-CNN + FPN, ConvNeXt-B (ImageNet-22k), 3x multi-scale + crop COCO recipe with the
# paper's settings for this model: AdamW lr 1e-4, layer-wise decay 0.8 over 12 layers,
# drop path 0.6.
# 16 images per step = 8 GPUs x 2. Paper: box AP 54.0, mask AP 46.9.
_base_ = ['./_base_/cascade_mask_rcnn_convnext_3x.py']
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(decay_rate=0.8, decay_type='layer_wise', num_layers=12))

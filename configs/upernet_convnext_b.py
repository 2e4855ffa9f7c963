# UPerNet, ConvNeXt-B (ImageNet-1k), 512x512, ADE20K 160k: AdamW lr 1e-4, stage-wise decay 0.9 over
# 12 layers, drop path 0.4. Paper: mIoU 49.1 (single-scale) / 49.9 (multi-scale + flip, --tta).
_base_ = ['./_base_/upernet_convnext_160k_ade20k_512.py']
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(num_layers=12))

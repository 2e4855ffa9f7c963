# UPerNet, ConvNeXt-XL (ImageNet-22k), 640x640, ADE20K 160k: AdamW lr 8e-5, stage-wise decay 0.9 over
# 12 layers, drop path 0.4. Paper: mIoU 53.6 (single-scale) / 54.0 (multi-scale + flip, --tta).
_base_ = ['./_base_/upernet_convnext_160k_ade20k_640.py']
model = dict(
    backbone=dict(
        arch='xlarge',
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(optimizer=dict(lr=8e-5), paramwise_cfg=dict(num_layers=12))

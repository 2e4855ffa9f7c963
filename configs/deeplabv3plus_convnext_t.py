# DeepLabV3+, ConvNeXt-T (ImageNet-1k), output stride 16, 512x512, ADE20K 160k.
# THIS PROJECT'S SETTINGS, NOT A PAPER'S: neither the ConvNeXt nor the DeepLabV3+ paper reports
# this pairing. The recipe is upernet_convnext_t.py's (AdamW lr 1e-4, wd 0.05, stage-wise decay
# 0.9 over 6 layers, drop path 0.4, 160k iterations with 1500 warm-up, 16 images per step, the FCN
# auxiliary head on stage 2, sliding-window test): only the decode head and the stride differ.
_base_ = ['./_base_/upernet_convnext_160k_ade20k_512.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)  # as every mmseg head (upernet_r50.py)
model = dict(
    backbone=dict(
        arch='tiny',
        # Output stride 16 (DeepLabV3+'s in training): stage 3 keeps stage 2's resolution, its
        # downsampling layer stops striding and its 7x7 depthwise convolutions dilate by 2; the
        # ImageNet weights load unchanged.
        output_stride=16,
        drop_path_rate=0.4,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    decode_head=dict(
        _delete_=True,  # UPerHead's arguments (pool_scales...) are not the ASPP head's
        type='DepthwiseSeparableASPPHead',
        in_channels=768,
        in_index=3,  # ASPP on stage 3 (stride 16)
        channels=512,
        # The 1x1 branch and the paper's atrous rates for output stride 16 (6, 12, 18); mmseg's
        # r50-d8 configs use (12, 24, 36), the rates for output stride 8.
        dilations=(1, 6, 12, 18),
        c1_in_channels=96,  # the decoder's low-level input: stage 0 (stride 4), always inputs[0]
        c1_channels=48,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(in_channels=384))  # the base's FCN head, on stage 2 (stride 16)
optim_wrapper = dict(optimizer=dict(lr=1e-4), paramwise_cfg=dict(num_layers=6))

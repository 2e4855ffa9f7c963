# RTMDet-L, ConvNeXt-B (ImageNet-22k, fine-tuned on ImageNet-1k at 384 pixels), COCO, 100 epochs
# at 640x640: MMDetection's rtmdet_l_convnext_b_4xb32-100e_coco.py with this backbone; reported
# there: box AP 53.1. Its recipe, unchanged: stages 1-3 into CSPNeXtPAFPN, GroupNorm in neck and
# head, drop path 0.7, layer scale 1.0, gradient checkpointing, AdamW lr 1e-3, weight decay
# 0.05, layer-wise lr decay 0.8 over 12 layers, 1000 warm-up iterations then cosine to 5% from
# epoch 50, EMA (momentum 2e-4), mosaic + mix-up until the last 10 epochs (PipelineSwitchHook),
# 128 images per step = 4 GPUs x 32, fp32.
_base_ = 'mmdet::rtmdet/rtmdet_l_convnext_b_4xb32-100e_coco.py'
custom_imports = dict(_delete_=True, imports=['convnext_backbone'],
                      allow_failed_imports=False)
# load_from / resume / tools/test.py checkpoints are converted and checked before loading
# (convnext_backbone.checkpoints); upstream tools build this runner too.
runner_type = 'CheckpointCheckingRunner'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch='base',
        out_indices=(1, 2, 3),
        drop_path_rate=0.7,
        layer_scale_init_value=1.0,
        with_cp=True,
        # The official release of the weights upstream names in mmpretrain's layout
        # (convnext-base_in21k-pre-3rdparty_in1k-384px).
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_1k_384.pth')))
# mmdet's LearningRateDecayOptimizerConstructor upstream; this package's gives every parameter
# the same lr and weight decay (tests/test_layer_decay.py). The base's norm_decay_mult /
# bias_decay_mult / bypass_duplicate are dropped: both constructors ignore them and give no
# weight decay to norms, biases and other 1-D parameters themselves (this one refuses keys it
# would ignore).
optim_wrapper = dict(
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(_delete_=True, decay_rate=0.8, decay_type='layer_wise', num_layers=12))

# DINO-4scale, ConvNeXt-T (ImageNet-22k, fine-tuned on ImageNet-1k at 384 pixels), COCO, 12 epochs:
# MMDetection's DINO (dino-4scale_r50_8xb2-12e_coco.py) with this backbone, fed as detrex feeds
# its ConvNeXt (projects/dino/configs/dino-convnext/dino_convnext_tiny_384_4scale_12ep.py):
# stages 1-3 (strides 8, 16, 32) into the ChannelMapper, whose fourth level is a stride-2
# convolution of the last; drop path 0, layer scale 1.0. detrex reports box AP 52.4 for this
# model (its ImageNet-22k row; 51.4 from ImageNet-1k weights).
# Everything else is mmdet's DINO: 900 queries, 100 denoising queries, 6 + 6 layers, AdamW
# lr 1e-4, weight decay 1e-4, backbone lr x 0.1, gradient clipping at norm 0.1, the lr x 0.1
# after epoch 11, 16 images per step = 8 GPUs x 2, fp32, multi-scale 480-800 + crop.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['convnext_backbone'], allow_failed_imports=False)
# load_from / resume / tools/test.py checkpoints are converted and checked before loading
# (convnext_backbone.checkpoints); upstream tools build this runner too.
runner_type = 'CheckpointCheckingRunner'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.0,  # detrex's (models/dino_convnext.py)
        layer_scale_init_value=1.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_22k_1k_384.pth')),
    neck=dict(in_channels=[192, 384, 768]))
# The optimizer is the one both recipes share (mmdet's custom_keys give every backbone
# parameter lr x 0.1, as detrex's lr_factor_func does), no layer-wise decay (neither uses it),
# and detrex's one difference: no weight decay on the neck's and the transformer's norms
# (weight_decay_norm=0). mmengine applies norm_decay_mult only to parameters no custom key
# matches, so the backbone's LayerNorms keep weight decay as detrex's do (its ConvNeXt
# LayerNorm is no torch norm class, which its rule does not see).
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0))

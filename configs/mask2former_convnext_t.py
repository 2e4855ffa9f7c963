# Mask2Former, ConvNeXt-T (ImageNet-1k), ADE20K semantic segmentation, 512x512, 160k.
# THIS PROJECT'S SETTINGS, NOT A PAPER'S: neither the ConvNeXt nor the Mask2Former paper reports
# this pairing. Everything but the backbone and its learning rates is MMSegmentation's Swin-T
# recipe (mask2former_swin-t_8xb2-160k_ade20k-512x512.py on its r50 base): Mask2FormerHead on
# the four stages (100 queries, 6-layer deformable pixel decoder, 9-layer masked-attention
# decoder), loss weights 2 (class, no-object weight 0.1) / 5 (mask) / 5 (dice), AdamW lr 1e-4,
# wd 0.05, eps 1e-8, gradient clipping at norm 0.01, poly decay (power 0.9) over 160k
# iterations without warm-up, 16 images per step = 8 GPUs x 2, fp32 (as upstream), multi-scale
# 0.5-2.0 crops, whole-image test. Multi-scale + flip test: tools/test.py CONFIG CKPT --tta.
_base_ = ['mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py']
# Mask2FormerHead is built from mmdet's modules (pixel decoder, transformer, assigner, losses).
custom_imports = dict(imports=['mmdet.models', 'convnext_backbone'], allow_failed_imports=False)
# load_from / resume / tools/test.py checkpoints are converted and checked before loading
# (convnext_backbone.checkpoints); upstream tools build this runner too.
runner_type = 'CheckpointCheckingRunner'
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        # ConvNeXt-T's drop path in the paper's ADE20K recipe (Swin-T's here is 0.3).
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], strides=[4, 8, 16, 32]))

# Backbone learning rates: this package's stage-wise decay (rate 0.9 over 6 layers, every
# downsampling layer at 0.9**7 = 0.48 of the lr, stage i at 0.9**(6 - i), the last stage 0.73;
# the head at 1) in place of Swin's flat lr_mult 0.1 on the backbone. Why: 0.1 was chosen for
# Swin and ResNet; stage-wise 0.9 is what ConvNeXt's own ADE20K fine-tuning uses, at this same
# lr, weight decay and schedule length, and the layer-wise form is the COCO detection recipes'.
# Swin's other custom keys name Swin's modules; their intent, no weight decay on norms, holds
# here as the constructor gives none to norms, biases and other 1-D parameters. The queries
# and level embeddings keep upstream's decay_mult 0 through no_decay_keys.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='ConvNeXtLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers='auto',
                       no_decay_keys=['query_embed', 'query_feat', 'level_embed']))

# Mask R-CNN + FPN, ConvNeXt-V2-T (FCMAE pre-trained, ImageNet-1k fine-tuned), 3x COCO recipe.
# There is no official V2 detection recipe; these settings are ours: the V1-T recipe (AdamW lr
# 1e-4, layer-wise decay 0.95 over 6 layers, 3x multi-scale + crop) with drop path 0.3 (V2-T's
# ImageNet fine-tuning value is lower than V1-T's 0.4) and no layer scale (V2 has none).
# The V2 weights are CC-BY-NC 4.0, non-commercial use only: docs/weights.md#licences-of-the-weights
_base_ = ['./mask_rcnn_convnext_t.py']
model = dict(
    backbone=dict(
        version='v2',
        drop_path_rate=0.3,
        layer_scale_init_value=None,
        init_cfg=dict(type='Pretrained',
                      checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/im1k/'
                      'convnextv2_tiny_1k_224_ema.pt')))

# Mask R-CNN + FPN, ConvNeXt-V2-B from its FCMAE pre-training (no ImageNet fine-tuning), COCO,
# large-scale jitter at 1024, 3x: MMDetection's projects/ConvNeXt-V2 recipe
# (mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py) with this backbone; reported there: box AP
# 52.9, mask AP 46.4. Its settings: drop path 0.4, no layer scale (V2), AdamW lr 1e-4, weight
# decay 0.05, layer-wise lr decay 0.95 over 12 layers, 36 epochs (steps 27 / 33, 1000 warm-up
# iterations), soft-NMS in the R-CNN test, AMP, 32 images per step = 8 GPUs x 4.
# ConvNeXt-V2 weights: CC-BY-NC 4.0 (non-commercial), see docs/weights.md#licences
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/coco_instance_3x_ms_crop.py',  # schedule, optimizer, AMP; its pipeline replaced
]
image_size = (1024, 1024)
model = dict(
    backbone=dict(
        _delete_=True,
        type='ConvNeXt',
        arch='base',
        version='v2',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=None,  # V2 has none (GRN instead)
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/'
            'convnextv2_base_1k_224_fcmae.pt')),
    neck=dict(in_channels=[128, 256, 512, 1024]),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms'))))  # the RPN keeps plain NMS, as upstream

# Large-scale jitter: the image scaled to 0.1-2.0 of 1024 (long side), a 1024 crop.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=12))
# lr 1e-4 is for 32 images per step (upstream leaves mmdet's 16 here, which --auto-scale-lr
# would read as twice the lr).
auto_scale_lr = dict(base_batch_size=32)

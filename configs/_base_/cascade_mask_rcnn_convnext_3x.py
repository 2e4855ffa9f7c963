# Cascade Mask R-CNN + FPN for ConvNeXt, the paper's 3x recipe: box heads with 4 convs + 1 fc,
# SyncBN and GIoU loss (weight 10), three stages. Model configs set arch, lr, decay, drop path.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    './coco_instance_3x_ms_crop.py',
]


def giou_head(stds):
    return dict(
        type='ConvFCBBoxHead', num_shared_convs=4, num_shared_fcs=1, in_channels=256,
        conv_out_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=80,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                        target_stds=stds),
        reg_class_agnostic=False, reg_decoded_bbox=True,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


model = dict(
    backbone=dict(
        _delete_=True, type='ConvNeXt', arch='tiny', out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4, layer_scale_init_value=1.0),
    roi_head=dict(bbox_head=[
        giou_head([0.1, 0.1, 0.2, 0.2]),
        giou_head([0.05, 0.05, 0.1, 0.1]),
        giou_head([0.033, 0.033, 0.067, 0.067]),
    ]))

# configs/mask2former_convnext_t.py on the generated ADE20K-layout scenes of the segmentation
# demo (tools/make_demo_data.py ade), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image and crop size, schedule (and lr, with a warm-up: trained
# from scratch, no ImageNet weights) and size (ConvNeXt-atto; a 64-channel head with 20
# queries, 2 pixel-decoder and 3 decoder layers, 1024 sampled points per mask). The losses,
# their weights, the matching and the gradient clipping stay the parent's. The data and
# schedule are the segmentation demos' (../_base_/ade_shapes_demo.py, which says why they are
# taken by name), but for the parent's poly power (0.9) and no best-mIoU checkpoint.
_base_ = ['../mask2former_convnext_t.py', '../_base_/ade_shapes_demo.py']

data_root = _base_.ade_shapes_demo.data_root
crop_size = _base_.ade_shapes_demo.crop_size
train_pipeline = _base_.ade_shapes_demo.train_pipeline
test_pipeline = _base_.ade_shapes_demo.test_pipeline
train_dataloader = _base_.ade_shapes_demo.train_dataloader
val_dataloader = _base_.ade_shapes_demo.val_dataloader
test_dataloader = val_dataloader
train_cfg = _base_.ade_shapes_demo.train_cfg
param_scheduler = [_base_.ade_shapes_demo.param_scheduler[0],
                   dict(_base_.ade_shapes_demo.param_scheduler[1], power=0.9)]
default_hooks = dict(_base_.ade_shapes_demo.default_hooks, checkpoint=dict(
    _base_.ade_shapes_demo.default_hooks.checkpoint, save_best=None))

channels = 64  # the head's width (256 in the parent)
attention = dict(embed_dims=channels)
ffn = dict(embed_dims=channels, feedforward_channels=4 * channels)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
    decode_head=dict(
        in_channels=[40, 80, 160, 320],
        feat_channels=channels,
        out_channels=channels,
        num_queries=20,
        pixel_decoder=dict(
            encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attention, ffn_cfg=ffn)),
            positional_encoding=dict(num_feats=channels // 2)),
        positional_encoding=dict(num_feats=channels // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(self_attn_cfg=attention, cross_attn_cfg=attention, ffn_cfg=ffn)),
        train_cfg=dict(num_points=1024)))
optim_wrapper = dict(optimizer=dict(lr=1e-3))

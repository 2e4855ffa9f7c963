# configs/mask2former_convnext_t.py on the generated ADE20K-layout scenes of the segmentation
# demo (tools/make_demo_data.py ade), small enough to learn on 2 CPU cores in minutes.
# Changed from the parent: data, image and crop size, schedule (and lr, with a warm-up: trained
# from scratch, no ImageNet weights) and size (ConvNeXt-atto; a 64-channel head with 20
# queries, 2 pixel-decoder and 3 decoder layers, 1024 sampled points per mask). The losses,
# their weights, the matching and the gradient clipping stay the parent's.
_base_ = ['../mask2former_convnext_t.py']

data_root = 'data/ade_shapes/ADEChallengeData2016'
size = 128
crop_size = (size, size)
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

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(4 * size, size), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4 * size, size), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 600
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', power=0.9, begin=50, end=max_iters, eta_min=0.0, by_epoch=False),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(by_epoch=False, interval=max_iters // 2, max_keep_ckpts=2,
                                     save_best=None))
randomness = dict(seed=0)

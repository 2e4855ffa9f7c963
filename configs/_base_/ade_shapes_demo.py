# The segmentation demos' data and schedule: the generated ADE20K-layout scenes
# (tools/make_demo_data.py ade; 128 px high), batches of 8 crops of 128x128, 600 iterations
# (50 of linear warm-up, then poly decay), validation at the end, a log line every 20
# iterations, checkpoints at 300 and 600, seed 0.
#
# A demo lists this file after its parent and takes the settings by name:
#     _base_ = ['../upernet_convnext_t.py', '../_base_/ade_shapes_demo.py']
#     train_dataloader = _base_.ade_shapes_demo.train_dataloader
# mmengine then merges them into the parent's as the demo's own settings. They are held under
# one name, ade_shapes_demo, because the parent sets the same keys (data_root, the pipelines,
# the loaders, the schedule, the hooks) and mmengine refuses a key that two bases set
# ("Duplicate key is not allowed among bases"). No parent sets size, max_iters or randomness,
# so those are set here directly.
size = 128
max_iters = 600
randomness = dict(seed=0)  # the demo figures (docs/demos.md) come from this seed

ade_shapes_demo = dict(
    data_root='data/ade_shapes/ADEChallengeData2016',
    crop_size=(size, size),
    train_pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(4 * size, size), ratio_range=(0.75, 1.5),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(size, size), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackSegInputs'),
    ],
    test_pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(4 * size, size), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ],
    train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters),
    param_scheduler=[
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
        dict(type='PolyLR', power=1.0, begin=50, end=max_iters, eta_min=0.0, by_epoch=False),
    ],
    default_hooks=dict(
        logger=dict(interval=20),
        checkpoint=dict(by_epoch=False, interval=max_iters // 2, max_keep_ckpts=2)))
# The loaders read the scenes through the pipelines above.
ade_shapes_demo.update(
    train_dataloader=dict(batch_size=8, num_workers=1, dataset=dict(
        data_root=ade_shapes_demo['data_root'], pipeline=ade_shapes_demo['train_pipeline'])),
    val_dataloader=dict(batch_size=1, num_workers=1, dataset=dict(
        data_root=ade_shapes_demo['data_root'], pipeline=ade_shapes_demo['test_pipeline'])))

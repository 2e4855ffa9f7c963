# ADE20K at 640x640 for the UPerNet-ConvNeXt recipe: mmseg's ADE20K data (pipelines, loaders
# of 1 image for validation, metric, and the tta_pipeline that tools/test.py --tta evaluates
# with mmseg's default SegTTAModel), 2 training images per GPU, sliding-window test with
# stride 426 (two thirds of the crop, as in the paper).
_base_ = ['./upernet_convnext_160k.py', 'mmseg::_base_/datasets/ade20k_640x640.py']
crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(426, 426)))
train_dataloader = dict(batch_size=2)

"""Pictures (data/pictures.py), checked by what they show: each region in its class's colour,
masks and boxes where the instances are, the rest of the image as it was."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData, PixelData

from convnext_backbone.data.pictures import build_visualizer, draw_sample, grid

from .helpers import ADE_DEMO, COCO_DEMO, palette_classes

CLASSES = ('red', 'green', 'blue')
PALETTE = [(220, 20, 20), (20, 200, 20), (20, 20, 220)]
GREY = 128


def _visualizer(config):
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return build_visualizer(cfg, dict(classes=CLASSES, palette=PALETTE)), cfg.default_scope


def _seg_sample(label_map, field='pred_sem_seg'):
    from mmseg.structures import SegDataSample
    sample = SegDataSample()
    sample.set_field(PixelData(data=torch.as_tensor(label_map)[None]), field)
    return sample


def test_segmentation_regions_take_their_class_colour():
    visualizer, _ = _visualizer(ADE_DEMO)
    image = np.full((96, 128, 3), GREY, np.uint8)
    labels = np.full((96, 128), 255, np.int64)  # 255: ignored, drawn without colour
    labels[48:, :64], labels[48:, 64:], labels[:48, 64:] = 0, 2, 1
    picture = draw_sample(visualizer, image, _seg_sample(labels), draw_gt=False, draw_pred=True)
    assert picture.shape == image.shape
    seen = palette_classes(picture, image, PALETTE, visualizer.alpha)
    labelled = labels != 255
    # The class names are written on each region (a small box): most pixels show the colour.
    assert (seen[labelled] == labels[labelled]).mean() > 0.9
    expected_ignored = int(GREY * (1 - visualizer.alpha))
    assert np.all(np.abs(picture[:48, :64].astype(int) - expected_ignored) <= 1)


def test_ground_truth_beside_prediction():
    visualizer, _ = _visualizer(ADE_DEMO)
    image = np.full((64, 64, 3), GREY, np.uint8)
    truth, predicted = np.zeros((64, 64), np.int64), np.full((64, 64), 2, np.int64)
    sample = _seg_sample(predicted)
    sample.set_field(PixelData(data=torch.as_tensor(truth)[None]), 'gt_sem_seg')
    picture = draw_sample(visualizer, image, sample, draw_gt=True, draw_pred=True)
    assert picture.shape == (64, 128, 3)
    left = palette_classes(picture[:, :64], image, PALETTE, visualizer.alpha)
    right = palette_classes(picture[:, 64:], image, PALETTE, visualizer.alpha)
    assert (left == 0).mean() > 0.9 and (right == 2).mean() > 0.9


def test_detection_mask_and_box_where_the_instance_is():
    from mmdet.structures import DetDataSample
    visualizer, _ = _visualizer(COCO_DEMO)
    image = np.full((128, 128, 3), GREY, np.uint8)
    mask = np.zeros((1, 128, 128), bool)
    mask[0, 40:80, 30:90] = True
    sample = DetDataSample()
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[30., 40., 90., 80.]]), labels=torch.tensor([1]),
        scores=torch.tensor([0.9]), masks=torch.as_tensor(mask))
    picture = draw_sample(visualizer, image, sample, draw_gt=False, draw_pred=True,
                          pred_score_thr=0.3)
    changed = np.abs(picture.astype(int) - image).sum(-1) > 10
    assert changed[45:75, 35:85].mean() > 0.95  # the mask, drawn over the instance
    assert not changed[100:, :].any() and not changed[:, 110:].any()  # far away: as it was
    # The mask in its class's colour (jittered a little by mmdet).
    assert np.abs(picture[60, 60].astype(int) - PALETTE[1]).max() <= 30, picture[60, 60]
    # Without a mask, the box: its edge in the class's colour blended with the visualizer's
    # alpha (DetLocalVisualizer takes the palette's), its inside as it was.
    del sample.pred_instances.masks
    boxed = draw_sample(visualizer, image, sample, draw_gt=False, draw_pred=True,
                        pred_score_thr=0.3)
    blend = np.asarray(PALETTE[1]) * visualizer.alpha + GREY * (1 - visualizer.alpha)
    assert np.abs(boxed[60, 30].astype(int) - blend).max() <= 2, boxed[60, 30]
    assert np.array_equal(boxed[60, 60], image[60, 60])
    # Below the score threshold: nothing drawn.
    faint = draw_sample(visualizer, image, sample, draw_gt=False, draw_pred=True,
                        pred_score_thr=0.95)
    assert np.array_equal(faint, image)


def test_same_prediction_same_picture():
    """mmdet jitters mask colours with numpy's global generator: draw_sample seeds it."""
    from mmdet.structures import DetDataSample
    visualizer, _ = _visualizer(COCO_DEMO)
    image = np.full((64, 64, 3), GREY, np.uint8)
    sample = DetDataSample()
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 10:40, 10:40] = True
    sample.pred_instances = InstanceData(bboxes=torch.tensor([[10., 10., 40., 40.]]),
                                         labels=torch.tensor([0]), scores=torch.tensor([0.9]),
                                         masks=torch.as_tensor(mask))
    np.random.seed(1)
    first = draw_sample(visualizer, image, sample, draw_gt=False, draw_pred=True)
    np.random.seed(2)
    assert np.array_equal(first, draw_sample(visualizer, image, sample, draw_gt=False,
                                             draw_pred=True))


@pytest.mark.parametrize('columns', [1, 2, 3])
def test_grid_places_each_image_in_its_cell(columns):
    images = [np.full((10 + i, 20, 3), 40 * i, np.uint8) for i in range(3)]
    canvas = grid(images, columns=columns, gap=2)
    height, width = 12, 20  # the largest image
    for n, image in enumerate(images):
        r, c = divmod(n, columns)
        y, x = r * (height + 2), c * (width + 2)
        assert np.array_equal(canvas[y:y + image.shape[0], x:x + 20], image)
    rows = -(-3 // columns)
    assert canvas.shape == (rows * (height + 2) - 2, columns * (width + 2) - 2, 3)

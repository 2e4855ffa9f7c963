"""tools/infer.py --pred-out-dir: the predictions as data beside the pictures (detection JSON
with COCO RLE masks in the original image's pixels; segmentation label maps as PNG)."""
import glob
import json

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image
from pycocotools import mask as mask_util

from convnext_backbone.data.demo import SHAPES, make_ade_shapes, make_coco_shapes

from .helpers import ADE_DEMO, COCO_DEMO, build, save, tool_output


def test_detection_json(tmp_path):
    make_coco_shapes(str(tmp_path / 'coco'), num_train=1, num_val=1, size=128, seed=3)
    (image, ) = glob.glob(str(tmp_path / 'coco' / 'val2017' / '*.jpg'))
    Image.open(image).resize((150, 100)).save(tmp_path / 'wide.jpg')
    checkpoint = save(tmp_path, build(COCO_DEMO).state_dict())
    tool_output(tmp_path, 'tools/infer.py', COCO_DEMO, checkpoint, tmp_path / 'wide.jpg',
                '--data', tmp_path / 'coco', '--out-dir', tmp_path / 'vis', '--pred-out-dir',
                tmp_path / 'pred')
    record = json.loads((tmp_path / 'pred' / 'wide.json').read_text())
    count = len(record['labels'])
    assert count > 0 and all(len(record[k]) == count for k in ('scores', 'bboxes', 'masks'))
    assert record['label_names'] == [SHAPES[label] for label in record['labels']]
    assert record['scores'] == sorted(record['scores'], reverse=True)
    boxes = np.array(record['bboxes'])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 150).all() and (boxes[:, 3] <= 100).all()
    masks = mask_util.decode([dict(m, counts=m['counts'].encode()) for m in record['masks']])
    assert masks.shape == (100, 150, count)  # the original image's pixels
    assert (tmp_path / 'vis' / 'wide_pred.png').is_file()


def test_segmentation_png(tmp_path):
    make_ade_shapes(str(tmp_path / 'ade'), num_train=1, num_val=1, size=128, seed=3)
    (image, ) = glob.glob(str(tmp_path / 'ade' / '*' / 'images' / 'validation' / '*.jpg'))
    checkpoint = save(tmp_path, build(ADE_DEMO).state_dict())
    tool_output(tmp_path, 'tools/infer.py', ADE_DEMO, checkpoint, image, '--data',
                tmp_path / 'ade', '--out-dir', tmp_path / 'vis', '--pred-out-dir',
                tmp_path / 'pred')
    (png, ) = glob.glob(str(tmp_path / 'pred' / '*.png'))
    labels = np.asarray(Image.open(png))
    assert labels.shape == (128, 128) and labels.dtype == np.uint8
    assert labels.max() < Config.fromfile(ADE_DEMO).model.decode_head.num_classes


@pytest.mark.slow
def test_exported_file_writes_the_checkpoints_label_map(tmp_path):
    make_ade_shapes(str(tmp_path / 'ade'), num_train=1, num_val=1, size=128, seed=3)
    (image, ) = glob.glob(str(tmp_path / 'ade' / '*' / 'images' / 'validation' / '*.jpg'))
    checkpoint = save(tmp_path, build(ADE_DEMO).state_dict())
    onnx = str(tmp_path / 'demo.onnx')
    tool_output(tmp_path, 'tools/export_onnx.py', ADE_DEMO, checkpoint, '--out', onnx,
                '--data', tmp_path / 'ade')
    maps = []
    for name, source in (('torch', checkpoint), ('onnx', onnx)):
        tool_output(tmp_path, 'tools/infer.py', ADE_DEMO, source, image, '--data',
                    tmp_path / 'ade', '--out-dir', tmp_path / name, '--pred-out-dir',
                    tmp_path / name / 'pred')
        (png, ) = glob.glob(str(tmp_path / name / 'pred' / '*.png'))
        maps.append(np.asarray(Image.open(png)))
    assert (maps[0] == maps[1]).mean() > 0.99  # float differences flip a few boundary pixels


@pytest.mark.slow
def test_exported_detector_writes_the_checkpoints_predictions(tmp_path):
    make_coco_shapes(str(tmp_path / 'coco'), num_train=1, num_val=1, size=128, seed=3)
    (image, ) = glob.glob(str(tmp_path / 'coco' / 'val2017' / '*.jpg'))
    checkpoint = save(tmp_path, build(COCO_DEMO).state_dict())
    onnx = str(tmp_path / 'demo.onnx')
    tool_output(tmp_path, 'tools/export_onnx.py', COCO_DEMO, checkpoint, '--out', onnx,
                '--data', tmp_path / 'coco')
    records = []
    for name, source in (('torch', checkpoint), ('onnx', onnx)):
        tool_output(tmp_path, 'tools/infer.py', COCO_DEMO, source, image, '--data',
                    tmp_path / 'coco', '--out-dir', tmp_path / name, '--pred-out-dir',
                    tmp_path / name / 'pred')
        (path, ) = glob.glob(str(tmp_path / name / 'pred' / '*.json'))
        records.append(json.loads(open(path).read()))
    ours, theirs = records
    top = min(10, len(ours['labels']))
    assert top > 0 and ours['labels'][:top] == theirs['labels'][:top]
    np.testing.assert_allclose(ours['bboxes'][:top], theirs['bboxes'][:top], atol=0.5)
    np.testing.assert_allclose(ours['scores'][:top], theirs['scores'][:top], atol=1e-3)

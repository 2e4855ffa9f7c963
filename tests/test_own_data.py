"""Users' own data: --data finds the splits and classes of a COCO-format or mask folder, sets
them everywhere in every config; the data check fails before anything is built, in words."""
import copy
import glob
import json
import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from convnext_backbone.data import (DataError, check_dataset, class_heads, find_layout,
                                    fit_config_to_data, parse_split_overrides)
from convnext_backbone.data.demo import make_ade_shapes, make_coco_shapes, make_mask_shapes

from .helpers import (COCO_DEMO, ROOT, assert_mask_truth_drawn, build, coco_boxes_mask, save,
                      tool_output)

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')) +
                 glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))
# Category ids that are neither contiguous nor start at 1, listed in id order.
IDS = {'circle': 3, 'square': 7, 'triangle': 12}


def _rewrite(root, change):
    for path in glob.glob(osp.join(root, 'annotations', '*.json')):
        with open(path) as f:
            data = json.load(f)
        change(data)
        with open(path, 'w') as f:
            json.dump(data, f)


def make_coco_own(root, seed=0, **kwargs):
    """The demo's shapes as a user's COCO-format set: category ids 3, 7, 12."""
    make_coco_shapes(str(root), seed=seed, **{'num_train': 8, 'num_val': 4, 'size': 128,
                                              **kwargs})
    old = {1: IDS['circle'], 2: IDS['square'], 3: IDS['triangle']}

    def renumber(data):
        for category in data['categories']:
            category['id'] = old[category['id']]
        for annotation in data['annotations']:
            annotation['category_id'] = old[annotation['category_id']]
    _rewrite(str(root), renumber)
    return str(root)


def make_coco_one_class(root, seed=0):
    """Only the circles, as category 5 'ball'."""
    make_coco_shapes(str(root), num_train=8, num_val=4, size=128, seed=seed)

    def keep_circles(data):
        data['categories'] = [dict(id=5, name='ball', supercategory='thing')]
        data['annotations'] = [dict(a, category_id=5) for a in data['annotations']
                               if a['category_id'] == 1]
    _rewrite(str(root), keep_circles)
    return str(root)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('own')
    return dict(coco=make_coco_own(root / 'coco'), one=make_coco_one_class(root / 'one'),
                masks=make_mask_shapes(str(root / 'masks'), num_train=6, num_val=3, seed=1),
                ade=make_ade_shapes(str(root / 'ade'), num_train=4, num_val=2, seed=1))


# --------------------------------------------------------------------------------- layouts
def test_coco_classes_in_id_order_and_splits(data):
    layout = find_layout(data['coco'], 'mmdet')
    assert layout.kind == 'coco' and layout.classes == ('circle', 'square', 'triangle')
    assert layout.category_ids == (3, 7, 12)
    assert layout.splits['train'].ann_file == 'annotations/instances_train2017.json'
    assert layout.splits['train'].img_dir == 'train2017'
    assert layout.splits['val'].img_dir == 'val2017' and 'test' not in layout.splits


def test_other_coco_names_and_split_overrides(tmp_path):
    root = make_coco_own(tmp_path / 'c')
    os.rename(osp.join(root, 'annotations'), osp.join(root, 'labels'))
    os.makedirs(osp.join(root, 'images'))
    for split in ('train2017', 'val2017'):
        os.rename(osp.join(root, split), osp.join(root, 'images', split.replace('2017', '')))
    os.rename(osp.join(root, 'labels', 'instances_val2017.json'), osp.join(root, 'val.json'))
    with pytest.raises(DataError, match='No COCO-format training annotations in .*found: val.json'):
        find_layout(root, 'mmdet')
    layout = find_layout(root, 'mmdet', parse_split_overrides(
        ['train=labels/instances_train2017.json:images/train']))
    assert layout.splits['train'].img_dir == 'images/train'
    assert layout.splits['val'].ann_file == 'val.json'
    assert layout.splits['val'].img_dir == 'images/val'  # found by the split's name


def test_mask_folder_and_ade20k_layouts(data):
    layout = find_layout(data['masks'], 'mmseg')
    assert layout.kind == 'masks' and layout.classes == ('wall', 'floor', 'bed', 'table', 'car')
    assert layout.splits['train'].img_dir == 'images/train'
    assert layout.splits['val'].seg_dir == 'annotations/val'
    ade = find_layout(osp.dirname(data['ade']), 'mmseg')  # the folder holding it, or itself
    assert ade.kind == 'ade20k' and ade.root == data['ade']
    assert ade.splits['train'].img_dir == 'images/training'


def test_layout_errors(tmp_path, data):
    shutil.copytree(data['masks'], tmp_path / 'm')
    os.remove(tmp_path / 'm' / 'classes.txt')
    with pytest.raises(DataError, match="has no classes.txt: a segmentation folder names its "
                       'classes there, one per line'):
        find_layout(str(tmp_path / 'm'), 'mmseg')
    root = make_coco_own(tmp_path / 'c')
    path = osp.join(root, 'annotations', 'instances_val2017.json')
    with open(path) as f:
        val = json.load(f)
    val['categories'] = val['categories'][::-1]
    with open(path, 'w') as f:
        json.dump(val, f)
    with pytest.raises(DataError, match=r'The val annotations .* list other categories than the '
                       r'training ones .*, or in another order'):
        find_layout(root, 'mmdet')
    with pytest.raises(DataError, match='no JSON files.*It looks like a segmentation dataset, '
                       'which a detection config cannot use'):
        find_layout(data['masks'], 'mmdet')
    with pytest.raises(DataError, match='--data .*nowhere: no such folder'):
        find_layout(str(tmp_path / 'nowhere'), 'mmdet')


# ---------------------------------------------------------------------- every config fits
@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_every_config_fits_own_data(path, data):
    cfg = Config.fromfile(path)
    own = data['coco'] if cfg.default_scope == 'mmdet' else data['masks']
    layout = find_layout(own, cfg.default_scope)
    fit_config_to_data(cfg, layout)
    heads = list(class_heads(cfg.model))
    one_head = 'mask2former' in path or cfg.model.type in ('DINO', 'RTMDet')
    expected = 4 if 'cascade' in path else 1 if one_head else 2
    # Cascade: three box heads and the mask head; Mask2Former, DINO and RTMDet one
    assert len(heads) == expected
    assert all(head['num_classes'] == len(layout.classes) for _, head in heads)
    assert len(layout.classes) == (3 if cfg.default_scope == 'mmdet' else 5)
    if 'mask2former' in path:  # a weight per class and the config's no-object weight
        assert heads[0][1].loss_cls.class_weight == [1.0] * len(layout.classes) + [0.1]
    for phase in ('train', 'val', 'test'):
        dataset = cfg[f'{phase}_dataloader'].dataset
        assert dataset.data_root == own and tuple(dataset.metainfo.classes) == layout.classes
    if cfg.default_scope == 'mmdet':
        assert cfg.test_evaluator.ann_file == osp.join(own, 'annotations/instances_val2017.json')
    else:  # a mask folder's label 0 is a class: no ADE20K-style zero reduction left anywhere
        assert cfg.train_dataloader.dataset.reduce_zero_label is False
        pipelines = [cfg[f'{p}_dataloader'].dataset.pipeline for p in ('train', 'val', 'test')]
        assert 'reduce_zero_label=True' not in str(pipelines + [cfg.get('tta_pipeline')])
    report = check_dataset(cfg)
    assert report.classes == layout.classes and not report.errors


@pytest.mark.parametrize('demo', ['dino', 'rtmdet'])
def test_own_classes_reach_every_class_layer_of_dino_and_rtmdet(data, demo):
    """--data with one class: the built DINO has one row per class in each classifier and in
    its denoising queries' class embedding (DINO gives them the head's num_classes), RTMDet in
    each level's classifier; nothing else of the model depends on the classes."""
    from mmengine.registry import MODELS, DefaultScope
    from convnext_backbone.checkpoints.model import CLASS_SPECIFIC
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', f'{demo}_convnext_shapes_demo.py'))
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        three = MODELS.build(copy.deepcopy(cfg.model)).state_dict()  # (mmdet edits it)
        fit_config_to_data(cfg, find_layout(data['one'], 'mmdet'))
        model = MODELS.build(cfg.model)
    rows = {k: v.shape[0] for k, v in model.state_dict().items() if CLASS_SPECIFIC.search(k)}
    assert len(rows) == (7 if demo == 'dino' else 6) and set(rows.values()) == {1}
    # the whole-model loader's class layers are all that the classes change
    assert {k for k, v in model.state_dict().items() if v.shape != three[k].shape} == set(rows)
    assert model.bbox_head.num_classes == 1
    if demo == 'dino':
        assert model.dn_query_generator.num_classes == 1


def test_class_weights_follow_own_classes_in_a_list_of_losses(data):
    """Per-class weights of the config's 150 classes, in a list of losses: resized to the
    folder's 5, unequal ones reset to 1.0 (and said so)."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_convnext_t.py'))
    cfg.model.decode_head.loss_decode = [
        dict(type='CrossEntropyLoss', class_weight=[2.0] * 150),
        dict(type='CrossEntropyLoss', class_weight=[1.0] * 149 + [3.0])]
    changed = fit_config_to_data(cfg, find_layout(data['masks'], 'mmseg'))
    first, second = cfg.model.decode_head.loss_decode
    assert first.class_weight == [2.0] * 5 and second.class_weight == [1.0] * 5
    assert 'model.decode_head.loss_decode.0.class_weight' in changed
    assert any(c.startswith('model.decode_head.loss_decode.1.class_weight (per-class weights '
                            'reset to 1.0') for c in changed)


def test_ade20k_layout_keeps_its_classes(data):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_convnext_t.py'))
    fit_config_to_data(cfg, find_layout(data['ade'], 'mmseg'))
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
    assert cfg.train_dataloader.dataset.data_root == data['ade']
    report = check_dataset(cfg, phases=('train', ))
    assert len(report.classes) == 150 and report.classes[0] == 'wall'


# ------------------------------------------------------------------------------ the check
def _demo_cfg(kind, root):
    name = {'coco': 'mask_rcnn_convnext_shapes_demo.py', 'masks': 'upernet_convnext_shapes_demo.py'}
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'demo', name[kind]))
    fit_config_to_data(cfg, find_layout(root, cfg.default_scope))
    return cfg


def _fails(cfg, *messages, phases=('train', 'val')):
    with pytest.raises(DataError) as info:
        check_dataset(cfg, phases=phases)
    for message in messages:
        assert message in str(info.value), str(info.value)


def test_known_set_table(tmp_path):
    """Two images: three circles and a square in the first, nothing in the second; a crowd."""
    root = tmp_path / 'known'
    (root / 'annotations').mkdir(parents=True)
    for split in ('train2017', 'val2017'):
        (root / split).mkdir()
        for name in ('a.jpg', 'b.jpg'):
            Image.new('RGB', (64, 48)).save(root / split / name)
        box = dict(bbox=[1, 1, 10, 10], area=100, iscrowd=0, segmentation=[[1, 1, 11, 1, 11, 11]])
        annotations = [dict(box, id=i, image_id=1, category_id=2) for i in (1, 2, 3)]
        annotations += [dict(box, id=4, image_id=1, category_id=9),
                        dict(box, id=5, image_id=1, category_id=2, iscrowd=1)]
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(dict(
            images=[dict(id=1, file_name='a.jpg', width=64, height=48),
                    dict(id=2, file_name='b.jpg', width=64, height=48)],
            annotations=annotations,
            categories=[dict(id=2, name='circle'), dict(id=9, name='square')])))
    cfg = _demo_cfg('coco', str(root))
    report = check_dataset(cfg, phases=('train', 'val'))
    assert report.table() == '\n'.join([
        '| class | train instances | val instances |', '|---|---|---|',
        '| circle | 3 | 3 |', '| square | 1 | 1 |',
        '| (images) | 1 (1 left out) | 2 (1 without annotations) |'])
    assert any('1 crowd annotations (iscrowd=1) are ignored' in w for w in report.warnings)
    assert any('1 of 2 images have no annotation of the config\'s classes; they are kept, as '
               'background' in w for w in report.warnings)


def test_mask_table_counts_pixels(data):
    report = check_dataset(_demo_cfg('masks', data['masks']), phases=('val', ))
    counts = np.zeros(5, np.int64)
    for path in glob.glob(osp.join(data['masks'], 'annotations', 'val', '*.png')):
        label = np.asarray(Image.open(path))
        counts += np.bincount(label[label < 5].ravel(), minlength=5)
    assert [report.splits[0].per_class[i] for i in range(5)] == counts.tolist()


def test_classes_that_match_nothing(data):
    """The upstream "need at least one array to concatenate": another set's classes."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'mask_rcnn_convnext_t.py'))
    cfg.train_dataloader.dataset.data_root = data['coco'] + '/'
    _fails(cfg, "the config's classes ('person', 'bicycle', 'car', 'motorcycle', 'airplane', "
           "'bus', 'train', 'truck', ... 80 in all) match none of the dataset's categories "
           "('circle', 'square', 'triangle'), so it would train on nothing", phases=('train', ))


def test_heads_of_another_number_of_classes(data):
    cfg = _demo_cfg('coco', data['coco'])
    cfg.model.roi_head.mask_head.num_classes = 80
    _fails(cfg, "the config's heads predict other numbers of classes than its dataset has (3: "
           "('circle', 'square', 'triangle')): model.roi_head.mask_head.num_classes=80")


def _copy(data, kind, tmp_path):
    return shutil.copytree(data[kind], tmp_path / kind)


def test_missing_images_and_unknown_ids(data, tmp_path):
    root = str(_copy(data, 'coco', tmp_path))
    os.remove(osp.join(root, 'train2017', '000002.jpg'))

    def corrupt(d):
        d['annotations'][0]['image_id'] = 999
        d['annotations'][1]['category_id'] = 4
    _rewrite(root, corrupt)
    _fails(_demo_cfg('coco', root),
           '1 of 8 images are not in ' + osp.join(root, 'train2017') + ': 000002.jpg',
           '1 image ids that annotations refer to are not in its images: 999',
           '1 annotations of unknown category ids 4')


def test_degenerate_boxes_and_polygons_warn(data, tmp_path):
    root = str(_copy(data, 'coco', tmp_path))

    def degenerate(d):
        d['annotations'][0]['bbox'] = [5, 5, 0, 10]
        d['annotations'][1]['segmentation'] = [[1, 1, 5, 5]]
    _rewrite(root, degenerate)
    report = check_dataset(_demo_cfg('coco', root), phases=('train', ))
    assert any('1 annotations with an empty box' in w for w in report.warnings)
    assert any('1 annotations have polygons of fewer than 3 points' in w
               for w in report.warnings)


def test_empty_training_set(data, tmp_path):
    root = str(_copy(data, 'coco', tmp_path))
    _rewrite(root, lambda d: d.update(annotations=[]))
    _fails(_demo_cfg('coco', root), 'no image has a usable annotation of the config\'s classes: '
           'the training set would be empty')


def test_label_values_beyond_classes_and_missing_maps(data, tmp_path):
    root = str(_copy(data, 'masks', tmp_path))
    label_path = osp.join(root, 'annotations', 'train', '00001.png')
    label = np.asarray(Image.open(label_path)).copy()
    label[:4, :4] = 7
    Image.fromarray(label).save(label_path)
    os.remove(osp.join(root, 'annotations', 'train', '00002.png'))
    _fails(_demo_cfg('masks', root), 'label values [7] are beyond the 5 classes (0..4) and not '
           'the ignore index 255, in 1 label maps: 00001.jpg',
           '1 of 6 images have no label map: ' + osp.join(root, 'annotations', 'train',
                                                          '00002.png'))


def test_missing_folder_names_the_path(tmp_path):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_convnext_t.py'))
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    _fails(cfg, f'train data not found: {tmp_path}/nowhere/images/training does not exist',
           'tools/train.py CONFIG --data DIR', phases=('train', ))


# ------------------------------------------------------------------------- end to end
def _small(tmp_path, config, kind):
    """A paper config, made small enough for CPU tests (atto, 128-pixel images, 1 epoch or 4
    iterations); its data and classes come from --data."""
    if kind == 'coco':
        body = """
model = dict(backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
             neck=dict(in_channels=[40, 80, 160, 320]),
             test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50)))
pipeline = [dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='Resize', scale=(128, 128), keep_ratio=True), dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(pipeline=pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=1, val_interval=1)
optim_wrapper = dict(paramwise_cfg=dict(num_layers='auto'))
"""
    else:
        body = """
model = dict(backbone=dict(arch='atto', drop_path_rate=0.0, init_cfg=None),
             data_preprocessor=dict(size=(64, 64)),
             decode_head=dict(in_channels=[40, 80, 160, 320], channels=32),
             auxiliary_head=dict(in_channels=160, channels=16),
             test_cfg=dict(mode='whole'))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomCrop', crop_size=(64, 64)), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=4))
optim_wrapper = dict(paramwise_cfg=dict(num_layers='auto'))
"""
    path = tmp_path / 'config.py'
    path.write_text(f"_base_ = ['{osp.join(ROOT, 'configs', config)}']\n{body}")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize('config,kind,classes', [
    ('mask_rcnn_convnext_t.py', 'coco', ('circle', 'square', 'triangle')),
    ('cascade_mask_rcnn_convnext_t.py', 'one', ('ball', )),
    ('upernet_convnext_t.py', 'masks', ('wall', 'floor', 'bed', 'table', 'car')),
])
def test_train_test_and_infer_through_data(tmp_path, data, config, kind, classes):
    cfg = _small(tmp_path, config, 'masks' if kind == 'masks' else 'coco')
    work = tmp_path / 'work'
    out = tool_output(tmp_path, 'tools/train.py', cfg, '--data', data[kind], '--work-dir', work)
    assert '--data: ' in out and 'Data check:' in out
    # The work dir's copy of the config shows the classes, everywhere they belong.
    dumped = Config.fromfile(str(work / 'config.py'))
    assert tuple(dumped.train_dataloader.dataset.metainfo.classes) == classes
    assert {h['num_classes'] for _, h in class_heads(dumped.model)} == {len(classes)}
    checkpoint = sorted(glob.glob(str(work / '*.pth')))[-1]
    from convnext_backbone.checkpoints import allow_mmengine_checkpoints
    allow_mmengine_checkpoints()
    assert tuple(torch.load(checkpoint)['meta']['dataset_meta']['classes']) == classes
    out = tool_output(tmp_path, 'tools/test.py', cfg, checkpoint, '--data', data[kind],
                      '--work-dir', tmp_path / 'test')
    assert re.search(r'\((test|val)\) \[', out) and ('mIoU' in out or 'bbox_mAP' in out)
    assert "differ from the config's" not in out  # the checkpoint's names are the data's
    split = 'images/val' if kind == 'masks' else 'val2017'
    tool_output(tmp_path, 'tools/infer.py', cfg, checkpoint, osp.join(data[kind], split),
                '--data', data[kind], '--show-gt', '--out-dir', tmp_path / 'vis')
    pictures = sorted(glob.glob(str(tmp_path / 'vis' / '*_pred.png')))
    assert len(pictures) == len(os.listdir(osp.join(data[kind], split)))
    _assert_ground_truth_drawn(pictures[0], data[kind], split, kind, classes)


def _assert_ground_truth_drawn(picture_path, root, split, kind, classes):
    """The left half of an infer --show-gt picture: the ground truth where it is."""
    picture = np.asarray(Image.open(picture_path))[..., :3]
    name = osp.basename(picture_path)[:-len('_pred.png')]
    image_path = glob.glob(osp.join(root, split, name + '.*'))[0]
    image = np.asarray(Image.open(image_path).convert('RGB'))
    assert picture.shape == (128, 256, 3)  # ground truth | prediction
    truth_panel = picture[:, :128]
    if kind == 'masks':
        truth = np.asarray(Image.open(osp.join(root, 'annotations', 'val', name + '.png')))
        assert_mask_truth_drawn(truth_panel, image, truth, classes)
        return
    inside = coco_boxes_mask(osp.join(root, 'annotations', 'instances_val2017.json'), name,
                             image.shape[:2])
    changed = np.abs(truth_panel.astype(int) - image).max(-1) > 20
    assert inside.any() and changed[inside].mean() > 0.5


@pytest.mark.slow
def test_browse_data_and_fine_tune_onto_own_classes(tmp_path, data):
    """A COCO-style 80-class detector fine-tuned onto the user's 3 classes via --data."""
    heads = dict(roi_head=dict(bbox_head=dict(num_classes=80), mask_head=dict(num_classes=80)))
    coco80 = save(tmp_path, build(COCO_DEMO, **heads).state_dict(), 'coco80.pth',
                  dataset_meta=dict(classes=tuple(f'c{i}' for i in range(80))))
    demo = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_convnext_shapes_demo.py')
    out = tool_output(tmp_path, 'tools/train.py', demo, '--data', data['coco'], '--load-from',
                      coco80, '--work-dir', tmp_path / 'work', '--cfg-options',
                      'train_cfg.max_epochs=1', 'train_dataloader.num_workers=0',
                      'train_dataloader.persistent_workers=False',
                      'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False')
    assert 're-initialised (other number of classes): roi_head.bbox_head.fc_cls, ' \
           'roi_head.bbox_head.fc_reg, roi_head.mask_head.conv_logits' in out
    out = tool_output(tmp_path, 'tools/browse_data.py', demo, '--data', data['coco'], '-n', '6',
                      '--columns', '3', '--out', tmp_path / 'grid.png')
    grid = np.asarray(Image.open(tmp_path / 'grid.png'))[..., :3]
    assert grid.shape[1] > 3 * 128 and grid.shape[0] > 2 * 100  # 3 x 2 tiles of ~128-192 px
    # Six tiles, each a picture (not the white canvas), in 3 columns and 2 rows.
    height, width = (grid.shape[0] + 4) // 2, (grid.shape[1] + 4) // 3
    for row in range(2):
        for column in range(3):
            tile = grid[row * height:row * height + 64, column * width:column * width + 64]
            assert (tile < 250).any(-1).mean() > 0.5, (row, column)

"""The data check counts what mmdet / mmseg build from the config and names the rule that left
annotations or images out; it reads every image's header (empty files, non-images, sizes, EXIF
orientation as mmcv's decoder applies it), decodes them with --decode; training skips an image
it cannot load, naming it in the log.

One small COCO set per rule (a few JSON entries, images of a few pixels in tmp_path); the
table is compared with the instances of mmdet's own CocoDataset built from the same dict."""
import json
from collections import Counter

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import DATASETS, DefaultScope
from PIL import Image

from convnext_backbone.cli import run_tool
from convnext_backbone.data import DataError, check_dataset
from convnext_backbone.data.images import decoded_size, inspect_image

from .helpers import load_tool

W, H = 32, 24  # every image's size unless a test says otherwise
CLASSES = ('cat', 'dog')


def box(id, image_id=1, category_id=1, bbox=(2, 2, 10, 8), **extra):
    """An annotation of the 'cat' (category 1) in image 1 unless told otherwise."""
    x, y, w, h = bbox
    return dict(id=id, image_id=image_id, category_id=category_id, bbox=list(bbox),
                area=w * h, iscrowd=0, segmentation=[[x, y, x + w, y, x + w, y + h]], **extra)


def write_image(path, size=(W, H), exif_orientation=None):
    image = Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif.tobytes())
    else:
        image.save(path)


def coco(tmp_path, annotations, images=2, sizes=None, categories=(('cat', 1), ('dog', 2)),
         classes=CLASSES, filter_cfg=None, test_mode=False, pipeline=None):
    """A COCO set in tmp_path (images 1..``images``, a.jpg, b.jpg, ...) and a config whose train
    dataset reads it."""
    (tmp_path / 'img').mkdir(exist_ok=True)
    entries = []
    for i in range(1, images + 1):
        name = f'{chr(96 + i)}.jpg'
        size = (sizes or {}).get(i, (W, H))
        write_image(tmp_path / 'img' / name, size)
        entries.append(dict(id=i, file_name=name, width=size[0], height=size[1]))
    (tmp_path / 'ann.json').write_text(json.dumps(dict(
        images=entries, annotations=annotations,
        categories=[dict(id=i, name=n) for n, i in categories])))
    dataset = dict(type='CocoDataset', data_root=str(tmp_path), ann_file='ann.json',
                   data_prefix=dict(img='img/'), metainfo=dict(classes=classes),
                   filter_cfg=filter_cfg or dict(filter_empty_gt=True, min_size=0),
                   test_mode=test_mode, pipeline=pipeline or [dict(type='LoadImageFromFile')])
    return Config(dict(default_scope='mmdet', train_dataloader=dict(dataset=dataset)))


def mmdet_dataset(cfg):
    """mmdet's CocoDataset of the config's train dict, built as the Runner builds it but for
    the serialisation of its list (the same list, packed; its gc.collect() takes half a second
    in a process that has imported torch and mmdet)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[],
                                   serialize_data=False))


def check(cfg, **kwargs):
    return check_dataset(cfg, phases=('train', ), **kwargs)


def assert_table_is_mmdets(report, cfg):
    """The split's images and instances per class are those of mmdet's dataset, and the
    check's rules predict it (no 'keeps other instances' warning)."""
    dataset = mmdet_dataset(cfg)
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    counts = Counter(i['bbox_label'] for info in infos for i in info['instances']
                     if not i['ignore_flag'])
    split = report.splits[0]
    assert split.images == len(dataset)
    assert dict(split.per_class) == dict(counts)
    assert not any('keeps other instances' in w for w in report.warnings), report.warnings
    return dataset


def warned(report, text):
    return [w for w in report.warnings if text in w]


# ------------------------------------------------------------------------ one set per rule
@pytest.mark.parametrize('rule,bad,message', [
    ('outside', box(9, bbox=(40, 2, 10, 8)), '1 annotations with a box outside its image (no '
     'overlap with the width x height of its image entry) are dropped by mmdet; annotation '
     'ids 9'),
    ('ignore', box(9, ignore=True), '1 annotations with the ignore flag ("ignore": true) are '
     'dropped by mmdet; annotation ids 9'),
    ('degenerate', box(9, bbox=(2, 2, 0.5, 8)), '1 annotations with an empty box (degenerate: '
     'width or height < 1, or area <= 0) are dropped by mmdet; annotation ids 9'),
    ('crowd', dict(box(9), iscrowd=1), '1 crowd annotations (iscrowd=1) are ignored in '
     'training and evaluation'),
])
def test_dropped_annotation_is_named_and_not_counted(tmp_path, rule, bad, message):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2, category_id=2), bad])
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.splits[0].per_class == Counter({0: 1, 1: 1})  # the bad one not counted
    assert warned(report, message), report.warnings


def test_images_without_annotations_under_filter_empty_gt(tmp_path):
    cfg = coco(tmp_path, [box(1)], images=3)
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.table().splitlines()[-1] == '| (images) | 1 (2 left out) |'
    assert warned(report, "2 of 3 images have no annotation of the config's classes; they are "
                  'left out (filter_cfg.filter_empty_gt): b.jpg, c.jpg')
    cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=False)
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.table().splitlines()[-1] == '| (images) | 3 (2 without annotations) |'
    assert warned(report, 'they are kept, as background: b.jpg, c.jpg')


def test_images_whose_annotations_are_all_dropped_stay_as_background(tmp_path):
    """filter_empty_gt tests the file's annotations, before the rules drop any."""
    cfg = coco(tmp_path, [box(1), box(2, image_id=2, bbox=(50, 50, 5, 5))])
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.splits[0].images == 2 and report.splits[0].empty_images == 1
    assert warned(report, "1 images have annotations of the config's classes, but none that "
                  'mmdet trains on (dropped by the rules above, or crowds); they are kept, as '
                  'background (filter_cfg.filter_empty_gt looks at the annotations before those '
                  'rules): b.jpg')


def test_min_size_leaves_small_images_out(tmp_path):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)], sizes={2: (16, 12)},
               filter_cfg=dict(filter_empty_gt=True, min_size=20))
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.splits[0].images == 1 and report.splits[0].left_out == 1
    assert warned(report, '1 images smaller than filter_cfg.min_size=20 on their shorter side '
                  '(as their entries give it) are left out: b.jpg (16x12)')


def test_test_mode_filters_nothing(tmp_path):
    cfg = coco(tmp_path, [box(1)], images=2, sizes={2: (8, 8)}, test_mode=True,
               filter_cfg=dict(filter_empty_gt=True, min_size=20))
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.splits[0].images == 2 and report.splits[0].left_out == 0


def test_training_set_empty_by_the_rules(tmp_path):
    cfg = coco(tmp_path, [box(1, bbox=(40, 30, 5, 5)), dict(box(2, image_id=2), iscrowd=1)])
    with pytest.raises(DataError, match=r"no image has a usable annotation of the config's "
                       r'classes: the training set would be empty \(its 2 images would train '
                       r'as background only; annotations dropped by rule: 1 outside, 1 crowd\)'):
        check(cfg)
    cfg = coco(tmp_path, [box(1)], sizes={1: (8, 8)},
               filter_cfg=dict(filter_empty_gt=True, min_size=10))
    with pytest.raises(DataError, match=r'the training set would be empty \(mmdet keeps none of '
                       r'its 2 images: 1 without annotations of the classes \(filter_cfg.'
                       r'filter_empty_gt\); 1 smaller than filter_cfg.min_size=10\)'):
        check(cfg)


def test_classes_in_another_order_than_the_file(tmp_path):
    """mmdet labels categories in the file's order: the config's ('dog', 'cat') would swap."""
    cfg = coco(tmp_path, [box(1), box(2, category_id=2)], classes=('dog', 'cat'))
    with pytest.raises(DataError, match=r"mmdet numbers the classes in the order of the file's "
                       r"categories, not of the config's classes, so training would mislabel "
                       r"them: category 1 'cat' would be label 0 \('dog'\), category 2 'dog' "
                       r"would be label 1 \('cat'\). List metainfo.classes in the order of the "
                       r"file \('cat', 'dog'\)"):
        check(cfg)


def test_a_file_mmdet_cannot_parse_is_named_with_the_other_errors(tmp_path):
    bad = box(2)
    del bad['area']
    cfg = coco(tmp_path, [box(1), bad, box(3, image_id=4)])
    with pytest.raises(DataError) as info:
        check(cfg)
    message = str(info.value)
    assert "its CocoDataset cannot be built from the config (KeyError: 'area')" in message
    assert '1 image ids that annotations refer to are not in its images: 4' in message


def test_the_dataset_decides_what_it_drops_and_leaves_out(tmp_path):
    """A CocoDataset with rules of its own (boxes under 5 px wide dropped, c.jpg left out): the
    table and the words follow what it does, as the check asks the dataset, not a copy of
    CocoDataset's rules."""
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS as MMDET_DATASETS

    @MMDET_DATASETS.register_module(force=True)
    class PickyCocoDataset(CocoDataset):
        def parse_data_info(self, raw_data_info):
            info = super().parse_data_info(raw_data_info)
            info['instances'] = [i for i in info['instances'] if i['bbox'][2] - i['bbox'][0] >= 5]
            return info

        def filter_data(self):
            return [i for i in super().filter_data() if not i['img_path'].endswith('c.jpg')]
    cfg = coco(tmp_path, [box(1), box(2, image_id=2, bbox=(2, 2, 3, 8)), box(3, image_id=3)],
               images=3)
    cfg.train_dataloader.dataset.type = 'PickyCocoDataset'
    report = check(cfg)
    assert_table_is_mmdets(report, cfg)
    assert report.splits[0].per_class == Counter({0: 1})
    assert warned(report, '1 annotations are dropped by the dataset by a rule of its own; '
                  'annotation ids 2')
    assert warned(report, '1 images are left out by its PickyCocoDataset for another reason '
                  '(indices, or its own filter): c.jpg')


def test_masks_that_mmdets_loader_ignores(tmp_path):
    """An instance whose every polygon has fewer than 3 points is ignored by mmdet's
    LoadAnnotations; one with a good polygon beside a bad one is not."""
    one_bad, good_and_bad = box(1), box(2, image_id=2)
    one_bad['segmentation'] = [[1, 1, 5, 5]]
    good_and_bad['segmentation'].append([1, 1, 5, 5])
    cfg = coco(tmp_path, [one_bad, good_and_bad],
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    report = check(cfg)
    assert warned(report, "1 annotations have polygons of fewer than 3 points (or masks it "
                  "cannot read): mmdet's LoadAnnotations ignores those instances"), report.warnings


def test_annotations_without_masks_refused_where_the_pipeline_loads_masks(tmp_path):
    """Annotations without a "segmentation" (or an empty one) stop mmdet's mask loader with a
    KeyError; the check names them and what to do where the pipeline loads masks, and passes
    the same file for a box-only pipeline."""
    from mmengine.registry import TRANSFORMS
    missing, empty = box(1), box(2, image_id=2)
    del missing['segmentation']
    empty['segmentation'] = []
    masks = [dict(type='LoadImageFromFile'),
             dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]
    cfg = coco(tmp_path, [missing, empty, box(3, image_id=2)], pipeline=masks)
    with DefaultScope.overwrite_default_scope('mmdet'), pytest.raises(KeyError, match='mask'):
        TRANSFORMS.build(masks[1])._process_masks(mmdet_dataset(cfg).get_data_info(0))
    with pytest.raises(DataError, match=r'2 annotations have no mask \("segmentation" missing '
                       r"or empty; images 1, 2\), but the pipeline's LoadAnnotations loads "
                       r'masks \(with_mask=True\).*give every annotation a polygon or RLE, or '
                       r'train a box-only config'):
        check(cfg)
    boxes_only = coco(tmp_path, [missing, empty, box(3, image_id=2)],
                      pipeline=[masks[0], dict(masks[1], with_mask=False)])
    assert dict(check(boxes_only).splits[0].per_class) == {0: 3}


def test_label_maps_of_16_bits_wrap_as_mmseg_reads_them(tmp_path):
    """mmseg casts a label map to uint8: a 16-bit file's 257 is label 1 in training. The table
    counts what training sees; a warning names the file."""
    for folder in ('images', 'labels'):
        (tmp_path / folder).mkdir()
    write_image(tmp_path / 'images' / 'a.jpg')
    Image.fromarray(np.full((H, W), 257, np.uint16)).save(tmp_path / 'labels' / 'a.png')
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                   seg_map_suffix='.png', data_prefix=dict(img_path='images',
                                                           seg_map_path='labels'),
                   metainfo=dict(classes=('a', 'b')), pipeline=[dict(type='LoadImageFromFile')])
    report = check(Config(dict(default_scope='mmseg', train_dataloader=dict(dataset=dataset))))
    assert report.splits[0].per_class == Counter({1: W * H})
    assert warned(report, '1 label maps have 16 or 32 bits a pixel, which mmseg\'s '
                  'LoadAnnotations casts to 8 (uint8): labels above 255 would wrap round (the '
                  f"table counts them as it will): {tmp_path / 'labels' / 'a.png'} (I;16)")


# ------------------------------------------------------------------------------ image files
def test_empty_non_image_and_missing_files(tmp_path):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2), box(3, image_id=3), box(4, image_id=4)],
               images=4)
    (tmp_path / 'img' / 'b.jpg').write_bytes(b'')
    (tmp_path / 'img' / 'c.jpg').write_text('not a picture')
    (tmp_path / 'img' / 'd.jpg').unlink()
    with pytest.raises(DataError) as info:
        check(cfg)
    message = str(info.value)
    assert f"1 of 4 images are not in {tmp_path / 'img'}: d.jpg" in message
    assert ("2 of 4 images cannot be used (mmcv's LoadImageFromFile cannot decode them): b.jpg "
            '(an empty file (0 bytes)), c.jpg (not an image (PIL cannot identify its format))'
            in message)


def test_image_of_another_size_than_its_entry(tmp_path):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)])
    write_image(tmp_path / 'img' / 'b.jpg', (30, 24))
    with pytest.raises(DataError, match=r'1 images are not of the size \(width x height\) their '
                       r'image entries give, so their boxes and masks would not fit: b.jpg: '
                       r'30x24; its entry says 32x24'):
        check(cfg)


def test_exif_orientation_as_mmcv_decodes_it(tmp_path):
    """A file stored 24x32 with orientation 6 is 32x24 once mmcv's cv2 'color' decoder has
    turned it, as its entry says: fine. Orientation 6 on a file stored 32x24 makes it 24x32:
    refused, with the EXIF tag named; 'color_ignore_orientation' keeps it 32x24."""
    from mmcv.transforms import LoadImageFromFile
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)])
    write_image(tmp_path / 'img' / 'a.jpg', (H, W), exif_orientation=6)
    write_image(tmp_path / 'img' / 'b.jpg', (W, H), exif_orientation=6)
    for name, stored in (('a.jpg', (H, W)), ('b.jpg', (W, H))):  # the claim, against mmcv
        image = inspect_image(str(tmp_path / 'img' / name))
        assert image.size == stored and image.orientation == 6
        for color_type in ('color', 'color_ignore_orientation'):
            loaded = LoadImageFromFile(color_type=color_type)(dict(img_path=image.path))
            assert decoded_size(image, 'cv2', color_type) == loaded['img_shape'][::-1]
    with pytest.raises(DataError) as info:
        check(cfg)
    message = str(info.value)
    assert ("1 images are not of the size (width x height) their image entries give, so their "
            'boxes and masks would not fit: b.jpg: stored 32x24 with EXIF orientation 6 '
            "(rotated 90 degrees), which mmcv's decoder (cv2, color_type='color') applies, "
            'giving 24x32: annotate the turned image' in message)
    assert 'a.jpg' not in message
    cfg.train_dataloader.dataset.pipeline = [dict(type='LoadImageFromFile',
                                                  color_type='color_ignore_orientation')]
    with pytest.raises(DataError, match=r"a.jpg: EXIF orientation 6 \(rotated 90 degrees\) "
                       r"would make it 32x24, but mmcv's decoder \(cv2, color_type="
                       r"'color_ignore_orientation'\) ignores the tag") as info:
        check(cfg)
    assert 'b.jpg' not in str(info.value)


def test_truncated_image_found_by_decode_only(tmp_path):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)])
    big = tmp_path / 'big.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(big)
    (tmp_path / 'img' / 'b.jpg').write_bytes(big.read_bytes()[:-200])
    assert not check(cfg).errors
    with pytest.raises(DataError, match=r'1 of 2 images cannot be used .*: b.jpg \(does not '
                       r'decode: OSError: image file is truncated'):
        check(cfg, decode=True)


def test_tool_decode_option(tmp_path, capsys):
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)])
    big = tmp_path / 'big.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(big)
    (tmp_path / 'img' / 'b.jpg').write_bytes(big.read_bytes()[:-200])
    path = str(tmp_path / 'config.py')
    cfg.dump(path)
    tool = load_tool('check_data')
    assert run_tool(tool.main, [path, '--phases', 'train']) == 0
    assert run_tool(tool.main, [path, '--phases', 'train', '--decode']) == 1
    assert 'b.jpg (does not decode' in capsys.readouterr().err


def test_mask_image_and_label_map_sizes_with_exif(tmp_path):
    """Segmentation: the image as mmcv decodes it (EXIF applied) against its label map (read
    unchanged)."""
    for folder in ('images', 'labels'):
        (tmp_path / folder).mkdir()
    write_image(tmp_path / 'images' / 'a.jpg', (W, H), exif_orientation=8)  # decoded 24x32
    write_image(tmp_path / 'images' / 'b.jpg', (W, H), exif_orientation=8)
    Image.fromarray(np.ones((W, H), np.uint8)).save(tmp_path / 'labels' / 'a.png')  # 24x32
    Image.fromarray(np.ones((H, W), np.uint8)).save(tmp_path / 'labels' / 'b.png')  # 32x24
    write_image(tmp_path / 'images' / 'c.jpg')
    (tmp_path / 'labels' / 'c.png').write_bytes(b'\x89PNG\r\n')  # a PNG's first bytes only
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                   seg_map_suffix='.png', data_prefix=dict(img_path='images',
                                                           seg_map_path='labels'),
                   metainfo=dict(classes=('a', 'b')), pipeline=[dict(type='LoadImageFromFile')])
    cfg = Config(dict(default_scope='mmseg', train_dataloader=dict(dataset=dataset)))
    with pytest.raises(DataError) as info:
        check(cfg)
    message = str(info.value)
    assert ('1 label maps are not the size of their image (as mmcv decodes it): b.jpg 24x32 vs '
            'label map 32x24 (stored 32x24 with EXIF orientation 8 (rotated 270 degrees)'
            in message)
    assert 'a.jpg' not in message
    assert f"1 label maps cannot be read: {tmp_path / 'labels' / 'c.png'} (" in message


# ------------------------------------------------------------------ training past bad images
def test_training_skips_an_unloadable_image_and_names_it(tmp_path, monkeypatch):
    from convnext_backbone.data import loading
    logged = []
    monkeypatch.setattr(loading, 'print_log', lambda message, **kw: logged.append(message))
    cfg = coco(tmp_path, [box(1), box(2, image_id=2)],
               pipeline=[dict(type='LoadImageOrSkip')])
    (tmp_path / 'img' / 'b.jpg').write_bytes(b'')
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    sample = dataset[1]  # b.jpg: another sample in its place
    assert sample['img_path'].endswith('a.jpg') and sample['img'].shape == (H, W, 3)
    assert logged and all(f"Skipping training image {tmp_path / 'img' / 'b.jpg'}: cannot load "
                          'it (an empty file (0 bytes)); the run goes on with another image in '
                          'its place' in m for m in logged)
    (tmp_path / 'img' / 'a.jpg').unlink()
    loader = loading.LoadImageOrSkip(max_failures_in_a_row=3)
    for _ in range(2):
        assert loader(dict(img_path=str(tmp_path / 'img' / 'a.jpg'))) is None
    with pytest.raises(DataError, match=r'3 training images in a row cannot be loaded: .*a.jpg '
                       r'\(not found\)'):
        loader(dict(img_path=str(tmp_path / 'img' / 'a.jpg')))


def test_only_training_pipelines_skip():
    from convnext_backbone.data.loading import skip_unreadable_training_images
    pipeline = [dict(type='LoadImageFromFile', backend_args=None), dict(type='PackDetInputs')]
    cfg = Config(dict(
        custom_imports=dict(imports=['convnext_backbone'], allow_failed_imports=False),
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='CocoDataset', pipeline=[dict(p) for p in pipeline]))),
        val_dataloader=dict(dataset=dict(type='CocoDataset', pipeline=pipeline))))
    assert skip_unreadable_training_images(cfg) == [
        'train_dataloader.dataset.dataset.pipeline.0: LoadImageOrSkip']
    assert cfg.train_dataloader.dataset.dataset.pipeline[0] == dict(type='LoadImageOrSkip',
                                                                    backend_args=None)
    assert cfg.val_dataloader.dataset.pipeline[0].type == 'LoadImageFromFile'
    assert cfg.custom_imports.imports == ['convnext_backbone', 'convnext_backbone.data.loading']
    assert skip_unreadable_training_images(cfg) == []  # once

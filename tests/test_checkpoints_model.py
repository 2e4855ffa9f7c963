"""Whole detector / segmentor checkpoints: every published layout, made with the source
framework's own model code and random weights, gives this package's model the source's outputs;
every misfit is refused in words, with nothing loaded."""
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from safetensors.torch import save_file

from convnext_backbone.checkpoints import CheckpointError
from convnext_backbone.checkpoints.model import (load_model_checkpoint, read_model_checkpoint,
                                                 resolve_dataset_meta)
from convnext_backbone.data.demo import SHAPES

from .helpers import (ADE_DEMO, CASCADE, COCO_DEMO, MMPRETRAIN_BACKBONE, ROOT, build,
                      hf_upernet, save)

SIZE = 96  # input side: small, a multiple of 32
V2 = dict(use_grn=True, layer_scale_init_value=0.0)


def x_input(seed=0):
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def assert_all_close(ours, theirs):
    """Equal to 1e-5 relative (to each tensor's largest magnitude), element for element."""
    flat_ours, flat_theirs = _flatten(ours), _flatten(theirs)
    assert len(flat_ours) == len(flat_theirs) > 0
    for a, b in zip(flat_ours, flat_theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()) + 1e-12)


def _flatten(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flatten(v)]
    return []


# ------------------------------------------------------------------------------ detectors
def det_samples():
    from mmdet.structures import DetDataSample
    sample = DetDataSample()
    sample.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(
        SIZE, SIZE), batch_input_shape=(SIZE, SIZE), scale_factor=(1.0, 1.0)))
    return [sample]


@torch.no_grad()
def det_outputs(model, proposals=None):
    """Backbone + neck features, RPN outputs, and RoI head outputs for given proposals (the
    source's: NMS on near-equal scores must not make the comparison flaky)."""
    feats = model.extract_feat(x_input())
    rpn = model.rpn_head(feats)
    if proposals is None:
        proposals = model.rpn_head.predict(feats, det_samples(), rescale=False)
    roi = model.roi_head.forward(feats, proposals, det_samples())
    return (feats, rpn, roi), proposals


@pytest.mark.parametrize('config,version', [(COCO_DEMO, 'v1'), (COCO_DEMO, 'v2'),
                                            (CASCADE, 'v1')])
def test_mmdet_zoo_layout_gives_the_source_outputs(tmp_path, config, version):
    backbone = dict(MMPRETRAIN_BACKBONE, **(V2 if version == 'v2' else {}))
    source = build(config, new_backbone=backbone)
    classes = SHAPES if config == COCO_DEMO else tuple(f'c{i}' for i in range(80))
    path = save(tmp_path, source.state_dict(), dataset_meta=dict(classes=classes,
                                                                 palette=[(1, 2, 3)] * 80))
    ours = build(config, new_backbone=dict(type='ConvNeXt', arch='atto', version=version,
                                       layer_scale_init_value=None if version == 'v2' else 1.))
    report, checkpoint, meta = load_model_checkpoint(ours, path, 'eval')
    assert checkpoint.layout.startswith('MMDetection 3 / MMSegmentation 1 model zoo')
    assert not report.unused and not report.reinitialized
    assert meta['classes'] == classes and meta['palette'][0] == (1, 2, 3)
    expected, proposals = det_outputs(source)
    got, _ = det_outputs(ours, proposals)
    assert_all_close(got, expected)


# DINO and RTMDet as MMDetection's zoo configs build them: mmpretrain's ConvNeXt, stages 1-3.
DINO_DEMO = osp.join(ROOT, 'configs/demo/dino_convnext_shapes_demo.py')
RTMDET_DEMO = osp.join(ROOT, 'configs/demo/rtmdet_convnext_shapes_demo.py')
MMPRETRAIN_STAGES_1_3 = dict(MMPRETRAIN_BACKBONE, out_indices=[1, 2, 3])
OURS_STAGES_1_3 = dict(type='ConvNeXt', arch='atto', out_indices=(1, 2, 3),
                       layer_scale_init_value=1.0)


@torch.no_grad()
def one_stage_or_detr_outputs(model):
    """Backbone + neck features and the head's outputs: RTMDet's class logits and box
    distances per level; DINO's classes and boxes of every decoder layer (its encoder's top
    queries chosen inside)."""
    x = x_input()
    feats = model.extract_feat(x)
    if type(model).__name__ == 'DINO':
        return feats, model._forward(x, det_samples())
    return feats, model.bbox_head(feats)


@pytest.mark.parametrize('config', [DINO_DEMO, RTMDET_DEMO], ids=['dino', 'rtmdet'])
def test_mmdet_zoo_dino_and_rtmdet_give_the_source_outputs(tmp_path, config):
    source = build(config, new_backbone=MMPRETRAIN_STAGES_1_3)
    path = save(tmp_path, source.state_dict(), dataset_meta=dict(classes=SHAPES))
    ours = build(config)
    report, checkpoint, meta = load_model_checkpoint(ours, path, 'eval')
    assert checkpoint.layout.startswith('MMDetection 3 / MMSegmentation 1 model zoo')
    assert not report.unused and not report.reinitialized and meta['classes'] == SHAPES
    assert len(report.loaded) == len(ours.state_dict())
    assert_all_close(one_stage_or_detr_outputs(ours), one_stage_or_detr_outputs(source))


@pytest.mark.parametrize('config,heads,layers', [
    (DINO_DEMO, dict(bbox_head=dict(num_classes=80)),
     ['bbox_head.cls_branches.0', 'bbox_head.cls_branches.1', 'bbox_head.cls_branches.2',
      'dn_query_generator.label_embedding']),
    (RTMDET_DEMO, dict(bbox_head=dict(num_classes=80)),
     ['bbox_head.rtm_cls.0', 'bbox_head.rtm_cls.1', 'bbox_head.rtm_cls.2']),
], ids=['dino', 'rtmdet'])
def test_dino_and_rtmdet_classes_refused_for_eval_reinitialised_for_finetuning(
        tmp_path, config, heads, layers):
    """An 80-class zoo file for the 3-class demo: evaluating is refused naming every class
    layer; fine-tuning re-initialises exactly those and loads the rest."""
    coco = build(config, new_backbone=MMPRETRAIN_STAGES_1_3, **heads)
    path = save(tmp_path, coco.state_dict())
    _refused(build(config), path, 'eval',
             f'the checkpoint predicts 80 classes ({", ".join(layers)}), the config 3')
    model = build(config)
    report, _, _ = load_model_checkpoint(model, path, 'finetune')
    assert sorted({k.rpartition('.')[0] for k in report.reinitialized}) == sorted(layers)
    assert f're-initialised (other number of classes): {", ".join(layers)}' in str(report)
    assert len(report.loaded) + len(report.reinitialized) == len(model.state_dict())


# ------------------------------------------------------------------------------ segmentors
@torch.no_grad()
def seg_outputs(model):
    x = x_input()
    metas = [dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE))]
    feats = model.extract_feat(x)
    aux = torch.nn.functional.interpolate(model.auxiliary_head(feats), size=(SIZE, SIZE),
                                          mode='bilinear', align_corners=False)
    return model.encode_decode(x, metas), aux


def test_mmseg_zoo_layout_gives_the_source_outputs(tmp_path):
    source = build(ADE_DEMO, new_backbone=MMPRETRAIN_BACKBONE)
    path = save(tmp_path, source.state_dict())
    ours = build(ADE_DEMO)
    report, checkpoint, _ = load_model_checkpoint(ours, path, 'eval')
    assert not report.unused
    assert_all_close(seg_outputs(ours), seg_outputs(source))


@pytest.mark.parametrize('safe_serialization', [True, False])
def test_hf_upernet_folder_gives_the_source_outputs(tmp_path, safe_serialization):
    peer = hf_upernet()
    peer.save_pretrained(tmp_path / 'hf', safe_serialization=safe_serialization)
    ours = build(ADE_DEMO)
    report, checkpoint, meta = load_model_checkpoint(ours, str(tmp_path / 'hf'), 'eval')
    assert checkpoint.layout == 'Hugging Face UperNetForSemanticSegmentation'
    assert not report.unused and checkpoint.dataset_meta is None  # HF files carry no names
    with torch.no_grad():
        logits = peer(x_input()).logits
        # The auxiliary head's output as the HF forward computes it (it returns it only
        # inside the loss).
        features = peer.backbone.forward_with_filtered_kwargs(x_input()).feature_maps
        aux = torch.nn.functional.interpolate(peer.auxiliary_head(features), size=(SIZE, SIZE),
                                              mode='bilinear', align_corners=False)
    assert_all_close(seg_outputs(ours), (logits, aux))


def test_official_release_layout_and_class_names(tmp_path):
    """mmdet 2.x / mmseg 0.x files: this package's keys, names in meta.CLASSES / PALETTE."""
    source = build(ADE_DEMO)
    classes = tuple(f'class{i}' for i in range(150))
    path = save(tmp_path, source.state_dict(), CLASSES=classes, PALETTE=[[0, 0, 0]] * 150)
    ours = build(ADE_DEMO)
    _, checkpoint, meta = load_model_checkpoint(ours, path, 'eval',
                                                config_meta=dict(classes=classes))
    assert checkpoint.layout.startswith('official ConvNeXt release')
    assert meta == dict(classes=classes, palette=[[0, 0, 0]] * 150)
    assert_all_close(seg_outputs(ours), seg_outputs(source))


def test_class_names_from_the_checkpoint_only_when_they_agree():
    ckpt = dict(classes=('a', 'b'), palette=[(1, 1, 1), (2, 2, 2)])
    config = dict(classes=('a', 'b'), palette=[(9, 9, 9), (8, 8, 8)])
    assert resolve_dataset_meta(ckpt, config) == (ckpt, None)
    meta, note = resolve_dataset_meta(ckpt, dict(classes=('x', 'y')))
    assert meta == dict(classes=('x', 'y'))
    assert note == "the checkpoint's classes ('a', 'b') differ from the config's ('x', 'y'); " \
                   "using the config's"
    assert resolve_dataset_meta(None, config) == (config, None)


def test_converted_safetensors_round_trip(tmp_path):
    import subprocess
    import sys
    source = build(ADE_DEMO, new_backbone=MMPRETRAIN_BACKBONE)
    classes = tuple(f'class{i}' for i in range(150))
    src = save(tmp_path, source.state_dict(), dataset_meta=dict(classes=classes))
    for dst in ('out.safetensors', 'out.pth'):
        run = subprocess.run([sys.executable, 'tools/convert_weights.py', src,
                              str(tmp_path / dst), '--config', ADE_DEMO],
                             cwd=ROOT, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        assert 'model zoo (mmpretrain ConvNeXt backbone)' in run.stdout
        assert f'fits {ADE_DEMO} exactly; classes: 150 (class0, class1' in run.stdout
        ours = build(ADE_DEMO)
        _, checkpoint, meta = load_model_checkpoint(ours, str(tmp_path / dst), 'eval')
        assert checkpoint.layout == 'convnext_backbone layout' and meta['classes'] == classes
        assert_all_close(seg_outputs(ours), seg_outputs(source))


# ------------------------------------------------------------------------------- misfits
@pytest.fixture(scope='module')
def demo_detector_file(tmp_path_factory):
    path = tmp_path_factory.mktemp('det') / 'demo.pth'
    torch.save({'meta': {'dataset_meta': {'classes': SHAPES}},
                'state_dict': build(COCO_DEMO).state_dict()}, path)
    return str(path)


def _refused(model, path, purpose, *messages):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_model_checkpoint(model, path, purpose)
    text = str(info.value)
    for message in messages:
        assert message in text, text
    assert 'Nothing was loaded' in text
    for key, value in model.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[key]), key
    return text


def test_another_backbone_width_is_refused(tmp_path):
    femto = build(COCO_DEMO, backbone=dict(arch='femto'),
                  neck=dict(in_channels=[48, 96, 192, 384]))
    path = save(tmp_path, femto.state_dict())
    for purpose in ('eval', 'finetune'):
        _refused(build(COCO_DEMO), path, purpose,
                 "the checkpoint's backbone is ConvNeXt femto (widths 48..384), the config's "
                 'is ConvNeXt atto (widths 40..320)')


def test_another_number_of_classes_is_refused_for_eval_and_reinitialised_for_finetuning(
        tmp_path):
    heads = dict(roi_head=dict(bbox_head=dict(num_classes=80), mask_head=dict(num_classes=80)))
    coco = build(COCO_DEMO, **heads)
    path = save(tmp_path, coco.state_dict())
    model = build(COCO_DEMO)
    _refused(model, path, 'eval',
             'the checkpoint predicts 80 classes (roi_head.bbox_head.fc_cls, '
             'roi_head.bbox_head.fc_reg, roi_head.mask_head.conv_logits), the config 3',
             'tools/train.py CONFIG --load-from CHECKPOINT')
    head_before = model.roi_head.bbox_head.fc_cls.weight.clone()
    report, _, _ = load_model_checkpoint(model, path, 'finetune')
    assert report.reinitialized == [f'roi_head.{k}' for k in (
        'bbox_head.fc_cls.weight', 'bbox_head.fc_cls.bias', 'bbox_head.fc_reg.weight',
        'bbox_head.fc_reg.bias', 'mask_head.conv_logits.weight', 'mask_head.conv_logits.bias')]
    assert 're-initialised (other number of classes): roi_head.bbox_head.fc_cls, ' \
           'roi_head.bbox_head.fc_reg, roi_head.mask_head.conv_logits' in str(report)
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, head_before)
    loaded = coco.state_dict()
    for key, value in model.state_dict().items():
        if key not in report.reinitialized:
            assert torch.equal(value, loaded[key]), key


def test_segmentation_classes_of_decode_and_aux_heads(tmp_path):
    ade = build(ADE_DEMO, decode_head=dict(num_classes=19), auxiliary_head=dict(num_classes=19))
    path = save(tmp_path, ade.state_dict())
    _refused(build(ADE_DEMO), path, 'eval', 'the checkpoint predicts 19 classes '
             '(decode_head.conv_seg, auxiliary_head.conv_seg), the config 150')
    report, _, _ = load_model_checkpoint(build(ADE_DEMO), path, 'finetune')
    assert [k.rpartition('.')[0] for k in report.reinitialized][::2] == [
        'decode_head.conv_seg', 'auxiliary_head.conv_seg']


def test_missing_neck_is_refused(tmp_path, demo_detector_file):
    state_dict = torch.load(demo_detector_file)['state_dict']
    path = save(tmp_path, {k: v for k, v in state_dict.items() if not k.startswith('neck.')})
    for purpose in ('eval', 'finetune'):
        _refused(build(COCO_DEMO), path, purpose, 'the checkpoint has no neck')


def test_segmentor_checkpoint_for_a_detector_config_is_refused(tmp_path):
    path = save(tmp_path, build(ADE_DEMO).state_dict())
    _refused(build(COCO_DEMO), path, 'eval',
             'this is a segmentor checkpoint (auxiliary_head, backbone, decode_head), the config '
             'is a detector (backbone, neck, roi_head, rpn_head)',
             "set model.backbone.init_cfg=dict(type='Pretrained'")


def test_other_head_shapes_are_refused_even_for_finetuning(tmp_path):
    wide = build(COCO_DEMO, roi_head=dict(bbox_head=dict(fc_out_channels=128)))
    path = save(tmp_path, wide.state_dict())
    _refused(build(COCO_DEMO), path, 'finetune', 'shapes differ: ',
             'roi_head.bbox_head.shared_fcs.0.weight: checkpoint (128, 3136), config (256, 3136)')


def test_other_out_indices_are_named(tmp_path, demo_detector_file):
    state_dict = torch.load(demo_detector_file)['state_dict']
    path = save(tmp_path, {k: v for k, v in state_dict.items()
                           if not k.startswith('backbone.norm0.')})
    _refused(build(COCO_DEMO), path, 'eval', "the checkpoint's backbone has output norms for "
             "stages [1, 2, 3], the config's returns stages [0, 1, 2, 3] (out_indices)")


# ------------------------------------------------------------------------------ bad files
class Payload:
    def __reduce__(self):
        return (print, ('this ran while unpickling',))


def test_pickle_of_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {}, 'x': Payload()}, f)
    with pytest.raises(CheckpointError, match='Refusing to load .*evil.pth: it holds pickled'):
        read_model_checkpoint(str(path))


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_truncated_file(tmp_path, demo_detector_file, suffix):
    path = str(tmp_path / f'cut{suffix}')
    state_dict = torch.load(demo_detector_file)['state_dict']
    save_file(state_dict, path) if suffix == '.safetensors' else torch.save(state_dict, path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='Cannot read .*cut'):
        read_model_checkpoint(path)


def test_non_convnext_detector_is_refused(tmp_path):
    import mmdet
    cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__),
                                   '.mim/configs/_base_/models/mask-rcnn_r50_fpn.py'))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        resnet = MODELS.build(cfg.model)
    path = save(tmp_path, resnet.state_dict())
    with pytest.raises(CheckpointError, match=r"backbone is not a ConvNeXt of a known layout .*"
                       r'first keys: backbone.conv1.weight, backbone.bn1.weight'):
        read_model_checkpoint(path)


def test_imagenet_checkpoint_is_pointed_to_init_cfg(tmp_path):
    from convnext_backbone import ConvNeXt
    path = tmp_path / 'in1k.pth'
    torch.save({'model': ConvNeXt('atto').state_dict()}, path)
    with pytest.raises(CheckpointError, match=r'ImageNet \(backbone-only\) ConvNeXt checkpoint, '
                       r".*model.backbone.init_cfg=dict\(type='Pretrained'"):
        read_model_checkpoint(str(path))


def test_hf_model_of_another_backbone_is_refused(tmp_path):
    import json
    (tmp_path / 'hf').mkdir()
    (tmp_path / 'hf' / 'config.json').write_text(json.dumps(
        dict(model_type='upernet', backbone_config=dict(model_type='swin'))))
    save_file({'backbone.embeddings.patch_embeddings.projection.weight': torch.zeros(1)},
              str(tmp_path / 'hf' / 'model.safetensors'))
    with pytest.raises(CheckpointError, match='Hugging Face upernet model with a swin backbone'):
        read_model_checkpoint(str(tmp_path / 'hf'))


def test_backbone_init_cfg_takes_the_backbone_of_any_whole_model(tmp_path):
    """What the kind-mismatch refusal suggests: a detector starting from a published
    segmentor's backbone (HF folder, zoo file), through the backbone's init_cfg."""
    from convnext_backbone import ConvNeXt
    peer = hf_upernet()
    peer.save_pretrained(tmp_path / 'hf')
    zoo = build(ADE_DEMO, new_backbone=MMPRETRAIN_BACKBONE)
    zoo_path = save(tmp_path, zoo.state_dict())
    for source, expected in ((str(tmp_path / 'hf'), None), (zoo_path, zoo)):
        backbone = ConvNeXt('atto', init_cfg=dict(type='Pretrained', checkpoint=source))
        backbone.init_weights()
        backbone.eval()
        with torch.no_grad():
            ours = backbone(x_input())
            if expected is None:
                theirs = peer.backbone(x_input()).feature_maps
            else:
                theirs = expected.backbone(x_input())
        assert_all_close(ours, theirs)


def test_convert_hf_folder_without_config_checks_the_backbone(tmp_path):
    import subprocess
    import sys
    peer = hf_upernet()
    peer.save_pretrained(tmp_path / 'hf')
    dst = str(tmp_path / 'converted.pth')
    run = subprocess.run([sys.executable, 'tools/convert_weights.py', str(tmp_path / 'hf'), dst],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert 'Hugging Face UperNetForSemanticSegmentation; 214 tensors in auxiliary_head, ' \
           'backbone, decode_head; backbone checked against ConvNeXt atto (widths 40..320); ' \
           'classes: none in the file' in run.stdout
    state_dict = torch.load(dst)['state_dict']
    assert 'decode_head.conv_seg.weight' in state_dict and 'backbone.norm3.bias' in state_dict
    ours = build(ADE_DEMO)
    load_model_checkpoint(ours, dst, 'eval')
    with torch.no_grad():
        assert_all_close(seg_outputs(ours)[0], peer(x_input()).logits)


def _bare_runner(model, purpose):
    """A CheckpointCheckingRunner with only what load_checkpoint reads (building a whole Runner
    needs datasets)."""
    from convnext_backbone.engine import CheckpointCheckingRunner
    runner = object.__new__(CheckpointCheckingRunner)
    runner.model, runner._purpose, runner._hooks = model, purpose, []
    runner._train_dataloader = runner._val_dataloader = runner._test_dataloader = None
    return runner


def test_runner_load_checkpoint_honours_strict_and_refuses_revise_keys(tmp_path):
    """mmengine's load_checkpoint(strict, revise_keys): strict fine-tuning needs an exact fit
    (no re-initialised class layers); revise_keys is refused in words, nothing loaded."""
    heads = dict(roi_head=dict(bbox_head=dict(num_classes=80), mask_head=dict(num_classes=80)))
    path = save(tmp_path, build(COCO_DEMO, **heads).state_dict())
    model = build(COCO_DEMO)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = _bare_runner(model, 'finetune')
    with pytest.raises(CheckpointError, match='revise_keys=.*is not supported.*convert_weights'):
        runner.load_checkpoint(path, revise_keys=[(r'^module\.', '')])
    with pytest.raises(CheckpointError, match='the checkpoint predicts 80 classes'):
        runner.load_checkpoint(path, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing loaded
    runner.load_checkpoint(path)  # not strict: the class layers re-initialised
    assert not torch.equal(model.backbone.stages[0][0].pwconv1.weight,
                           before['backbone.stages.0.0.pwconv1.weight'])


def test_ema_hook_gets_the_weights_the_model_loads(tmp_path):
    """An EMAHook (RTMDet's configs) is shown the converted state dict, as mmengine shows it
    what it loads: evaluating a zoo file, its averaged copy gets the file's weights (not its
    mmpretrain keys, which its lenient load would skip); resuming, the model gets the saved
    source weights and the copy the saved averages, as mmengine's swap makes them."""
    from mmengine.hooks import EMAHook

    def runner_with_ema(purpose):
        model = build(RTMDET_DEMO)
        runner = _bare_runner(model, purpose)
        runner._resume = purpose == 'resume'
        hook = EMAHook(ema_type='ExpMomentumEMA', momentum=0.0002, update_buffers=True)
        runner._hooks = [hook]
        with DefaultScope.overwrite_default_scope('mmdet'):  # mmdet's ExpMomentumEMA
            hook.before_run(runner)
        return runner, model, hook.ema_model.module

    zoo = build(RTMDET_DEMO, new_backbone=MMPRETRAIN_STAGES_1_3)
    runner, model, averaged = runner_with_ema('eval')
    runner.load_checkpoint(save(tmp_path, zoo.state_dict(), 'zoo.pth'))
    theirs = averaged.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(theirs[key], value), key
    assert torch.equal(model.bbox_head.rtm_cls[0].weight, zoo.bbox_head.rtm_cls[0].weight)

    # A training checkpoint as EMAHook saves it: the averages in state_dict, the source
    # weights in ema_state_dict ('module.' keys).
    source, averages = build(RTMDET_DEMO).state_dict(), build(RTMDET_DEMO).state_dict()
    path = str(tmp_path / 'epoch_1.pth')
    torch.save({'meta': {'epoch': 1, 'iter': 10}, 'state_dict': averages,
                'ema_state_dict': {'steps': torch.tensor(10),
                                   **{f'module.{k}': v for k, v in source.items()}}}, path)
    runner, model, averaged = runner_with_ema('resume')
    runner.load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]) and torch.equal(averaged.state_dict()[key],
                                                               averages[key]), key

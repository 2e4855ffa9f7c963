"""ONNX export of DINO (deploy/detr.py) with its post-processing in the graph: the file's
detections, run by onnxruntime, match mmdet's one to one (labels, box IoU, scores) at any
size, with and without padding masks; the pieces rewritten to trace give mmdet's numbers; the
other DETR-style detectors are refused by name."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.models.detectors.deformable_detr import DeformableDETR
from mmdet.models.layers.transformer.deformable_detr_layers import \
    DeformableDetrTransformerEncoder

from convnext_backbone.deploy.detr import (DetrForExport, encoder_output_proposals,
                                           encoder_reference_points, padding_masks)
from convnext_backbone.deploy.export import DETR_STYLE, export_onnx
from convnext_backbone.deploy.runtime import DeployError, OnnxModel

from .helpers import ROOT, build, save
from .test_deploy_detection import detector_config, images, mmdet_prediction  # noqa: F401
from .test_deploy_one_stage import assert_boxes_match
from .test_deploy_segmentation import spatial_

DINO_DEMO = osp.join(ROOT, 'configs/demo/dino_convnext_shapes_demo.py')


def level_sizes(height, width, strides=(8, 16, 32, 64)):
    """The (h, w) of DINO's levels for a padded input: ceil at each stride-2 step."""
    return [((height + s - 1) // s, (width + s - 1) // s) for s in strides]


def mmdets_masks(height, width, padded_height, padded_width, sizes):
    """mmdet's ``pre_transformer`` masks for one image (its code, batch of one)."""
    masks = torch.ones((1, padded_height, padded_width))
    masks[0, :height, :width] = 0
    return [F.interpolate(masks[None], size=size).to(torch.bool).squeeze(0) for size in sizes]


def test_padding_masks_are_mmdets():
    """The masks written with the nearest resize's indices equal mmdet's interpolated ones,
    for images at, just under and far under a multiple of 32, and padded to other sizes."""
    for height, width, padded_height, padded_width in [
            (128, 196, 128, 224), (97, 131, 128, 160), (800, 1199, 800, 1216),
            (33, 64, 64, 64), (100, 100, 100, 100), (61, 90, 67, 93)]:
        sizes = level_sizes(padded_height, padded_width)
        features = [torch.zeros(1, 1, *size) for size in sizes]
        ours = padding_masks(features, torch.tensor(height), torch.tensor(width),
                             padded_height, padded_width)
        for a, b in zip(ours, mmdets_masks(height, width, padded_height, padded_width, sizes)):
            assert a.shape == b.shape and torch.equal(a, b), (height, width, a.shape)


class EncoderPieces(torch.nn.Module):
    """The encoder's reference points and proposals of four levels of a padded input, computed
    from its features' sizes as DINO computes them: ours (``forward``, to trace) or mmdet's."""

    def __init__(self, with_masks):
        super().__init__()
        self.with_masks = with_masks
        self.memory_trans_fc = torch.nn.Linear(8, 8)
        self.memory_trans_norm = torch.nn.LayerNorm(8)

    def _inputs(self, image, padded):
        """(spatial_shapes, valid_ratios, memory, memory_mask) of the padded input."""
        features = [torch.zeros(1, 1, (padded.shape[-2] + s - 1) // s,
                                (padded.shape[-1] + s - 1) // s) for s in (8, 16, 32, 64)]
        shapes = torch.cat([torch._shape_as_tensor(f)[2:] for f in features]).view(-1, 2)
        memory = torch.sin(torch.arange(shapes.prod(1).sum() * 8).float() * 0.37).view(1, -1, 8)
        if not self.with_masks:
            return shapes, torch.ones(1, 4, 2), memory, None
        masks = padding_masks(features, image.shape[-2], image.shape[-1], padded.shape[-2],
                              padded.shape[-1])
        ratios = torch.stack([DeformableDETR.get_valid_ratio(m) for m in masks], 1)
        return shapes, ratios, memory, torch.cat([m.flatten(1) for m in masks], 1)

    def forward(self, image, padded):
        shapes, ratios, memory, mask = self._inputs(image, padded)
        return (encoder_reference_points(shapes, ratios, 'cpu'),
                *encoder_output_proposals(self, memory, mask, shapes))

    def mmdets(self, image, padded):
        shapes, ratios, memory, mask = self._inputs(image, padded)
        return (DeformableDetrTransformerEncoder.get_encoder_reference_points(
            shapes, ratios, 'cpu'), *DeformableDETR.gen_encoder_output_proposals(
                self, memory, mask, shapes))


def test_encoder_pieces_are_mmdets_and_trace_at_any_size(tmp_path):
    """``encoder_reference_points`` and ``encoder_output_proposals`` equal mmdet's functions
    (exactly, eager, with and without padding masks) and, exported once, give mmdet's numbers
    at other sizes, also where a level is one feature high (there the export of mmdet's
    ``linspace`` divides 0 by 0)."""
    import onnxruntime as ort
    for with_masks in (False, True):
        module = EncoderPieces(with_masks).eval()
        traced = (torch.zeros(1, 3, 100, 150), torch.zeros(1, 3, 128, 160))
        with torch.no_grad():
            for a, b in zip(module(*traced), module.mmdets(*traced)):
                assert torch.equal(a, b)
        path = str(tmp_path / f'pieces_{with_masks}.onnx')
        torch.onnx.export(module, traced, path, dynamo=False, opset_version=17,
                          input_names=['image', 'padded'],
                          dynamic_axes={'image': {2: 'h', 3: 'w'},
                                        'padded': {2: 'ph', 3: 'pw'}})
        session = ort.InferenceSession(path)
        for image, padded in [((64, 90), (64, 96)), ((40, 200), (64, 224))]:
            inputs = (torch.zeros(1, 3, *image), torch.zeros(1, 3, *padded))
            with torch.no_grad():
                theirs = module.mmdets(*inputs)
            feed = dict(image=inputs[0].numpy(), padded=inputs[1].numpy())
            taken = {i.name for i in session.get_inputs()}  # (no masks: the image unused)
            ours = session.run(None, {k: v for k, v in feed.items() if k in taken})
            for a, b in zip(ours, theirs, strict=True):
                assert a.shape == b.shape
                np.testing.assert_allclose(a, b.numpy(), rtol=1e-6, atol=1e-6)


def dino_separated_(model):
    """Random weights whose detections vary over the image and whose scores spread out (no
    near ties where the top-k cuts them): biases zeroed (``spatial_``), every class branch's
    logits x 3 (on the test's images: scores 0.58-0.93, at least 7e-5 apart)."""
    spatial_(model)
    with torch.no_grad():
        for layer in model.bbox_head.cls_branches:
            layer.weight.mul_(3)
    return model


@pytest.mark.parametrize('divisor', [1, 32])
def test_dino_demo_dynamic_file_matches_mmdet(images, tmp_path, divisor):  # noqa: F811
    """The DINO demo (random weights), one --dynamic file, images resized to 128x128 and
    128x196: every detection of mmdet's matches one of the file's. The config pads to 1 (no
    padding, no masks); with pad_size_divisor=32, 128x196 is padded to 128x224 and the masks
    decide the detections (without them, 11 of the 30 labels differ, boxes by up to 210
    px). The encoder's 30 selected tokens (the decoder's queries, in their order) have logits
    at least 6.6e-5 apart here, 36 times their float difference (onnxruntime - PyTorch)."""
    extra = dict(data_preprocessor=dict(pad_size_divisor=divisor))
    model = dino_separated_(build(DINO_DEMO, **extra))
    cfg = detector_config(DINO_DEMO, **extra)
    out = str(tmp_path / 'dino.onnx')
    meta = export_onnx(cfg, save(tmp_path, model.state_dict()), out, dynamic=True)
    assert meta['outputs'] == ['boxes', 'scores', 'labels'] and meta['max_per_img'] == 30
    assert meta['pad_size_divisor'] == divisor
    import onnx
    nodes = onnx.load(out).graph.node
    # 2 encoder and 2 decoder layers, 4 levels each; no NMS
    assert sum(n.op_type == 'GridSample' for n in nodes) == 16
    assert 'NonMaxSuppression' not in {n.op_type for n in nodes}
    onnx_model = OnnxModel(out)
    assert onnx_model.input_shape is None
    for path in (images['paths'][0], images['paths'][-1]):
        theirs = mmdet_prediction(model, cfg, path)
        ours = onnx_model(path)
        corners, scores = assert_boxes_match(ours, theirs)
        assert len(ours.boxes) == 30  # max_per_img of the 30 queries x 3 classes
        print(f'divisor {divisor}, {osp.basename(path)}: 30 matched; box corners within '
              f'{corners:.2g} px, scores within {scores:.2g}')


def test_the_graph_is_the_test_path():
    """Training adds denoising queries: the wrapper refuses to run in training mode."""
    wrapper = DetrForExport(build(DINO_DEMO)).train()
    with pytest.raises(DeployError, match=r'traces the test path: call .eval\(\)'):
        wrapper(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), torch.ones(2))


def test_other_detr_style_detectors_are_refused_by_name(tmp_path):
    """Before anything is read (the checkpoint need not exist) or written."""
    assert set(DETR_STYLE) == {'DeformableDETR', 'ConditionalDETR', 'DABDETR', 'DETR'}
    cfg = detector_config(DINO_DEMO)
    for kind in DETR_STYLE:
        cfg.model.type = kind
        with pytest.raises(DeployError, match=rf"{kind} is not exported: of the DETR-style "
                           rf"detectors the exporter reproduces DINO's test path only .*"
                           r'deploy.md, "DINO"'):
            export_onnx(cfg, str(tmp_path / 'model.pth'), str(tmp_path / 'model.onnx'))
        assert not (tmp_path / 'model.onnx').exists()

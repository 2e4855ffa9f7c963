"""A DETR-style detector (mmdet's DINO) as one traceable module for ONNX export, post-processing
included: boxes, scores and labels on the original image.

In the graph, as mmdet's test step computes them (``DINO.predict`` in eval mode: no denoising
queries, which only training adds):
- the data preprocessor's BGR -> RGB, mean / std and padding to its size divisor (after
  normalisation, as mmengine's ``stack_batch``);
- backbone, neck (``ChannelMapper``), the sine positional encodings and, where the graph pads,
  the padding masks of every level (see ``padding_masks``), the level embeddings;
- the deformable encoder, the two-stage query selection (the encoder's proposals, the top
  ``num_queries`` of their best class logits), the decoder refining its reference boxes layer
  by layer, the head's class logits and boxes of the last layer;
- ``DINOHead.predict_by_feat``: sigmoid scores, the top ``max_per_img`` (query, class) pairs
  (no NMS), boxes cx cy w h -> x1 y1 x2 y2, scaled to the image, clipped to it and divided by
  the resize's scale factors.

mmdet's and mmcv's code is traced as it is (``extract_feat``, ``pre_transformer`` where the
graph does not pad, ``forward_encoder``, ``DINO.pre_decoder``, ``forward_decoder``, the head's
``forward``): mmcv's ``MultiScaleDeformableAttention`` takes its pure-PyTorch path on CPU
tensors (``F.grid_sample``, exported as ONNX ``GridSample``) and every size is read from the
traced features, so one file takes any size. Rewritten, each for the reason its docstring
gives: the encoder's reference points and proposals (``encoder_reference_points``,
``encoder_output_proposals``), ``pre_transformer`` where the graph pads, and
``predict_by_feat``.

Inputs: ``image`` (1, H, W, 3) uint8 BGR after the test resize, ``scale_factor`` (2,) float32
(w, h) of that resize. Outputs: ``boxes`` (N, 4) float32 x1 y1 x2 y2, ``scores`` (N,) and
``labels`` (N,) int64, on the original image, best first (N = ``max_per_img``).
"""
from __future__ import annotations

import copy
import types
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from torch import nn

from ..errors import DeployError
from .inputs import ImageInput
from .one_stage import pad_bottom_right, up_to_multiple

# What the exporter handles (mmdet's class names).
DETECTORS = ('DINO', )
HEADS = ('DINOHead', )
POSITIONAL_ENCODINGS = ('SinePositionalEncoding', )


def check_detr(detector: nn.Module) -> None:
    """Refuse, naming the part and what is handled, a detector this module does not
    reproduce."""
    kind = type(detector).__name__
    if kind not in DETECTORS:
        raise DeployError(f'The DETR-style exporter handles {", ".join(DETECTORS)}; this config '
                          f'builds a {kind}')
    for part, value, handled in (
            ('bbox_head', detector.bbox_head, HEADS),
            ('positional_encoding', detector.positional_encoding, POSITIONAL_ENCODINGS)):
        if type(value).__name__ not in handled:
            raise DeployError(f"The exporter handles {part} of the types {', '.join(handled)}; "
                              f"this config's is a {type(value).__name__}")
    if not detector.bbox_head.loss_cls.use_sigmoid:
        raise DeployError('The exporter handles DINO heads with sigmoid class scores '
                          '(loss_cls use_sigmoid=True, as the DINO configs)')


# --------------------------------------------------------- the pieces rewritten to trace
def encoder_reference_points(spatial_shapes: torch.Tensor, valid_ratios: torch.Tensor,
                             device: 'torch.device | str') -> torch.Tensor:
    """mmdet's ``DeformableDetrTransformerEncoder.get_encoder_reference_points``, with
    ``torch.arange(n) + 0.5`` for its ``torch.linspace(0.5, n - 0.5, n)`` (the same numbers:
    the step is exactly 1).

    NOTE: exported, ``linspace`` becomes ``start + i * (end - start) / (n - 1)``: 0 / 0 (NaN
    reference points) for a level one feature high or wide, as DINO's stride-64 level is for
    an image side of 64 pixels or less."""
    reference_points_list = []
    for lvl, (H, W) in enumerate(spatial_shapes):
        ref_y, ref_x = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=device) + 0.5,
            torch.arange(W, dtype=torch.float32, device=device) + 0.5, indexing='ij')
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * H)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * W)
        reference_points_list.append(torch.stack((ref_x, ref_y), -1))
    reference_points = torch.cat(reference_points_list, 1)
    # [bs, sum(hw), num_level, 2]
    return reference_points[:, :, None] * valid_ratios[:, None]


def encoder_output_proposals(detector: nn.Module, memory: torch.Tensor,
                             memory_mask: Optional[torch.Tensor],
                             spatial_shapes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmdet's ``DeformableDETR.gen_encoder_output_proposals`` (bound to ``detector``: its
    ``memory_trans_fc`` and ``memory_trans_norm``), with two changes that give the same
    numbers: ``torch.arange(n)`` for ``torch.linspace(0, n - 1, n)`` (the NaN of
    ``encoder_reference_points`` otherwise), and the padding mask split into its levels by
    their sizes (``split``, as mmcv's deformable attention splits its values) where mmdet
    slices it at a running Python offset, which a trace would keep as the traced size's."""
    bs = memory.size(0)
    proposals = []
    level_masks = (memory_mask.split([H * W for H, W in spatial_shapes], 1)
                   if memory_mask is not None else [None] * len(spatial_shapes))
    for lvl, (HW, level_mask) in enumerate(zip(spatial_shapes, level_masks)):
        H, W = HW
        if level_mask is not None:
            mask_flatten_ = level_mask.view(bs, H, W, 1)
            valid_H = torch.sum(~mask_flatten_[:, :, 0, 0], 1).unsqueeze(-1)
            valid_W = torch.sum(~mask_flatten_[:, 0, :, 0], 1).unsqueeze(-1)
            scale = torch.cat([valid_W, valid_H], 1).view(bs, 1, 1, 2)
        else:
            scale = HW.unsqueeze(0).flip(dims=[0, 1]).view(1, 1, 1, 2)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(H, dtype=torch.float32, device=memory.device),
            torch.arange(W, dtype=torch.float32, device=memory.device), indexing='ij')
        grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)
        grid = (grid.unsqueeze(0).expand(bs, -1, -1, -1) + 0.5) / scale
        wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
        proposals.append(torch.cat((grid, wh), -1).view(bs, -1, 4))
    # from here as mmdet's
    output_proposals = torch.cat(proposals, 1)
    output_proposals_valid = ((output_proposals > 0.01) & (output_proposals < 0.99)).sum(
        -1, keepdim=True) == output_proposals.shape[-1]
    output_proposals = torch.log(output_proposals / (1 - output_proposals))
    if memory_mask is not None:
        output_proposals = output_proposals.masked_fill(memory_mask.unsqueeze(-1),
                                                        float('inf'))
    output_proposals = output_proposals.masked_fill(~output_proposals_valid, float('inf'))
    output_memory = memory
    if memory_mask is not None:
        output_memory = output_memory.masked_fill(memory_mask.unsqueeze(-1), float(0))
    output_memory = output_memory.masked_fill(~output_proposals_valid, float(0))
    output_memory = detector.memory_trans_fc(output_memory)
    output_memory = detector.memory_trans_norm(output_memory)
    return output_memory, output_proposals


def nearest_sources(size_out: 'int | torch.Tensor',
                    size_in: 'int | torch.Tensor') -> torch.Tensor:
    """(size_out,) the input index ``F.interpolate(mode='nearest')`` reads for each output
    index, as PyTorch's kernel computes it: ``floor(i * (in / out))`` in float32, at most
    ``in - 1``."""
    scale = (torch.as_tensor(size_in).to(torch.float32) /
             torch.as_tensor(size_out).to(torch.float32))
    index = torch.floor(torch.arange(size_out).to(torch.float32) * scale).long()
    return torch.minimum(index, torch.as_tensor(size_in) - 1)


def padding_masks(features: List[torch.Tensor], height: 'int | torch.Tensor',
                  width: 'int | torch.Tensor', padded_height: 'int | torch.Tensor',
                  padded_width: 'int | torch.Tensor') -> List[torch.Tensor]:
    """Per level, (1, h, w) bool, True on the padding: mmdet's ``pre_transformer`` masks of
    one (height, width) image padded to (padded_height, padded_width), ones outside the image
    resized to each level by ``F.interpolate`` (nearest). Written with the traced sizes
    (mmdet builds them from the metas' Python numbers), each level's mask separably from the
    rows and the columns the nearest resize reads."""
    masks = []
    for feature in features:
        rows = nearest_sources(feature.shape[-2], padded_height) >= height
        columns = nearest_sources(feature.shape[-1], padded_width) >= width
        masks.append((rows[:, None] | columns[None, :])[None])
    return masks


# ------------------------------------------------------------------------------ the module
class DetrForExport(nn.Module):
    """The whole test-time computation of a DINO on one image.

    Args:
        detector (nn.Module): The built, loaded detector (eval mode); copied, not changed.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_detr(detector)
        detector = copy.deepcopy(detector).eval()
        # The two mmdet functions that do not trace, replaced on this copy only (module
        # functions above): mmdet's encoder and pre_decoder call them.
        detector.encoder.get_encoder_reference_points = encoder_reference_points
        detector.gen_encoder_output_proposals = types.MethodType(encoder_output_proposals,
                                                                 detector)
        self.detector = detector
        preprocessor = detector.data_preprocessor
        self.image_input = ImageInput(preprocessor)
        self.pad_size_divisor = int(preprocessor.pad_size_divisor)
        self.pad_value = float(preprocessor.pad_value)

    def _preprocess(self, image: torch.Tensor) -> torch.Tensor:
        x = self.image_input(image)
        if self.pad_size_divisor > 1:  # after normalisation, as mmengine's stack_batch
            x = pad_bottom_right(x, up_to_multiple(x.shape[-2], self.pad_size_divisor),
                                 up_to_multiple(x.shape[-1], self.pad_size_divisor),
                                 self.pad_value)
        return x

    def _pre_transformer(self, features: Tuple[torch.Tensor], height: torch.Tensor,
                         width: torch.Tensor, padded: torch.Tensor) -> Tuple[Dict, Dict]:
        """mmdet's ``pre_transformer`` for one image of (height, width) in ``padded``.

        Where the graph does not pad (size divisor 1), mmdet's own: the image fills its
        batch, so mmdet uses no masks. Where it pads, written out with the masks of
        ``padding_masks``: mmdet builds them from the metas' Python sizes, and takes its
        no-mask path whenever it is exported (``torch.onnx.is_in_onnx_export()``), wrong for
        a padded image. (Where the image needs no padding the masks are all False, which gives
        the no-mask path's numbers.)"""
        detector = self.detector
        if self.pad_size_divisor <= 1:
            shape = tuple(padded.shape[-2:])
            sample = DetDataSample(metainfo=dict(batch_input_shape=shape, img_shape=shape))
            return detector.pre_transformer(features, [sample])
        masks = padding_masks(list(features), height, width, padded.shape[-2],
                              padded.shape[-1])
        # from here as mmdet's pre_transformer with masks
        feat_flatten, lvl_pos_embed_flatten, mask_flatten, spatial_shapes = [], [], [], []
        for lvl, (feat, mask) in enumerate(zip(features, masks)):
            batch_size, c = feat.shape[0], feat.shape[1]
            pos_embed = detector.positional_encoding(mask)
            spatial_shapes.append(torch._shape_as_tensor(feat)[2:].to(feat.device))
            feat_flatten.append(feat.view(batch_size, c, -1).permute(0, 2, 1))
            pos_embed = pos_embed.view(batch_size, c, -1).permute(0, 2, 1)
            lvl_pos_embed_flatten.append(pos_embed + detector.level_embed[lvl].view(1, 1, -1))
            mask_flatten.append(mask.flatten(1))
        feat_flatten = torch.cat(feat_flatten, 1)
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1)
        spatial_shapes = torch.cat(spatial_shapes).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([detector.get_valid_ratio(m) for m in masks], 1)
        encoder_inputs = dict(feat=feat_flatten, feat_mask=mask_flatten,
                              feat_pos=lvl_pos_embed_flatten, spatial_shapes=spatial_shapes,
                              level_start_index=level_start_index, valid_ratios=valid_ratios)
        decoder_inputs = dict(memory_mask=mask_flatten, spatial_shapes=spatial_shapes,
                              level_start_index=level_start_index, valid_ratios=valid_ratios)
        return encoder_inputs, decoder_inputs

    def _detections(self, cls_scores: torch.Tensor, bbox_preds: torch.Tensor,
                    height: torch.Tensor, width: torch.Tensor,
                    scale_factor: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``DINOHead.predict_by_feat`` (``DETRHead._predict_by_feat_single``, sigmoid scores)
        for the last decoder layer, written with the traced image size and scale factors
        (mmdet reads them from the metas as Python numbers: constants in a trace)."""
        head = self.detector.bbox_head
        cls_score, bbox_pred = cls_scores[-1][0], bbox_preds[-1][0]
        max_per_img = head.test_cfg.get('max_per_img', len(cls_score))
        scores, indexes = cls_score.sigmoid().view(-1).topk(max_per_img)
        query = torch.div(indexes, head.num_classes, rounding_mode='floor')
        labels = indexes - query * head.num_classes
        boxes = bbox_cxcywh_to_xyxy(bbox_pred[query])
        limits = torch.stack([width, height, width, height]).to(boxes.dtype).view(1, 4)
        boxes = torch.minimum((boxes * limits).clamp(min=0), limits)
        # rescale: divided by the factors, as mmdet
        boxes = boxes / scale_factor.to(boxes.dtype).repeat(2)[None, :]
        return boxes, scores, labels

    def forward(self, image: torch.Tensor, scale_factor: torch.Tensor):
        if self.detector.training:
            raise DeployError('DetrForExport traces the test path: call .eval() (training '
                              'adds denoising queries)')
        detector = self.detector
        height, width = torch.as_tensor(image.shape[1]), torch.as_tensor(image.shape[2])
        x = self._preprocess(image)
        features = detector.extract_feat(x)
        # DINO.forward_transformer, with the pre_transformer above
        encoder_inputs, decoder_inputs = self._pre_transformer(features, height, width, x)
        encoder_outputs = detector.forward_encoder(**encoder_inputs)
        query_inputs, _ = detector.pre_decoder(**encoder_outputs)  # (eval: no denoising)
        decoder_inputs.update(query_inputs)
        decoder_outputs = detector.forward_decoder(**decoder_inputs)
        cls_scores, bbox_preds = detector.bbox_head(**decoder_outputs)
        return self._detections(cls_scores, bbox_preds, height, width, scale_factor)

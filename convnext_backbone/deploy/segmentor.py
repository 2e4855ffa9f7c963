"""A segmentor (mmseg's ``EncoderDecoder``) as one traceable module for ONNX export: the image
as read (uint8 BGR) in, logits and label map at the input's resolution out.

In the graph, as mmseg's test step does it: the data preprocessor's BGR -> RGB and mean / std
(and its test-time padding, if it has one), backbone, neck, decode head (not the auxiliary
head, which mmseg runs in training only), the resize of the logits to the input's size, the
label map. Resizing the image before, sliding windows and the resize to the original image
after are the runtime's (``deploy.runtime``), as in mmseg they are the pipeline's and
``slide_inference``'s.

Mask2Former's head is traced as mmseg's ``predict`` runs it, mmdet's and mmcv's code unchanged
(its last step, class scores times mask sigmoids, is written out: see
``SegmentorForExport._mask_classification_logits``). On CPU tensors mmcv's
``MultiScaleDeformableAttention`` takes its pure-PyTorch path
(``multi_scale_deformable_attn_pytorch``: ``F.grid_sample``, exported as ONNX ``GridSample``),
and every size the pixel decoder and the masked-attention decoder use (the levels' shapes,
their start indices, the split of the encoder's output, the attention masks' size) is read
from the traced features, so the graph follows the input's size.
"""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DeployError
from .inputs import ImageInput

# What the exporter handles: mmseg's segmentors and decode heads it was checked against.
SEGMENTORS = ('EncoderDecoder', )
# (DeepLabV3+'s ASPP pools the image to 1x1, which ExactAdaptiveAvgPool2d makes exact.)
DECODE_HEADS = ('UPerHead', 'FCNHead', 'PSPHead', 'ASPPHead', 'DepthwiseSeparableASPPHead',
                'Mask2FormerHead')
# Heads that classify masks: their ``predict`` gives the logits at the padded input's size.
MASK_CLASSIFICATION_HEADS = ('Mask2FormerHead', )


def _bin_weights(size_in, size_out: int) -> torch.Tensor:
    """(size_out, size_in) averaging weights of adaptive average pooling along one axis: bin i
    covers [floor(i * n / s), ceil((i + 1) * n / s)), as PyTorch's kernel computes it.
    ``size_in`` may be a traced size, so the bins follow the input's size in the graph."""
    index = torch.arange(size_out)
    start = torch.div(index * size_in, size_out, rounding_mode='floor')
    end = torch.div((index + 1) * size_in + size_out - 1, size_out, rounding_mode='floor')
    positions = torch.arange(size_in)
    member = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    return member.float() / (end - start).float()[:, None]


class ExactAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` as two matrix products with the bins' averaging weights.

    NOTE: ONNX has no adaptive pooling; exporters turn it into a fixed AvgPool, which only
    exists where the output size divides the input's and only for the size traced. The bins
    computed from the traced size give PyTorch's result for every size (to float rounding).

    Args:
        output_size (int | Sequence[int]): (h, w) of the output, or one size for both.
    """

    def __init__(self, output_size: 'int | Sequence[int]') -> None:
        super().__init__()
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if any(s is None for s in output_size):
            raise DeployError(f'AdaptiveAvgPool2d({output_size}) keeps an input size (None); '
                              'the exporter handles given output sizes only')
        self.output_size = tuple(int(s) for s in output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _bin_weights(x.shape[-2], self.output_size[0]).to(x.dtype)
        columns = _bin_weights(x.shape[-1], self.output_size[1]).to(x.dtype)
        # (s_h, H) @ (N, C, H, W) @ (W, s_w) -> (N, C, s_h, s_w)
        return torch.matmul(torch.matmul(rows, x), columns.t())


def replace_adaptive_pools(model: nn.Module) -> int:
    """Replace every ``nn.AdaptiveAvgPool2d`` of ``model`` (in place) by
    ``ExactAdaptiveAvgPool2d``; returns how many were replaced."""
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.AdaptiveAvgPool2d:
                setattr(module, child_name, ExactAdaptiveAvgPool2d(child.output_size))
                count += 1
    return count


def check_segmentor(segmentor: nn.Module) -> None:
    """Refuse, naming the module type, a segmentor whose parts the exporter does not handle."""
    kind = type(segmentor).__name__
    if kind not in SEGMENTORS:
        raise DeployError(f'The exporter handles the segmentors {", ".join(SEGMENTORS)}; this '
                          f'config builds a {kind}')
    head = type(segmentor.decode_head).__name__
    if isinstance(segmentor.decode_head, nn.ModuleList) or head not in DECODE_HEADS:
        raise DeployError(f'The exporter handles the decode heads {", ".join(DECODE_HEADS)}; '
                          f'this config has a {head}')


class SegmentorForExport(nn.Module):
    """The whole test-time computation of an ``EncoderDecoder`` on one image (batch 1).

    Input ``image``: (1, H, W, 3) uint8 in the order the pipeline reads (BGR). Outputs
    ``logits`` (1, C, H, W) float32 (mmseg's ``seg_logits`` before the resize to the original
    image) and ``labels`` (1, H, W) int64.

    Args:
        segmentor (nn.Module): The built, loaded segmentor (eval mode); copied, not changed.
    """

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        check_segmentor(segmentor)
        segmentor = copy.deepcopy(segmentor).eval()
        replace_adaptive_pools(segmentor)
        preprocessor = segmentor.data_preprocessor
        self.backbone = segmentor.backbone
        self.neck = segmentor.neck if segmentor.with_neck else None
        self.decode_head = segmentor.decode_head
        self.mask_classification = type(self.decode_head).__name__ in MASK_CLASSIFICATION_HEADS
        self.image_input = ImageInput(preprocessor)
        test_cfg = preprocessor.test_cfg or {}
        self.pad_size = test_cfg.get('size')  # (h, w) to pad to, or None
        self.pad_size_divisor = test_cfg.get('size_divisor')
        self.pad_val = float(preprocessor.pad_val)
        self.align_corners = bool(self.decode_head.align_corners)
        self.binary = self.decode_head.out_channels == 1
        self.threshold = float(getattr(self.decode_head, 'threshold', None) or 0.3)

    def _pad(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Pad at the bottom and right as mmseg's ``stack_batch`` does at test time (after
        normalisation, with ``pad_val``); returns the padded input and the input's (h, w)."""
        height, width = x.shape[-2], x.shape[-1]
        if self.pad_size is not None:
            pad_h = self.pad_size[0] - height
            pad_w = self.pad_size[1] - width
        elif self.pad_size_divisor:
            divisor = self.pad_size_divisor
            pad_h = (height + divisor - 1) // divisor * divisor - height
            pad_w = (width + divisor - 1) // divisor * divisor - width
        else:
            return x, height, width
        return F.pad(x, (0, pad_w, 0, pad_h), value=self.pad_val), height, width

    def _mask_classification_logits(self, features: Sequence[torch.Tensor],
                                    size: Sequence[int]) -> torch.Tensor:
        """mmseg's ``Mask2FormerHead.predict``: the last decoder layer's masks upsampled to the
        padded input's ``size``, the class scores (softmax without "no object") times the
        mask sigmoids, summed over the queries.

        NOTE: the sigmoid is written out as PyTorch's CPU kernel computes it, 1 / (1 + exp(-x))
        (within 3e-7 of ``torch.sigmoid``, relative): onnxruntime's Sigmoid is exact to about
        1e-7 absolute only (0 below -18; 3.6e-7 for PyTorch's 3.1e-7 at -15), and where every
        mask is off those small values decide the label (measured on the T config at 512x512
        with random weights: up to 247 labels differed with Sigmoid, none written out)."""
        cls_scores, mask_preds = self.decode_head(features, [])  # data samples unused
        masks = F.interpolate(mask_preds[-1], size=size, mode='bilinear', align_corners=False)
        scores = F.softmax(cls_scores[-1], dim=-1)[..., :-1]
        return torch.einsum('bqc,bqhw->bchw', scores, torch.reciprocal(1 + torch.exp(-masks)))

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, height, width = self._pad(self.image_input(image))
        features = self.backbone(x)
        if self.neck is not None:
            features = self.neck(features)
        if self.mask_classification:
            logits = self._mask_classification_logits(features, x.shape[-2:])
        else:
            # decode_head.predict_by_feat: to the (padded) input's size
            logits = F.interpolate(self.decode_head(features), size=x.shape[-2:],
                                   mode='bilinear', align_corners=self.align_corners)
        logits = logits[:, :, :height, :width]  # the padding cut off, as postprocess_result
        if self.binary:
            labels = (logits.sigmoid()[:, 0] > self.threshold).long()
        else:
            labels = logits.argmax(1)
        return logits, labels

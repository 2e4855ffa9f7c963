"""CPU inference speed as an explicit transform: ``optimize_for_inference(model)``.

The model (``backbone.ConvNeXt``) has one forward, for training and evaluation alike. This
module returns a model for inference in which every ``ConvNeXtBlock`` is replaced by an
``InferenceBlock`` that computes the same function (equal to rounding, 1e-5) in fewer passes
over memory, as torch's ``optimize_for_inference`` and timm's ``reparameterize_model`` do for
their models:

- the LayerNorm affine is folded into pwconv1 and the layer scale into pwconv2:
  ``pwconv1(g * n + b) = (W1 g) n + (W1 b + b1)``, ``gamma (W2 h + b2) = (gamma W2) h + gamma b2``;
- GELU works in place, and the residual is one add into pwconv2's output (nothing is kept for
  backward, so no layer needs a tensor of its own);
- on CPU (fp32, eager), both linears are oneDNN GEMMs, which apply their bias to each tile as
  they write it (torch's addmm first copies the bias into its fresh output: a pass over memory)
  and ran as fast as MKL's or faster at these skinny shapes (docs/speed.md). CUDA, autocast,
  torch.compile and tracers get torch's own operators.

An optimized model is for inference only: its parameters are frozen, its blocks run without
autograd, and its folded weights are not the checkpoint's, so saving or loading its
``state_dict()`` is refused (save the model before optimizing it). ``tools/test.py`` and
``tools/infer.py`` apply it on CPU; the ONNX exporter never sees it (it exports the one forward).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ConvNeXt, ConvNeXtBlock

__all__ = ['InferenceBlock', 'optimize_for_inference']

# oneDNN's linear (torch.ops.mkldnn._linear_pointwise, which inductor uses on CPU) where torch
# has oneDNN and x86 vector units (its JIT kernels); other CPUs keep torch's addmm.
_ONEDNN_CPU = (torch.backends.mkldnn.is_available()
               and torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'))

REFUSE_STATE = ('an optimize_for_inference() model holds folded weights (LayerNorm affine and '
                'layer scale inside the linears), not the checkpoint\'s: save or load the model '
                'before optimizing it')


class InferenceBlock(nn.Module):
    """A ``ConvNeXtBlock`` for inference: the same function with folded weights, in-place GELU,
    a one-pass residual and, on CPU, oneDNN GEMMs (module docstring).

    Args:
        block (ConvNeXtBlock): The block to replace; its depthwise convolution and GRN are
            shared, its linears copied and folded (the block itself is left unchanged).
    """

    def __init__(self, block: ConvNeXtBlock) -> None:
        super().__init__()
        self.dwconv = block.dwconv
        self.grn = block.grn
        self.eps = block.norm.eps
        self.pwconv1 = _folded(block.pwconv1, scale_in=block.norm.weight, shift_in=block.norm.bias)
        self.pwconv2 = _folded(block.pwconv2, scale_out=block.gamma)
        # The model multiplies its branch by the layer scale: under autocast that promotes a
        # bf16 branch to the scale's fp32, which the folded weights must keep.
        self.scale_dtype = block.gamma.dtype if block.gamma is not None else None
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.permute(0, 2, 3, 1)  # (N, H, W, C); contiguous when x is channels-last
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = F.layer_norm(y, y.shape[-1:], None, None, self.eps)
        onednn = _onednn_fits(y, self.pwconv1.weight)
        # NOTE: GELU (and below, the residual) as a pass of its own: oneDNN's GELU post-op is
        # slower than torch's on AVX2 (at stage-0 shapes it made pwconv1 1.5x the product alone,
        # torch's pass 1.25x), and its residual-sum post-op was no faster than the add.
        y = torch.ops.aten.gelu_(_gemm(self.pwconv1, y, onednn))
        if self.grn is not None:
            y = self.grn(y)
        out = _gemm(self.pwconv2, y, onednn)
        dtype = torch.promote_types(out.dtype, shortcut.dtype)
        if self.scale_dtype is not None:
            dtype = torch.promote_types(dtype, self.scale_dtype)
        out = out.add_(shortcut) if out.dtype == dtype else out.to(dtype).add_(shortcut)
        return out.permute(0, 3, 1, 2)

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        raise RuntimeError(f'Cannot save {prefix.rstrip(".") or "this block"}: {REFUSE_STATE}')

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        raise RuntimeError(f'Cannot load into {prefix.rstrip(".") or "this block"}: '
                           f'{REFUSE_STATE}')

    def train(self, mode: bool = True) -> 'InferenceBlock':
        if mode:
            raise RuntimeError('An optimize_for_inference() model cannot be trained: train the '
                               'model it was made from')
        return super().train(False)


def optimize_for_inference(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (a ``ConvNeXt``, or a detector / segmentor holding one or more) for inference:
    every ``ConvNeXtBlock`` of its ConvNeXt backbones replaced by an ``InferenceBlock``, every
    parameter frozen, in eval mode. Outputs equal the model's to rounding.

    Args:
        model (nn.Module): The model; left unchanged unless ``inplace``.
        inplace (bool): Replace the blocks in ``model`` itself (saves the copy's memory, e.g.
            for a Runner that already holds the model) instead of in a deep copy.
    """
    if not inplace:
        model = copy.deepcopy(model)
    backbones = [m for m in model.modules() if isinstance(m, ConvNeXt)]
    if not backbones:
        raise TypeError(f'optimize_for_inference() transforms ConvNeXt backbones; '
                        f'{type(model).__name__} holds none')
    for backbone in backbones:
        for stage in backbone.stages:
            for index, block in enumerate(stage):
                if isinstance(block, ConvNeXtBlock):
                    stage[index] = InferenceBlock(block)
    return model.requires_grad_(False).eval()


def is_optimized(model: nn.Module) -> bool:
    """Whether ``model`` holds blocks of ``optimize_for_inference()``."""
    return any(isinstance(m, InferenceBlock) for m in model.modules())


@torch.no_grad()
def _folded(linear: nn.Linear, scale_in: torch.Tensor = None, shift_in: torch.Tensor = None,
            scale_out: torch.Tensor = None) -> nn.Linear:
    """A copy of ``linear`` that computes ``scale_out * linear(scale_in * x + shift_in)``
    (absent terms are 1 or 0)."""
    weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
    if shift_in is not None:
        bias += weight @ shift_in
    if scale_in is not None:
        weight *= scale_in
    if scale_out is not None:
        weight *= scale_out[:, None]
        bias *= scale_out
    folded = nn.Linear(linear.in_features, linear.out_features, device=weight.device,
                       dtype=weight.dtype)
    folded.weight.copy_(weight)
    folded.bias.copy_(bias)
    return folded


def _gemm(layer: nn.Linear, x: torch.Tensor, onednn: bool) -> torch.Tensor:
    """``layer(x)``; with ``onednn`` as oneDNN's GEMM, which adds the bias to each tile as it
    writes it."""
    if onednn:
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, 'none', [], '')
    return layer(x)


def _onednn_fits(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the linears run as oneDNN GEMMs: eager fp32 on a CPU that has them, outside
    autocast, and not while torch.compile or a tracer records the model (they need plain
    operators; torch.compile's inductor fuses the same steps itself)."""
    return (_ONEDNN_CPU and torch.backends.mkldnn.enabled and x.device.type == 'cpu'
            and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and not torch.jit.is_scripting())

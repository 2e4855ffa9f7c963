"""What the machine's matrix products allow: the matmul floor of a case and the matmul peak.

The matmul floor is a row of its own in the report, timed interleaved with the peers: our
backbone's pointwise-linear matmuls alone (each block's pwconv1/pwconv2 ``addmm`` at its shapes
for the case's input, and for a train step the two backward products of each), on
preallocated tensors. They carry nearly all of the FLOPs, so "x matmul floor" says what
everything else costs: depthwise convolutions, norms, GELU, allocation and passes over memory.
The matmul peak (square products of the case's dtype) turns achieved GFLOP/s into a fraction of
what the machine does at best.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ['MatmulFloor', 'linear_inputs', 'matmul_peak_gflops']


def matmul_peak_gflops(device: str, *, dtype: torch.dtype = torch.float32,
                       n: Optional[int] = None, repeats: int = 5) -> float:
    """The best of ``repeats`` square matrix products of ``dtype``, in GFLOP/s (after one
    untimed product). On CUDA the matrices are larger, so that the product, not the launch, is
    timed."""
    n = n or (8192 if device == 'cuda' else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.get_device_module(device).synchronize
    times = []
    for _ in range(repeats + 1):
        sync()
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times[1:]) / 1e9


def linear_inputs(model: nn.Module, x: torch.Tensor) -> List[Tuple[int, nn.Linear]]:
    """(rows of its input, module) for every ``nn.Linear`` call of one eval forward at ``x``,
    in call order: the shapes the floor reproduces are the ones the model ran, whatever its
    strides and paddings. The model's train/eval mode is left as it was.

    The forward records autograd (its input requires grad): that is the path that calls the
    ``nn.Linear`` modules; without autograd our blocks run their linears as oneDNN GEMMs with
    post-ops (``ConvNeXtBlock._inference``), the same products at the same shapes."""
    calls: List[Tuple[int, nn.Linear]] = []
    hooks = [module.register_forward_hook(
        lambda module, args, out: calls.append((args[0].shape[:-1].numel(), module)))
        for module in model.modules() if isinstance(module, nn.Linear)]
    training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            model(x.detach().requires_grad_())
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return calls


class MatmulFloor:
    """Our backbone's pointwise-linear matmuls at one input, alone: the floor of its time.

    Every block's pwconv1 and pwconv2 is an ``nn.Linear`` over the (N * H_i * W_i, C) pixels
    of its stage, i.e. ``torch.addmm(bias, x, weight.t())`` with (M, K) x (K, N) shapes; together
    they carry nearly all of the FLOPs. ``step()`` runs those same calls with the modules' own
    weights on tensors allocated once (the output of pwconv1 is the input of pwconv2, as in the
    block), so that it times the products and nothing else. A train step adds each linear's
    two backward products: grad input (M, N) x (N, K) and grad weight (N, M) x (M, K).

    ``shapes`` holds (M, K, N) of each forward product, in call order, ``linears`` the module
    it comes from; ``flops`` the total of the products ``step()`` runs.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *, mode: str,
                 dtype: Optional[torch.dtype]) -> None:
        dtype = dtype or torch.float32
        self.sync = torch.get_device_module(x.device.type).synchronize
        buffers: Dict[Tuple[int, ...], torch.Tensor] = {}

        def buffer(*shape: int) -> torch.Tensor:  # one tensor per shape, as pixels flow on
            if shape not in buffers:
                buffers[shape] = torch.randn(*shape, device=x.device, dtype=dtype)
            return buffers[shape]

        self.calls: List[Callable[[], torch.Tensor]] = []
        self.shapes: List[Tuple[int, int, int]] = []
        self.linears: List[nn.Linear] = []
        self.flops = 0
        for rows, linear in linear_inputs(model, x):
            k, n = linear.in_features, linear.out_features
            weight = linear.weight.detach().to(dtype)
            bias = linear.bias.detach().to(dtype)
            inputs, outputs = buffer(rows, k), buffer(rows, n)
            self.calls.append(
                lambda b=bias, a=inputs, w=weight, o=outputs: torch.addmm(b, a, w.t(), out=o))
            if mode == 'train':
                grad_weight = buffer(n, k)
                self.calls += [
                    lambda g=outputs, w=weight, o=inputs: torch.mm(g, w, out=o),
                    lambda g=outputs, a=inputs, o=grad_weight: torch.mm(g.t(), a, out=o)]
            self.shapes.append((rows, k, n))
            self.linears.append(linear)
            self.flops += 2 * rows * k * n * (3 if mode == 'train' else 1)

    def step(self) -> None:
        for call in self.calls:
            call()
        self.sync()

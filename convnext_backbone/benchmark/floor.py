"""What the machine's matrix products allow: the matmul floor of a case and the matmul peak.

The matmul floor is a row of its own in the report, timed interleaved with the peers: our
backbone's pointwise-linear matmuls alone (each block's pwconv1/pwconv2 product at its shapes
for the case's input, and for a train step the two backward products of each), on
preallocated tensors. They carry nearly all of the FLOPs, so "x matmul floor" says what
everything else costs: depthwise convolutions, norms, GELU, allocation and passes over memory.

Each forward product runs as the fastest GEMM torch offers at its shape: MKL's ``addmm`` or,
on CPU in fp32, oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, which the optimized
model runs), chosen by timing both at construction. The floor's time is the sum over its
products of each product's fastest time over the repeats: noise (other processes, frequency)
only adds time, so the minimum per product is what the machine can do and moves least between
runs; a model's median over the same repeats moves more.
The matmul peak (square products of the case's dtype) turns achieved GFLOP/s into a fraction of
what the machine does at best.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn


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

    The optimized model (``convnext_backbone.inference``) runs the same products at the same
    shapes, as oneDNN GEMMs."""
    calls: List[Tuple[int, nn.Linear]] = []
    hooks = [module.register_forward_hook(
        lambda module, args, out: calls.append((args[0].shape[:-1].numel(), module)))
        for module in model.modules() if isinstance(module, nn.Linear)]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return calls


class MatmulFloor:
    """Our backbone's pointwise-linear matmuls at one input, alone: the floor of its time.

    Every block's pwconv1 and pwconv2 is an ``nn.Linear`` over the (N * H_i * W_i, C) pixels
    of its stage, i.e. an (M, K) x (K, N) product plus bias; together they carry nearly all of
    the FLOPs. ``step()`` runs those same products with the modules' own weights on tensors
    allocated once (the output of pwconv1 is the input of pwconv2, as in the block), each as
    the fastest GEMM at its shape (module docstring), so that it times the products and nothing
    else. A train step adds each linear's two backward products: grad input (M, N) x (N, K)
    and grad weight (N, M) x (M, K).

    ``shapes`` holds (M, K, N) of each forward product, in call order, ``linears`` the module
    it comes from, ``gemms`` the GEMM chosen for it ('addmm' or 'onednn'); ``flops`` the total
    of the products ``step()`` runs; ``seconds()`` the sum of each product's fastest time over
    the ``step()`` calls so far.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, *, mode: str,
                 dtype: Optional[torch.dtype], trials: int = 3) -> None:
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
        self.gemms: List[str] = []
        self.flops = 0
        onednn = (x.device.type == 'cpu' and dtype == torch.float32
                  and torch.backends.mkldnn.is_available())
        for rows, linear in linear_inputs(model, x):
            k, n = linear.in_features, linear.out_features
            weight = linear.weight.detach().to(dtype)
            bias = linear.bias.detach().to(dtype)
            inputs, outputs = buffer(rows, k), buffer(rows, n)
            candidates = {
                'addmm': lambda b=bias, a=inputs, w=weight, o=outputs: torch.addmm(
                    b, a, w.t(), out=o)}
            if onednn:
                candidates['onednn'] = lambda b=bias, a=inputs, w=weight: \
                    torch.ops.mkldnn._linear_pointwise(a, w, b, 'none', [], '')
            gemm = min(candidates, key=lambda c: self._fastest(candidates[c], trials))
            self.calls.append(candidates[gemm])
            self.gemms.append(gemm)
            if mode == 'train':
                grad_weight = buffer(n, k)
                self.calls += [
                    lambda g=outputs, w=weight, o=inputs: torch.mm(g, w, out=o),
                    lambda g=outputs, a=inputs, o=grad_weight: torch.mm(g.t(), a, out=o)]
            self.shapes.append((rows, k, n))
            self.linears.append(linear)
            self.flops += 2 * rows * k * n * (3 if mode == 'train' else 1)
        self._best = [float('inf')] * len(self.calls)

    def _fastest(self, call: Callable[[], torch.Tensor], trials: int) -> float:
        """The best of ``trials`` timed calls, after one untimed."""
        call()
        times = []
        for _ in range(trials):
            self.sync()
            start = time.perf_counter()
            call()
            self.sync()
            times.append(time.perf_counter() - start)
        return min(times)

    def step(self) -> float:
        """Every product once, each timed (synchronized) into its fastest time; returns the
        sum of this step's times."""
        total = 0.0
        for index, call in enumerate(self.calls):
            start = time.perf_counter()
            call()
            self.sync()
            seconds = time.perf_counter() - start
            self._best[index] = min(self._best[index], seconds)
            total += seconds
        return total

    def seconds(self) -> float:
        """The floor: the sum of each product's fastest time over the ``step()`` calls."""
        return sum(self._best)

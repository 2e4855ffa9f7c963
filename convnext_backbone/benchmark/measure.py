"""Measuring one case: the timed steps of every peer (eager and compiled) and of the matmul
floor, the FLOPs of the work, and the peak activation memory of a train step.

The steps run interleaved (one repeat of each in turn), so that a slow-down of the machine hits
them alike; every row reports the median and the spread (min-max) of its repeats and the GFLOP
of its work. The FLOPs of a case are those of our model's forward, counted by torch's
``FlopCounterMode``, times 3 for a train step (forward, and two products per product in
backward: the usual convention), the same for every peer, which all compute that function.

Memory: the activation memory of a train step is its peak, over one step that follows a warm-up
step (so gradients and lazily created library state already exist), of the bytes live in
torch's allocator above the level before the step. On CUDA that is
``torch.cuda.max_memory_allocated``; on CPU, where torch keeps no such statistic, it is the
running sum of the allocation events that torch's profiler records. ``measure_memory`` runs each
measurement in a fresh process, so that no earlier case's cached blocks or state count.
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .floor import MatmulFloor
from .peers import build_peers

FLOOR = 'matmul floor'  # the floor's row
OPTIMIZED = 'convnext_backbone optimized'  # optimize_for_inference(ours), eval cases
COMPILED = ' (compiled)'  # suffix of a compiled peer's row
# Precision names -> autocast dtype (None: no autocast, fp32).
PRECISIONS: Dict[str, Optional[torch.dtype]] = {
    'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def precision_name(precision: str, memory_format: str) -> str:
    """A case's precision in the report: 'fp32', 'bf16 autocast', 'fp16 autocast +
    channels_last', ..."""
    name = precision if PRECISIONS[precision] is None else f'{precision} autocast'
    return name if memory_format == 'contiguous' else f'{name} + {memory_format}'


def make_step(model: nn.Module, x: torch.Tensor, *, mode: str,
              amp: Optional[torch.dtype]) -> Callable[[], None]:
    """One eval forward (no grad) or train step (forward and backward of the outputs' means) of
    ``model`` at ``x``, under autocast to ``amp`` if given, synchronized: its time is the
    work's, not the launch's."""
    device = x.device.type
    sync = torch.get_device_module(device).synchronize

    def step() -> None:
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            if mode == 'eval':
                with torch.no_grad():
                    model(x)
            else:
                out = model(x)
                sum(o.float().mean() for o in out).backward()
        sync()

    return step


def count_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of ``step``, as torch's ``FlopCounterMode`` counts them."""
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def first_call(model: nn.Module, x: torch.Tensor, *, mode: str, amp: Optional[torch.dtype]
               ) -> Tuple[float, Optional[Tuple[torch.Tensor, ...]]]:
    """Seconds of a compiled model's first step (its compilation), and its eval outputs (None
    for a train step)."""
    start = time.perf_counter()
    outs = None
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        if mode == 'eval':
            with torch.no_grad():
                outs = model(x)
        else:
            sum(o.float().mean() for o in model(x)).backward()
    torch.get_device_module(x.device.type).synchronize()
    return time.perf_counter() - start, outs


@torch.no_grad()  # (the reference comes from a forward with grad enabled)
def _max_relative_difference(outs: Sequence[torch.Tensor],
                             reference: Sequence[torch.Tensor]) -> float:
    """The largest difference of ``outs`` to ``reference``, relative to its output's scale."""
    return max(float((a.float() - b.float()).abs().max() / b.float().abs().max())
               for a, b in zip(outs, reference))


def run_case(peers: Dict[str, nn.Module], ours: nn.Module, x: torch.Tensor, *, mode: str,
             amp: Optional[torch.dtype], warmup: int, repeats: int,
             compile_peers: bool = False,
             references: Optional[Dict[str, nn.Module]] = None,
             optimized: Optional[nn.Module] = None) -> Dict[str, dict]:
    """Time the peers (and, with ``compile_peers``, a ``torch.compile``d copy of each, with its
    first call's time in ``compile_s`` and, in eval, its outputs' distance to our model's)
    and the matmul floor of ``ours``, interleaved; ``references`` are other models timed with
    them, with their own FLOPs (our backbone at output stride 32 beside a dilated case);
    ``optimized`` is ``optimize_for_inference(ours)``, a peer of its own (``OPTIMIZED``) in
    eval cases. Returns a row per name: ``kind`` ('eager', 'compiled', 'floor',
    'reference'), ``median_s``, ``min_s``, ``max_s``, ``gflop``. The floor's ``median_s`` is
    its ``seconds()``, the sum of its products' fastest times (at most ``min_s``, the fastest
    of its steps' sums), and ``gemms`` counts the GEMM chosen per product."""
    steps: Dict[str, Callable[[], None]] = {}
    rows: Dict[str, dict] = {}
    if optimized is not None and mode == 'eval':
        peers = {**peers, OPTIMIZED: optimized}
    for name, model in peers.items():
        model.train(mode == 'train')
        steps[name] = make_step(model, x, mode=mode, amp=amp)
        rows[name] = dict(kind='eager')
    # The same work for every peer: FLOPs of our model's forward (module docstring).
    flops = _case_flops(ours, x, mode=mode, amp=amp)
    reference_flops = {}
    for name, model in (references or {}).items():
        reference_flops[name] = _case_flops(model, x, mode=mode, amp=amp)
        steps[name] = make_step(model, x, mode=mode, amp=amp)
        rows[name] = dict(kind='reference')
    if compile_peers:
        torch._dynamo.reset()  # each case compiles afresh: its own shapes, mode and dtype
        if mode == 'eval':
            with torch.no_grad(), torch.autocast(x.device.type, dtype=amp,
                                                 enabled=amp is not None):
                reference = ours(x)
        for name, model in peers.items():
            compiled = torch.compile(model)
            seconds, outs = first_call(compiled, x, mode=mode, amp=amp)
            rows[name + COMPILED] = dict(kind='compiled', compile_s=seconds)
            if outs is not None:
                rows[name + COMPILED]['max_relative_difference'] = _max_relative_difference(
                    outs, reference)
            steps[name + COMPILED] = make_step(compiled, x, mode=mode, amp=amp)
        reference = outs = None
    floor = MatmulFloor(ours, x, mode=mode, dtype=amp)
    steps[FLOOR] = floor.step
    rows[FLOOR] = dict(kind='floor')
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    models = [*peers.values(), *(references or {}).values()]
    for _ in range(repeats):  # interleaved: one repeat of each peer in turn
        for name, step in steps.items():
            for model in models:
                model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            seconds = step()  # the floor's: the sum of its products' times
            times[name].append(seconds if name == FLOOR else time.perf_counter() - start)
    for name, t in times.items():
        work = floor.flops if name == FLOOR else reference_flops.get(name, flops)
        rows[name].update(median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                          gflop=work / 1e9)
    rows[FLOOR]['median_s'] = floor.seconds()
    rows[FLOOR]['gemms'] = dict(collections.Counter(floor.gemms))
    return rows


def _case_flops(model: nn.Module, x: torch.Tensor, *, mode: str,
                amp: Optional[torch.dtype]) -> float:
    """FLOPs of a case's step of ``model``: its forward's, times 3 for a train step (module
    docstring)."""
    model.train(mode == 'train')
    with torch.no_grad(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        return count_flops(lambda: model(x)) * (3 if mode == 'train' else 1)


# ------------------------------------------------------------------------------------ memory
def cpu_peak_allocated(step: Callable[[], None]) -> int:
    """Peak bytes live in torch's CPU allocator during ``step()``, above the level before it.

    The profiler records every allocation and free (size signed) when ``profile_memory`` is
    on; their running sum in time order is the live total. (The resident set size is no
    substitute: malloc keeps freed pages and the first step maps libraries' state.)
    """
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        step()
    # The raw events, as torch's own profiler parser reads them: the public event list folds
    # the allocations into the operators and loses their order.
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def train_step_activations(model: nn.Module, x: torch.Tensor) -> int:
    """Activation bytes of a train step of ``model`` at ``x``, at their peak: measured over a
    step that follows a warm-up step, with the gradients zeroed in place, so that the measured
    step allocates activations only (module docstring)."""
    model.train()  # (mmpretrain's train() returns None: no chaining)
    step = make_step(model, x, mode='train', amp=None)
    step()
    for param in model.parameters():
        if param.grad is not None:
            param.grad.zero_()
    if x.device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - base
    return cpu_peak_allocated(step)


def _memory_child(queue: mp.Queue, arch: str, version: str, peer: str, with_cp: bool,
                  size: Tuple[int, int], batch: int, device: str, output_stride: int) -> None:
    model = build_peers(arch, version, with_cp=with_cp,
                        output_stride=output_stride)[peer].to(device)
    x = torch.randn(batch, 3, *size, device=device)
    queue.put(train_step_activations(model, x))


def measure_memory(arch: str, version: str, peer: str, *, with_cp: bool,
                   size: Tuple[int, int], batch: int, device: str,
                   output_stride: int = 32) -> int:
    """``train_step_activations`` of ``peer`` (built by ``build_peers``) at a random input of
    ``batch`` x 3 x ``size``, in a fresh process (module docstring)."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child, args=(queue, arch, version, peer, with_cp, size,
                                                   batch, device, output_stride))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or queue.empty():
        raise RuntimeError(f'memory measurement of {peer} (with_cp={with_cp}) failed')
    return int(queue.get())

"""Side-by-side backbone benchmark: this package's ConvNeXt against timm's and mmpretrain's.

    python tools/benchmark.py [--archs tiny base] [--sizes 512x512 800x1216] [--batches 1 2]
        [--modes eval train] [--precisions fp32 bf16 fp16]
        [--memory-formats contiguous channels_last] [--compile] [--keep-freed-memory]
        [--repeats 5] [--warmup 2] [--memory] [--out benchmarks/]

Every peer gets the same arch, the same weights (converted between layouts) and the same input;
the peers run interleaved (one repeat of each in turn), so that a slow-down of the machine hits
them alike. Timm's features-only model is given the same per-stage LayerNorms as ours, so the
work is equal. Reported: median and spread (min-max) of the repeats, the ratio to the fastest
peer, the ratio to the matmul floor, achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode)
and the fraction of the machine's matrix-product peak (of the case's dtype), measured at start.

The matmul floor is a row of its own, timed interleaved with the peers: our backbone's
pointwise-linear matmuls alone (each block's pwconv1/pwconv2 ``addmm`` at its shapes for the
case's input, and for a train step the two backward products of each), on preallocated tensors.
They carry nearly all of the FLOPs, so "x matmul floor" says what everything else costs:
depthwise convolutions, norms, GELU, allocation and passes over memory.

On CUDA the cases are fp32, bf16 and fp16 autocast, each with contiguous and channels-last
inputs and models (``--precisions`` / ``--memory-formats`` choose; on CPU the default is fp32,
contiguous). ``--compile`` adds a ``torch.compile``d copy of every peer as a row of its own, with
its first call's time (compilation, with an empty inductor cache unless $TORCHINDUCTOR_CACHE_DIR
is set) in "compile s"; in eval cases its outputs are compared with our plain path.
``--keep-freed-memory`` (CPU, glibc) keeps freed memory mapped (``mallopt``: no mmap for large
blocks, no trimming), as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would: otherwise large
activation buffers may be returned to the OS when freed and page-faulted anew in the next
forward, depending on the process's history (``convnext_backbone.runtime.keep_freed_memory``).

``--memory`` measures the activation memory of a train step with and without ``with_cp``: the
peak, over one step that follows a warm-up step (so gradients and lazily created library state
already exist), of the bytes live in torch's allocator above the level before the step. On CUDA
that is ``torch.cuda.max_memory_allocated``; on CPU, where torch keeps no such statistic, it is
the running sum of the allocation events that torch's profiler records. Each case runs in a
fresh process.
Needs torch, timm and mmengine; mmpretrain (which needs mmcv) is benchmarked when importable.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from typing import Callable, Dict, List, Optional, Tuple

# NOTE: read before torch is imported: torch's inductor writes its default cache folder into
# this variable when anything asks for it, and --compile measures with an empty one unless the
# user chose a folder.
INDUCTOR_CACHE_CHOSEN = 'TORCHINDUCTOR_CACHE_DIR' in os.environ

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convnext_backbone import ConvNeXt
from convnext_backbone.runtime import keep_freed_memory
from convnext_backbone.backbone import LN_EPS
from convnext_backbone.checkpoints.backbone import from_timm


# ------------------------------------------------------------------------------------- peers
class TimmWithNorms(nn.Module):
    """timm's features-only ConvNeXt plus one channels-first LayerNorm per stage (as ours)."""

    def __init__(self, arch: str, version: str):
        super().__init__()
        name = f'convnext_{arch}' if version == 'v1' else f'convnextv2_{arch}'
        self.body = timm.create_model(name, pretrained=False, features_only=True)
        self.norms = nn.ModuleList(
            timm.layers.LayerNorm2d(c, eps=LN_EPS) for c in self.body.feature_info.channels())

    def forward(self, x):
        return tuple(norm(f) for norm, f in zip(self.norms, self.body(x)))


def build_peers(arch: str, version: str, with_cp: bool = False) -> Dict[str, nn.Module]:
    """Our backbone and its peers, all with our (random) weights."""
    torch.manual_seed(0)
    ours = ConvNeXt(arch, version=version, with_cp=with_cp)
    peers = {'convnext_backbone': ours}
    timm_peer = TimmWithNorms(arch, version)
    full = timm.create_model(timm_peer.body.default_cfg['architecture'], pretrained=False)
    timm_sd = full.state_dict()
    # Ours -> timm: fill timm's full-model state dict from ours via the converter's key map.
    converted = from_timm(timm_sd)
    ours_sd = ours.state_dict()
    for (timm_key, value), official_key in zip(timm_sd.items(), converted):
        if official_key in ours_sd:
            timm_sd[timm_key] = ours_sd[official_key].reshape(value.shape)
    full.load_state_dict(timm_sd)
    # features_only models name their modules stem_0, stages_1, ...
    timm_peer.body.load_state_dict({
        re.sub(r'^(stem|stages)\.(\d+)', r'\1_\2', k): v
        for k, v in full.state_dict().items() if not k.startswith('head')
    })
    timm_peer.norms.load_state_dict(
        {f'{i}.{p}': ours_sd[f'norm{i}.{p}'] for i in range(4) for p in ('weight', 'bias')})
    if with_cp:
        timm_peer.body.set_grad_checkpointing(True)
    peers['timm'] = timm_peer
    try:
        from mmpretrain.models.backbones import ConvNeXt as PretrainConvNeXt
    except ImportError:  # needs mmcv, absent e.g. on a GPU machine with torch alone
        return peers
    extra = dict(use_grn=True, layer_scale_init_value=0.) if version == 'v2' else {}
    mmpre = PretrainConvNeXt(arch=arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                             with_cp=with_cp, **extra)
    mmpre.load_state_dict({
        k.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv'):
        v.reshape(-1) if '.grn.' in k else v
        for k, v in ours_sd.items()
    })
    peers['mmpretrain'] = mmpre
    return peers


def max_relative_difference(peers: Dict[str, nn.Module], device: str) -> Dict[str, float]:
    """How far each peer's eval outputs are from the plain (autograd) path of ours, relative to
    the output scale: the peers compute the same function with the same weights."""
    x = torch.randn(1, 3, 96, 128, device=device)
    ours = peers["convnext_backbone"]
    ours.eval()
    reference = ours(x)  # grad enabled: the plain PyTorch path
    diffs = {}
    with torch.no_grad():
        for name, model in peers.items():
            model.eval()  # (mmpretrain's train() returns None)
            outs = model(x)
            diffs[name] = max(float((a - b).abs().max() / b.abs().max())
                              for a, b in zip(outs, reference))
    return diffs


# ------------------------------------------------------------------------------------ timing
FLOOR = 'matmul floor'
COMPILED = ' (compiled)'  # suffix of a compiled peer's row
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MEMORY_FORMATS = {'contiguous': torch.contiguous_format, 'channels_last': torch.channels_last}


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def make_step(model: nn.Module, x: torch.Tensor, mode: str, amp: Optional[torch.dtype]
              ) -> Callable[[], None]:
    device = x.device.type

    def step():
        with torch.autocast(device, dtype=amp, enabled=amp is not None):
            if mode == 'eval':
                with torch.no_grad():
                    model(x)
            else:
                out = model(x)
                sum(o.float().mean() for o in out).backward()
        _sync(device)

    return step


def count_flops(step: Callable[[], None]) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_peak_gflops(device: str, dtype: torch.dtype = torch.float32, n: Optional[int] = None,
                       repeats: int = 5) -> float:
    """The best of ``repeats`` square matrix products of ``dtype``, in GFLOP/s. On CUDA the
    matrices are larger, so that the product, not the launch, is timed."""
    n = n or (8192 if device == 'cuda' else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times[1:]) / 1e9


class MatmulFloor:
    """Our backbone's pointwise-linear matmuls at one input, alone: the floor of its time.

    Every block's pwconv1 and pwconv2 is an ``nn.Linear`` over the (N * H_i * W_i, C) pixels
    of its stage, i.e. ``torch.addmm(bias, x, weight.t())`` with (M, K) x (K, N) shapes; together
    they carry nearly all of the FLOPs. ``step()`` runs those same calls with the modules' own
    weights on tensors allocated once (the output of pwconv1 is the input of pwconv2, as in the
    block), so that it times the products and nothing else. A train step adds each linear's
    two backward products: grad input (M, N) x (N, K) and grad weight (N, M) x (M, K).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, mode: str,
                 dtype: Optional[torch.dtype]) -> None:
        dtype = dtype or torch.float32
        self.device = x.device.type
        buffers: Dict[Tuple[int, ...], torch.Tensor] = {}

        def buffer(*shape: int) -> torch.Tensor:  # one tensor per shape, as pixels flow on
            if shape not in buffers:
                buffers[shape] = torch.randn(*shape, device=x.device, dtype=dtype)
            return buffers[shape]

        self.calls: List[Callable[[], torch.Tensor]] = []
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
            self.flops += 2 * rows * k * n * (3 if mode == 'train' else 1)

    def step(self) -> None:
        for call in self.calls:
            call()
        _sync(self.device)


def linear_inputs(model: nn.Module, x: torch.Tensor) -> List[Tuple[int, nn.Linear]]:
    """(rows of its input, module) for every ``nn.Linear`` call of one eval forward at ``x``,
    in call order."""
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


def first_call(model: nn.Module, x: torch.Tensor, mode: str, amp: Optional[torch.dtype]
               ) -> Tuple[float, Optional[Tuple[torch.Tensor, ...]]]:
    """Seconds of a compiled model's first step (its compilation), and its eval outputs."""
    start = time.perf_counter()
    outs = None
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        if mode == 'eval':
            with torch.no_grad():
                outs = model(x)
        else:
            sum(o.float().mean() for o in model(x)).backward()
    _sync(x.device.type)
    return time.perf_counter() - start, outs


def run_case(peers: Dict[str, nn.Module], ours: nn.Module, x: torch.Tensor, mode: str,
             amp: Optional[torch.dtype], warmup: int, repeats: int,
             compile_peers: bool = False) -> Dict[str, dict]:
    """Time the peers (and their compiled copies) and the matmul floor, interleaved."""
    steps: Dict[str, Callable[[], None]] = {}
    rows: Dict[str, dict] = {}
    for name, model in peers.items():
        model.train(mode == 'train')
        steps[name] = make_step(model, x, mode, amp)
        rows[name] = dict(kind='eager')
    # The same work for every peer: FLOPs of our plain (autograd) forward, times 3 for a train
    # step (forward + two matmuls per matmul in backward), the usual convention.
    ours.train(mode == 'train')
    with torch.enable_grad(), torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        flops = count_flops(lambda: ours(x)) * (3 if mode == 'train' else 1)
    if compile_peers:
        torch._dynamo.reset()  # each case compiles afresh: its own shapes, mode and dtype
        if mode == 'eval':
            with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
                reference = ours(x)  # grad enabled: our plain path
        for name, model in peers.items():
            compiled = torch.compile(model)
            seconds, outs = first_call(compiled, x, mode, amp)
            rows[name + COMPILED] = dict(kind='compiled', compile_s=seconds)
            if outs is not None:
                rows[name + COMPILED]['max_relative_difference'] = max(
                    float((a.float() - b.float()).abs().max() / b.float().abs().max())
                    for a, b in zip(outs, reference))
            steps[name + COMPILED] = make_step(compiled, x, mode, amp)
        reference = outs = None
    floor = MatmulFloor(ours, x, mode, amp)
    steps[FLOOR] = floor.step
    rows[FLOOR] = dict(kind='floor')
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(repeats):  # interleaved: one repeat of each peer in turn
        for name, step in steps.items():
            for model in peers.values():
                model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    for name, t in times.items():
        rows[name].update(median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                          gflop=(floor.flops if name == FLOOR else flops) / 1e9)
    return rows


# ------------------------------------------------------------------------------------ memory
def _memory_child(queue, arch, version, peer, with_cp, size, batch, device):
    model = build_peers(arch, version, with_cp)[peer].to(device)
    model.train()  # (mmpretrain's train() returns None)
    x = torch.randn(batch, 3, *size, device=device)
    step = make_step(model, x, 'train', None)
    step()  # warm-up: gradients exist afterwards, so the measured step adds only activations
    for param in model.parameters():
        if param.grad is not None:
            param.grad.zero_()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        queue.put(torch.cuda.max_memory_allocated() - base)
    else:
        queue.put(cpu_peak_allocated(step))


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


def measure_memory(arch, version, peer, with_cp, size, batch, device) -> int:
    """Activation bytes of a train step at its peak, in a fresh process (see the module
    docstring)."""
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_child,
                       args=(queue, arch, version, peer, with_cp, size, batch, device))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or queue.empty():
        raise RuntimeError(f'memory measurement of {peer} (with_cp={with_cp}) failed')
    return int(queue.get())


# ------------------------------------------------------------------------------------ report
def _ratio_to_fastest_peer(name: str, peers: Dict[str, dict]) -> str:
    """This row's time over the fastest other peer's of the same kind (eager or compiled)."""
    kind = peers[name]['kind']
    if kind == 'floor':
        return '-'
    others = [r['median_s'] for k, r in peers.items()
              if r['kind'] == kind and not k.startswith('convnext_backbone')]
    return f"{peers[name]['median_s'] / min(others):.2f}" if others else '-'


def to_markdown(results: dict) -> str:
    meta = results['machine']
    peaks = meta.get('matmul_peak_gflops_by_dtype', {'fp32': meta['matmul_peak_gflops']})
    lines = [f"Machine: {meta['device']}; torch {meta['torch']}, timm {meta['timm']}; "
             f"{meta['date']}. Matmul peak: "
             + ', '.join(f'{dtype} {peak:.0f}' for dtype, peak in peaks.items()) + ' GFLOP/s.'
             + (f" Allocator: {meta['allocator']}." if meta.get('allocator') else '')
             + (f" Inductor cache: {meta['inductor_cache']}." if meta.get('inductor_cache')
                else ''), '',
             '| arch | mode | input | batch | precision | peer | median s | min-max s | '
             'ratio to fastest peer | x matmul floor | GFLOP/s | % of peak | compile s |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for case in results['cases']:
        peers = case['peers']
        floor = peers.get(FLOOR, {}).get('median_s')
        peak = peaks.get(case['precision'].split()[0], peaks['fp32'])
        for name, r in peers.items():
            gflops = r['gflop'] / r['median_s']
            lines.append(
                f"| {case['arch']} | {case['mode']} | {case['size']} | {case['batch']} | "
                f"{case['precision']} | {name} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                f"{r['max_s']:.3f} | {_ratio_to_fastest_peer(name, peers)} | "
                f"{r['median_s'] / floor:.2f} | {gflops:.0f} | {100 * gflops / peak:.0f} | "
                + (f"{r['compile_s']:.1f} |" if 'compile_s' in r else '- |'))
    for arch, diffs in results.get('max_relative_difference', {}).items():
        lines.append(f'\n{arch}: eval outputs vs. our plain (autograd) path, max relative '
                     'difference: ' + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
    compiled = [(case, name, r['max_relative_difference']) for case in results['cases']
                for name, r in case['peers'].items() if 'max_relative_difference' in r]
    if compiled:
        lines.append('\nCompiled eval outputs vs. our plain (autograd) path at the case\'s input, '
                     'max relative difference: ' + ', '.join(
                         f"{case['arch']} {case['size']} {case['precision']} {name} {d:.1e}"
                         for case, name, d in compiled))
    if results.get('memory'):
        lines += ['', '| arch | input | batch | peer | train-step activations, peak MB | '
                  'with_cp MB | ratio |',
                  '|---|---|---|---|---|---|---|']
        for m in results['memory']:
            lines.append(f"| {m['arch']} | {m['size']} | {m['batch']} | {m['peer']} | "
                         f"{m['plain'] / 2**20:.0f} | {m['with_cp'] / 2**20:.0f} | "
                         f"{m['with_cp'] / m['plain']:.2f} |")
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--archs', nargs='+', default=['tiny', 'base'])
    parser.add_argument('--version', default='v1', choices=('v1', 'v2'))
    parser.add_argument('--sizes', nargs='+', default=['512x512', '800x1216'])
    parser.add_argument('--batches', nargs='+', type=int, default=[1, 2])
    parser.add_argument('--modes', nargs='+', default=['eval', 'train'],
                        choices=('eval', 'train'))
    parser.add_argument('--peers', nargs='+', help='subset of peers (default: all available)')
    parser.add_argument('--precisions', nargs='+', choices=tuple(PRECISIONS),
                        help='fp32 and/or bf16/fp16 autocast (default: fp32 on CPU, all three '
                        'on CUDA)')
    parser.add_argument('--memory-formats', nargs='+', choices=tuple(MEMORY_FORMATS),
                        help='layout of the input and the models (default: contiguous on CPU, '
                        'both on CUDA)')
    parser.add_argument('--compile', action='store_true',
                        help='add a torch.compile copy of every peer, with its compile time')
    parser.add_argument('--keep-freed-memory', action='store_true',
                        help='CPU, glibc: keep freed memory mapped instead of returning it to '
                        'the OS (no page faults on the next forward)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--memory', action='store_true',
                        help='also measure the peak activation memory of a train step with and '
                        'without with_cp, at the last of --sizes')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='benchmarks', help='folder for results.json/.md')
    args = parser.parse_args(argv)
    on_cuda = args.device == 'cuda'
    args.precisions = args.precisions or (['fp32', 'bf16', 'fp16'] if on_cuda else ['fp32'])
    args.memory_formats = args.memory_formats or (
        ['contiguous', 'channels_last'] if on_cuda else ['contiguous'])
    if args.peers:
        unknown = set(args.peers) - {'convnext_backbone', 'timm', 'mmpretrain'}
        if unknown:
            parser.error(f'unknown --peers {sorted(unknown)}; expected some of '
                         'convnext_backbone, timm, mmpretrain')
    return args


def precision_name(precision: str, memory_format: str) -> str:
    """'fp32', 'bf16 autocast', 'fp16 autocast + channels_last', ..."""
    name = precision if PRECISIONS[precision] is None else f'{precision} autocast'
    return name if memory_format == 'contiguous' else f'{name} + {memory_format}'


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = args.device
    allocator = None
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit('--keep-freed-memory needs glibc (mallopt); this C library has none')
    if args.keep_freed_memory:
        allocator = 'freed memory kept mapped (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)'
    fresh_cache = None
    if args.compile and not INDUCTOR_CACHE_CHOSEN:
        # An empty cache: "compile s" is what the first run on a machine pays.
        fresh_cache = tempfile.mkdtemp(prefix='benchmark_inductor_')
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = fresh_cache
    name = torch.cuda.get_device_name() if device == 'cuda' else (
        f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads')
    peaks = {p: matmul_peak_gflops(device, PRECISIONS[p] or torch.float32)
             for p in ['fp32'] + [p for p in args.precisions if p != 'fp32']}
    results = dict(machine=dict(device=name, torch=torch.__version__, timm=timm.__version__,
                                date=str(date.today()), matmul_peak_gflops=peaks['fp32'],
                                matmul_peak_gflops_by_dtype=peaks, allocator=allocator,
                                inductor_cache=None if not args.compile else
                                'empty at start' if fresh_cache else
                                os.environ['TORCHINDUCTOR_CACHE_DIR']),
                   cases=[], memory=[])
    for arch in args.archs:
        peers = build_peers(arch, args.version)
        ours = peers['convnext_backbone']  # the reference, timed or not (FLOPs, floor)
        if args.peers:
            peers = {k: v for k, v in peers.items() if k in args.peers}
        ours.to(device)
        for model in peers.values():
            model.to(device)
        diffs = max_relative_difference(dict(peers, convnext_backbone=ours), device)
        results.setdefault('max_relative_difference', {})[arch] = diffs
        print(f'{arch}: max relative output difference to our plain path: {diffs}', flush=True)
        for size_text in args.sizes:
            size = tuple(int(v) for v in size_text.split('x'))
            for batch in args.batches:
                for mode in args.modes:
                    for precision in args.precisions:
                        for memory_format in args.memory_formats:
                            # Input and every model in the case's layout (and back again).
                            layout = MEMORY_FORMATS[memory_format]
                            x = torch.randn(batch, 3, *size, device=device).contiguous(
                                memory_format=layout)
                            for model in {ours, *peers.values()}:
                                model.to(memory_format=layout)
                            case = dict(arch=arch, mode=mode, size=size_text, batch=batch,
                                        precision=precision_name(precision, memory_format),
                                        peers=run_case(peers, ours, x, mode,
                                                       PRECISIONS[precision], args.warmup,
                                                       args.repeats, args.compile))
                            results['cases'].append(case)
                            print(json.dumps(case), flush=True)
        if args.memory:  # at the largest size only: each case is a fresh process
            for size_text in args.sizes[-1:]:
                size = tuple(int(v) for v in size_text.split('x'))
                for peer in peers:
                    plain, cp = (measure_memory(arch, args.version, peer, with_cp, size,
                                                args.batches[0], device)
                                 for with_cp in (False, True))
                    results['memory'].append(dict(arch=arch, size=size_text,
                                                  batch=args.batches[0], peer=peer,
                                                  plain=plain, with_cp=cp))
                    print(json.dumps(results['memory'][-1]), flush=True)
    markdown = to_markdown(results)
    print(markdown)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.out, 'results.md'), 'w') as f:
        f.write(markdown)
    if fresh_cache:
        shutil.rmtree(fresh_cache, ignore_errors=True)
    return results


if __name__ == '__main__':
    sys.exit(main() and 0)

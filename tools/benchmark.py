"""Side-by-side backbone benchmark: this package's ConvNeXt against timm's and mmpretrain's.

    python tools/benchmark.py [--archs tiny base] [--sizes 512x512 800x1216] [--batches 1 2]
        [--modes eval train] [--repeats 5] [--warmup 2] [--memory] [--out benchmarks/]

Every peer gets the same arch, the same weights (converted between layouts) and the same input;
the peers run interleaved (one repeat of each in turn), so that a slow-down of the machine hits
them alike. Timm's features-only model is given the same per-stage LayerNorms as ours, so the
work is equal. Reported: median and spread (min-max) of the repeats, the ratio to the fastest
peer, achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode) and the fraction of the
machine's fp32 matrix-product peak, measured at start. On CUDA, bf16/fp16 autocast and
channels-last cases are added. ``--memory`` measures the activation memory of a train step with
and without ``with_cp``: the peak, over one step that follows a warm-up step (so gradients and
lazily created library state already exist), of the bytes live in torch's allocator above the
level before the step. On CUDA that is ``torch.cuda.max_memory_allocated``; on CPU, where torch
keeps no such statistic, it is the running sum of the allocation events that torch's profiler
records. Each case runs in a fresh process.
Needs torch, timm and mmengine; mmpretrain (which needs mmcv) is benchmarked when importable.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import sys
import time
from datetime import date
from typing import Callable, Dict, List, Optional

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convnext_backbone import ConvNeXt
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


def matmul_peak_gflops(device: str, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times[1:]) / 1e9


def run_case(peers: Dict[str, nn.Module], x: torch.Tensor, mode: str,
             amp: Optional[torch.dtype], warmup: int, repeats: int) -> Dict[str, dict]:
    steps = {}
    for name, model in peers.items():
        model.train(mode == 'train')
        steps[name] = make_step(model, x, mode, amp)
    # The same work for every peer: FLOPs of our plain (autograd) forward, times 3 for a train
    # step (forward + two matmuls per matmul in backward), the usual convention.
    ours = peers['convnext_backbone']
    with torch.enable_grad():
        flops = count_flops(lambda: ours(x)) * (3 if mode == 'train' else 1)
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
    return {name: dict(median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                       gflop=flops / 1e9) for name, t in times.items()}


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
def to_markdown(results: dict) -> str:
    meta = results['machine']
    lines = [f"Machine: {meta['device']}; torch {meta['torch']}, timm {meta['timm']}; "
             f"{meta['date']}. fp32 matmul peak: {meta['matmul_peak_gflops']:.0f} GFLOP/s.", '',
             '| arch | mode | input | batch | precision | peer | median s | min-max s | '
             'ratio to fastest peer | GFLOP/s | % of peak |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for case in results['cases']:
        peers = case['peers']
        others = [v['median_s'] for k, v in peers.items() if k != 'convnext_backbone']
        fastest_peer = min(others) if others else None
        for name, r in peers.items():
            ratio = f"{r['median_s'] / fastest_peer:.2f}" if fastest_peer else '-'
            gflops = r['gflop'] / r['median_s']
            lines.append(
                f"| {case['arch']} | {case['mode']} | {case['size']} | {case['batch']} | "
                f"{case['precision']} | {name} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                f"{r['max_s']:.3f} | {ratio} | {gflops:.0f} | "
                f"{100 * gflops / meta['matmul_peak_gflops']:.0f} |")
    for arch, diffs in results.get('max_relative_difference', {}).items():
        lines.append(f'\n{arch}: eval outputs vs. our plain (autograd) path, max relative '
                     'difference: ' + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
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
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--memory', action='store_true',
                        help='also measure the peak activation memory of a train step with and without '
                        'with_cp, '
                        'at the last of --sizes')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default='benchmarks', help='folder for results.json/.md')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = args.device
    name = torch.cuda.get_device_name() if device == 'cuda' else (
        f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads')
    results = dict(machine=dict(device=name, torch=torch.__version__, timm=timm.__version__,
                                date=str(date.today()),
                                matmul_peak_gflops=matmul_peak_gflops(device)),
                   cases=[], memory=[])
    precisions = [('fp32', None, False)]
    if device == 'cuda':
        precisions += [('bf16 autocast', torch.bfloat16, False),
                       ('fp16 autocast', torch.float16, False),
                       ('bf16 autocast + channels_last', torch.bfloat16, True)]
    for arch in args.archs:
        peers = build_peers(arch, args.version)
        if args.peers:
            peers = {k: v for k, v in peers.items() if k in args.peers}
        for model in peers.values():
            model.to(device)
        diffs = max_relative_difference(peers, device)
        results.setdefault('max_relative_difference', {})[arch] = diffs
        print(f'{arch}: max relative output difference to our plain path: {diffs}', flush=True)
        for size_text in args.sizes:
            size = tuple(int(v) for v in size_text.split('x'))
            for batch in args.batches:
                for mode in args.modes:
                    for precision, amp, channels_last in precisions:
                        x = torch.randn(batch, 3, *size, device=device)
                        if channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                            for model in peers.values():
                                model.to(memory_format=torch.channels_last)
                        case = dict(arch=arch, mode=mode, size=size_text, batch=batch,
                                    precision=precision,
                                    peers=run_case(peers, x, mode, amp, args.warmup,
                                                   args.repeats))
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
    return results


if __name__ == '__main__':
    sys.exit(main() and 0)

"""The benchmark's command line (``tools/benchmark.py``): its options, and ``main``, which runs
every case, prints the progress and the report, and writes ``results.json`` / ``results.md``.

On CUDA the cases are fp32, bf16 and fp16 autocast, each with contiguous and channels-last
inputs and models (``--precisions`` / ``--memory-formats`` choose; on CPU the default is fp32,
contiguous). ``--compile`` adds a ``torch.compile``d copy of every peer as a row of its own, with
its first call's time (compilation, with an empty inductor cache unless $TORCHINDUCTOR_CACHE_DIR
is set) in "compile s". ``--keep-freed-memory`` (CPU, glibc) keeps freed memory mapped
(``convnext_backbone.engine.memory.keep_freed_memory``): otherwise large activation buffers may
be returned to the OS when freed and page-faulted anew in the next forward, depending on the
process's history. ``--profile`` adds to every eval case the per-operator account of our
backbone's time above its matmul floor, per stage (``profile.profile_case``). ``--memory``
measures the activation memory of a train step with and without ``with_cp``
(``measure.measure_memory``), each in a fresh process. ``--output-strides
16 8`` repeats every case with the backbones dilated past that stride (ours and timm's; our
stride-32 model, same weights, timed beside them), and the report compares them with stride 32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
from datetime import date
from typing import List, Optional, Sequence, Tuple

import timm
import torch

from ..backbone import OUTPUT_STRIDES, ConvNeXt
from ..engine.memory import keep_freed_memory
from ..inference import optimize_for_inference
from .floor import matmul_peak_gflops
from .measure import (MEMORY_FORMATS, OPTIMIZED, PRECISIONS, measure_memory, precision_name,
                      run_case)
from .peers import PEERS, build_peers, max_relative_difference
from .profile import profile_case
from .report import STRIDE_32, arch_label, write_reports

DESCRIPTION = "Side-by-side backbone benchmark: this package's ConvNeXt against timm's and " \
    "mmpretrain's."
ALLOCATOR_KEPT = 'freed memory kept mapped (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2**31-1)'


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options, with the device's defaults for ``--precisions`` / ``--memory-formats``
    filled in (every one on CUDA, fp32 contiguous on CPU)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
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
    parser.add_argument('--profile', action='store_true',
                        help='eval cases: also account for our forward\'s time above the matmul '
                        'floor, operator by operator, per stage (torch.profiler)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--output-strides', nargs='+', type=int, default=[32],
                        choices=OUTPUT_STRIDES,
                        help='output strides of the backbones (16, 8: the later stages dilated, '
                        'ours and timm\'s; each case then also times ours at stride 32)')
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
        unknown = set(args.peers) - set(PEERS)
        if unknown:
            parser.error(f'unknown --peers {sorted(unknown)}; expected some of '
                         + ', '.join(PEERS))
    for text in args.sizes:
        if not re.fullmatch(r'[1-9]\d*x[1-9]\d*', text):
            parser.error(f'--sizes {text}: expected HEIGHTxWIDTH, e.g. 512x512 or 800x1216')
    return args


def _size(text: str) -> Tuple[int, ...]:
    """'800x1216' -> (800, 1216)."""
    return tuple(int(v) for v in text.split('x'))


# Environment variables that hold the CPU libraries to a narrower instruction set than the
# machine has (to measure, on an AVX-512 machine, what an AVX2-only one runs).
ISA_LIMITS = ('ONEDNN_MAX_CPU_ISA', 'ATEN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS')


def _device_name(device: str) -> str:
    if device == 'cuda':
        return torch.cuda.get_device_name()
    limits = [f'{k}={os.environ[k]}' for k in ISA_LIMITS if os.environ.get(k)]
    return (f'{_cpu_name()}, {torch.get_num_threads()} threads'
            + (f'; held to {" ".join(limits)}' if limits else ''))


def _cpu_name() -> str:
    """'AMD EPYC (x86_64; avx2, avx512f)': the CPU's model name (Linux) and its widest vector
    extensions, which decide the matmul peak."""
    name, flags = '', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name' and not name:
                    name = value.strip()
                elif key.strip() == 'flags' and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    vector = [flag for flag in ('avx2', 'avx512f', 'amx_tile') if flag in flags]
    machine = platform.machine() or platform.processor()
    details = '; '.join([machine] + ([', '.join(vector)] if vector else []))
    return f'{name} ({details})' if name else details


def main(argv: Optional[Sequence[str]] = None, *, inductor_cache_chosen: bool = False) -> dict:
    """Run the benchmark of the options ``argv`` (default: ``sys.argv``); print the progress
    and the report, write it into ``--out`` and return the results.

    ``inductor_cache_chosen``: whether the user set $TORCHINDUCTOR_CACHE_DIR; then ``--compile``
    uses that cache, else an empty one. It cannot be read here: torch's inductor writes its
    default folder into the variable when anything asks for it, and importing timm (so this
    package) does; ``tools/benchmark.py`` reads it before importing anything.
    """
    args = parse_args(argv)
    device = args.device
    allocator = None
    if args.keep_freed_memory and not keep_freed_memory():
        raise SystemExit('--keep-freed-memory needs glibc (mallopt); this C library has none')
    if args.keep_freed_memory:
        allocator = ALLOCATOR_KEPT
    fresh_cache = None
    if args.compile and not inductor_cache_chosen:
        # An empty cache: "compile s" is what the first run on a machine pays.
        fresh_cache = tempfile.mkdtemp(prefix='benchmark_inductor_')
        os.environ['TORCHINDUCTOR_CACHE_DIR'] = fresh_cache
    peaks = {p: matmul_peak_gflops(device, dtype=PRECISIONS[p] or torch.float32)
             for p in ['fp32'] + [p for p in args.precisions if p != 'fp32']}
    results = dict(machine=dict(device=_device_name(device), torch=torch.__version__,
                                timm=timm.__version__, date=str(date.today()),
                                matmul_peak_gflops=peaks['fp32'],
                                matmul_peak_gflops_by_dtype=peaks, allocator=allocator,
                                inductor_cache=None if not args.compile else
                                'empty at start' if fresh_cache else
                                os.environ['TORCHINDUCTOR_CACHE_DIR']),
                   cases=[], memory=[])
    try:
        for arch in args.archs:
            _run_arch(args, arch, results)
        markdown = write_reports(results, out=args.out)
        print(markdown)  # the tool's output
    finally:
        if fresh_cache:
            shutil.rmtree(fresh_cache, ignore_errors=True)
    return results


def _run_arch(args: argparse.Namespace, arch: str, results: dict) -> None:
    """Every case of one arch at each of ``--output-strides``."""
    for output_stride in args.output_strides:
        _run_stride(args, arch, output_stride, results)


def _run_stride(args: argparse.Namespace, arch: str, output_stride: int,
                results: dict) -> None:
    """Every case of one arch at one output stride (sizes x batches x modes x precisions x
    memory formats), then its memory measurements; appended to ``results`` and printed as they
    come. At stride 16 or 8 our backbone at stride 32, with the same weights, is timed in every
    case beside the dilated peers (its row ``STRIDE_32``)."""
    device = args.device
    label = arch_label(arch, output_stride)
    peers = build_peers(arch, args.version, output_stride=output_stride)
    ours = peers['convnext_backbone']  # the reference, timed or not (FLOPs, floor)
    references = {}
    if output_stride != 32:
        references[STRIDE_32] = ConvNeXt(arch, version=args.version)
        references[STRIDE_32].load_state_dict(ours.state_dict())
    if args.peers:
        peers = {k: v for k, v in peers.items() if k in args.peers}
    optimized = optimize_for_inference(ours) if 'eval' in args.modes else None
    models = {ours, *peers.values(), *references.values(), *([optimized] if optimized else [])}
    for model in models:
        model.to(device)
    diffs = max_relative_difference(dict(peers, convnext_backbone=ours,
                                         **({OPTIMIZED: optimized} if optimized else {})),
                                    device)
    results.setdefault('max_relative_difference', {})[label] = diffs
    print(f'{label}: max relative output difference to our model: {diffs}', flush=True)
    for size_text in args.sizes:
        for batch in args.batches:
            for mode in args.modes:
                for precision in args.precisions:
                    for memory_format in args.memory_formats:
                        # Input and every model in the case's layout (and back again).
                        layout = MEMORY_FORMATS[memory_format]
                        x = torch.randn(batch, 3, *_size(size_text), device=device).contiguous(
                            memory_format=layout)
                        for model in models:
                            model.to(memory_format=layout)
                        rows = run_case(peers, ours, x, mode=mode, amp=PRECISIONS[precision],
                                        warmup=args.warmup, repeats=args.repeats,
                                        compile_peers=args.compile, references=references,
                                        optimized=optimized)
                        case = dict(arch=arch, mode=mode, size=size_text, batch=batch,
                                    precision=precision_name(precision, memory_format),
                                    peers=rows)
                        if output_stride != 32:
                            case['output_stride'] = output_stride
                        if args.profile and mode == 'eval':
                            case['profile'] = profile_case(optimized, x, floor_model=ours,
                                                           forwards=args.repeats,
                                                           amp=PRECISIONS[precision])
                        results['cases'].append(case)
                        print(json.dumps(case), flush=True)
    if args.memory:  # at the largest size only: each case is a fresh process
        memory: List[dict] = results['memory']
        for size_text in args.sizes[-1:]:
            for peer in peers:
                plain, cp = (measure_memory(arch, args.version, peer, with_cp=with_cp,
                                            size=_size(size_text), batch=args.batches[0],
                                            device=device, output_stride=output_stride)
                             for with_cp in (False, True))
                memory.append(dict(arch=arch, size=size_text, batch=args.batches[0], peer=peer,
                                   plain=plain, with_cp=cp))
                if output_stride != 32:
                    memory[-1]['output_stride'] = output_stride
                print(json.dumps(memory[-1]), flush=True)

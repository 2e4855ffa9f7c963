"""The benchmark's report: ``results.json`` (everything measured) and ``results.md`` (a table).

The table has a row per peer (and compiled peer, and the matmul floor) per case: the median
and the spread (min-max) of the repeats (the floor's "median" is the sum of each of its
products' fastest times, ``floor.MatmulFloor``), the ratio to the fastest other peer of the
same kind (eager or compiled), the ratio to the case's matmul floor, the achieved GFLOP/s and its
fraction of the machine's matrix-product peak of the case's dtype, and the compile time of a
compiled row; then the peers' output differences and, with ``--memory``, the activation memory
table, and with ``--profile`` each eval case's account of our forward's time above its matmul
floor (``profile.account_markdown``), and with ``--output-strides`` the dilated cases against
stride 32. It reads nothing but the results dict, so that a saved ``results.json`` renders
again (``to_markdown(json.load(file))``).
"""
from __future__ import annotations

import json
import os
from typing import Dict

from .profile import account_markdown

# The row of our backbone at output stride 32 in a dilated case (same weights, timed with it).
STRIDE_32 = 'convnext_backbone at stride 32'


def arch_label(arch: str, output_stride: int = 32) -> str:
    """'tiny', or 'tiny, stride 16' for a dilated case."""
    return arch if output_stride == 32 else f'{arch}, stride {output_stride}'


def _ratio_to_fastest_peer(name: str, peers: Dict[str, dict]) -> str:
    """This row's time over the fastest other peer's of the same kind (eager or compiled)."""
    kind = peers[name]['kind']
    if kind in ('floor', 'reference'):
        return '-'
    others = [r['median_s'] for k, r in peers.items()
              if r['kind'] == kind and not k.startswith('convnext_backbone')]
    return f"{peers[name]['median_s'] / min(others):.2f}" if others else '-'


# The account's rows below this share of the forward are merged, per range, in the Markdown
# (results.json keeps them all).
ACCOUNT_MIN_SHARE = 0.005


def to_markdown(results: dict) -> str:
    """The Markdown report of ``results`` (as ``main`` returns and ``results.json`` holds)."""
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
        floor = next(r['median_s'] for r in peers.values() if r['kind'] == 'floor')
        peak = peaks.get(case['precision'].split()[0], peaks['fp32'])
        arch = arch_label(case['arch'], case.get('output_stride', 32))
        for name, r in peers.items():
            gflops = r['gflop'] / r['median_s']
            x_floor = '-' if r['kind'] == 'reference' else f"{r['median_s'] / floor:.2f}"
            lines.append(
                f"| {arch} | {case['mode']} | {case['size']} | {case['batch']} | "
                f"{case['precision']} | {name} | {r['median_s']:.3f} | {r['min_s']:.3f}-"
                f"{r['max_s']:.3f} | {_ratio_to_fastest_peer(name, peers)} | "
                f"{x_floor} | {gflops:.0f} | {100 * gflops / peak:.0f} | "
                + (f"{r['compile_s']:.1f} |" if 'compile_s' in r else '- |'))
    for arch, diffs in results.get('max_relative_difference', {}).items():
        lines.append(f'\n{arch}: eval outputs vs. our model, max relative '
                     'difference: ' + ', '.join(f'{k} {v:.1e}' for k, v in diffs.items()))
    compiled = [(case, name, r['max_relative_difference']) for case in results['cases']
                for name, r in case['peers'].items() if 'max_relative_difference' in r]
    if compiled:
        lines.append('\nCompiled eval outputs vs. our model at the case\'s input, '
                     'max relative difference: ' + ', '.join(
                         f"{arch_label(case['arch'], case.get('output_stride', 32))} "
                         f"{case['size']} {case['precision']} {name} {d:.1e}"
                         for case, name, d in compiled))
    for case in results['cases']:
        if 'profile' in case:
            account = case['profile']
            lines += ['', "Where our forward's time above the matmul floor goes: "
                      f"{arch_label(case['arch'], case.get('output_stride', 32))} "
                      f"{case['mode']} {case['size']}, batch {case['batch']}, "
                      f"{case['precision']} (torch.profiler; per forward; rows under "
                      f"{ACCOUNT_MIN_SHARE:.1%} of the forward merged per range):", '']
            lines += account_markdown(account,
                                      min_ms=ACCOUNT_MIN_SHARE * account['forward_ms'])
    if results.get('memory'):
        lines += ['', '| arch | input | batch | peer | train-step activations, peak MB | '
                  'with_cp MB | ratio |',
                  '|---|---|---|---|---|---|---|']
        for m in results['memory']:
            lines.append(f"| {arch_label(m['arch'], m.get('output_stride', 32))} | "
                         f"{m['size']} | {m['batch']} | {m['peer']} | "
                         f"{m['plain'] / 2**20:.0f} | {m['with_cp'] / 2**20:.0f} | "
                         f"{m['with_cp'] / m['plain']:.2f} |")
    lines += _stride_lines(results)
    return '\n'.join(lines) + '\n'


def _stride_lines(results: dict) -> list:
    """The dilated cases against stride 32: our time over our stride-32 model's (timed in the
    same case), over timm's dilated model's, and the train-step activations over stride 32's
    (the memory rows of the same peer)."""
    cases = [c for c in results['cases'] if c.get('output_stride', 32) != 32]
    if not cases:
        return []
    lines = ['', '| arch | mode | input | batch | precision | ours, x stride 32 | '
             "ours, x timm's dilated | train-step activations, x stride 32 |",
             '|---|---|---|---|---|---|---|---|']
    memory = {(m['arch'], m['size'], m['peer'], m.get('output_stride', 32)): m['plain']
              for m in results.get('memory', [])}
    for case in cases:
        peers, stride = case['peers'], case['output_stride']
        ours = peers['convnext_backbone']['median_s']
        timm = peers.get('timm', {}).get('median_s')
        kept = [memory.get((case['arch'], case['size'], 'convnext_backbone', s))
                for s in (stride, 32)]
        lines.append(
            f"| {arch_label(case['arch'], stride)} | {case['mode']} | {case['size']} | "
            f"{case['batch']} | {case['precision']} | "
            f"{ours / peers[STRIDE_32]['median_s']:.2f} | "
            + (f'{ours / timm:.2f}' if timm else '-') + ' | '
            + (f'{kept[0] / kept[1]:.2f}' if all(kept) else '-') + ' |')
    return lines


def write_reports(results: dict, *, out: str) -> str:
    """Write ``results.json`` and ``results.md`` into the folder ``out`` (made if need be);
    returns the Markdown."""
    markdown = to_markdown(results)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(markdown)
    return markdown

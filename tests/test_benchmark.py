"""The benchmark keeps working (tiny size, one repeat; no timing assertions): every peer, the
matmul floor, autocast and channels-last cases, the compiled rows."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from convnext_backbone import ConvNeXt

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))


def run_benchmark(tmp_path, *options):
    run = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--archs', 'atto', '--sizes', '64x96',
         '--batches', '1', '--repeats', '1', '--warmup', '0', '--out', str(tmp_path), *options],
        cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return (json.loads((tmp_path / 'results.json').read_text()),
            (tmp_path / 'results.md').read_text())


def test_benchmark_runs_and_writes_reports(tmp_path):
    # fp32/bf16 autocast and both layouts: the cases a CUDA run has by default, here on CPU
    results, markdown = run_benchmark(tmp_path, '--memory', '--precisions', 'fp32', 'bf16',
                                      '--memory-formats', 'contiguous', 'channels_last')
    assert results['machine']['matmul_peak_gflops'] > 0
    assert set(results['machine']['matmul_peak_gflops_by_dtype']) == {'fp32', 'bf16'}
    assert {c['mode'] for c in results['cases']} == {'eval', 'train'}
    assert {c['precision'] for c in results['cases']} == {
        'fp32', 'fp32 + channels_last', 'bf16 autocast', 'bf16 autocast + channels_last'}
    for case in results['cases']:
        assert set(case['peers']) == {'convnext_backbone', 'timm', 'mmpretrain', 'matmul floor'}
        assert all(p['gflop'] > 0 and p['median_s'] > 0 for p in case['peers'].values())
        assert case['peers']['matmul floor']['kind'] == 'floor'
    assert len(results['memory']) == 3
    assert '| x matmul floor |' in markdown
    assert '| atto | eval | 64x96 | 1 | fp32 | convnext_backbone |' in markdown
    assert '| atto | train | 64x96 | 1 | bf16 autocast + channels_last | matmul floor |' in markdown


@pytest.mark.slow  # inductor compiles C++ (atto, one peer: about 20 s on 2 cores, more if busy)
def test_benchmark_compiles_every_peer_on_cpu(tmp_path):
    results, markdown = run_benchmark(tmp_path, '--modes', 'eval', '--peers',
                                      'convnext_backbone', 'timm', '--compile',
                                      '--keep-freed-memory')
    assert 'freed memory kept' in results['machine']['allocator']
    (case, ) = results['cases']
    assert set(case['peers']) == {'convnext_backbone', 'convnext_backbone (compiled)', 'timm',
                                  'timm (compiled)', 'matmul floor'}
    for name in ('convnext_backbone (compiled)', 'timm (compiled)'):
        row = case['peers'][name]
        assert row['kind'] == 'compiled' and row['compile_s'] > 0
        # the compiled path computes what the plain path does
        assert row['max_relative_difference'] < 1e-5
    assert '| atto | eval | 64x96 | 1 | fp32 | timm (compiled) |' in markdown


def test_matmul_floor_runs_the_models_own_linear_products():
    """The floor's products are exactly our forward's addmm calls (those of the blocks'
    pwconv1/pwconv2): the same count and FLOPs; a train step adds two backward products each."""
    from benchmark import MatmulFloor
    model = ConvNeXt('atto').eval()
    x = torch.randn(2, 3, 64, 96)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    addmm_flops = counter.get_flop_counts()['Global'][torch.ops.aten.addmm]
    floor = MatmulFloor(model, x, 'eval', None)
    assert len(floor.calls) == 2 * sum(model.depths)
    assert floor.flops == addmm_flops
    floor.step()
    train = MatmulFloor(model.train(), x, 'train', torch.bfloat16)
    assert len(train.calls) == 6 * sum(model.depths) and train.flops == 3 * addmm_flops
    assert model.training  # left as it was
    train.step()


def test_cuda_defaults_are_every_precision_and_layout():
    from benchmark import parse_args
    cuda = parse_args(['--device', 'cuda'])
    assert cuda.precisions == ['fp32', 'bf16', 'fp16']
    assert cuda.memory_formats == ['contiguous', 'channels_last']
    cpu = parse_args(['--device', 'cpu'])
    assert cpu.precisions == ['fp32'] and cpu.memory_formats == ['contiguous']


def test_keep_freed_memory_applies_in_a_fresh_process():
    run = subprocess.run([sys.executable, '-c', 'import benchmark; benchmark.keep_freed_memory()'],
                         cwd=osp.join(ROOT, 'tools'), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


def test_cpu_peak_allocated_follows_torch_allocations():
    from benchmark import cpu_peak_allocated

    def step():
        a = torch.empty(4 << 20, dtype=torch.uint8)   # 4 MiB
        b = torch.empty(8 << 20, dtype=torch.uint8)   # 12 MiB live
        del a
        c = torch.empty(6 << 20, dtype=torch.uint8)   # 14 MiB live: the peak
        del b, c

    peak = cpu_peak_allocated(step)
    assert 14 << 20 <= peak < (14 << 20) + (1 << 16)

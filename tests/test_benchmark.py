"""The benchmark keeps working (tiny size, one repeat; no timing assertions)."""
import json
import os.path as osp
import subprocess
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_benchmark_runs_and_writes_reports(tmp_path):
    run = subprocess.run(
        [sys.executable, 'tools/benchmark.py', '--archs', 'atto', '--sizes', '64x96',
         '--batches', '1', '--repeats', '1', '--warmup', '0', '--memory', '--out',
         str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['machine']['matmul_peak_gflops'] > 0
    assert {c['mode'] for c in results['cases']} == {'eval', 'train'}
    for case in results['cases']:
        assert set(case['peers']) == {'convnext_backbone', 'timm', 'mmpretrain'}
        assert all(p['gflop'] > 0 and p['median_s'] > 0 for p in case['peers'].values())
    assert len(results['memory']) == 3
    markdown = (tmp_path / 'results.md').read_text()
    assert '| atto | eval | 64x96 | 1 | fp32 | convnext_backbone |' in markdown


def test_cpu_peak_allocated_follows_torch_allocations():
    sys.path.insert(0, osp.join(ROOT, 'tools'))
    from benchmark import cpu_peak_allocated

    def step():
        a = torch.empty(4 << 20, dtype=torch.uint8)   # 4 MiB
        b = torch.empty(8 << 20, dtype=torch.uint8)   # 12 MiB live
        del a
        c = torch.empty(6 << 20, dtype=torch.uint8)   # 14 MiB live: the peak
        del b, c

    peak = cpu_peak_allocated(step)
    assert 14 << 20 <= peak < (14 << 20) + (1 << 16)

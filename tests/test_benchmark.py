"""The benchmark keeps working (tiny size, one repeat; no timing assertions)."""
import json
import os.path as osp
import subprocess
import sys

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

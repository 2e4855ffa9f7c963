"""tools/gpu_check.sh, the prepared GPU run, rehearsed on CPU: every step that needs no GPU
runs on tiny sizes and leaves its results in $OUT, the rest are skipped with their reasons, and
a step over its budget is stopped, said, and the run goes on to the summary."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from .helpers import ROOT

GPU_ONLY = ('mmcv_build', 'benchmark_base', 'benchmark_compiled')


def rehearse(out, **env):
    return subprocess.run(['bash', osp.join(ROOT, 'tools', 'gpu_check.sh')], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, 'OUT': str(out), 'PYTHON': sys.executable,
                               'GPU_CHECK_REHEARSE': '1', 'OMP_NUM_THREADS': '1', **env})


def summary(out):
    """{step: status} of the run's summary.tsv."""
    with open(out / 'summary.tsv') as f:
        return dict(line.split('\t')[:2] for line in f)


@pytest.mark.slow
def test_rehearsal_runs_every_cpu_step(tmp_path):
    out = tmp_path / 'results'
    run = rehearse(out)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    status = summary(out)
    ran = ['benchmark_tiny', 'benchmark_memory', 'startup_check', 'demo_amp', 'onnx',
           'detector_speed']
    assert all(status[s] == 'ok' for s in ran), status
    assert all(status[s].startswith('skipped: ') for s in GPU_ONLY), status
    has_wheels = any(n.endswith('.whl') for n in os.listdir(osp.join(ROOT, '.whl'))) \
        if osp.isdir(osp.join(ROOT, '.whl')) else False
    # With .whl/ the carried mmengine imports from the install target (the step checks it).
    assert status['install'] == ('ok' if has_wheels else
                                 'skipped: no .whl/ here (run bash tools/gpu_wheels.sh first)')
    cases = json.loads((out / 'benchmark_tiny' / 'results.json').read_text())['cases']
    assert {(c['mode'], c['arch']) for c in cases} == {('eval', 'atto'), ('train', 'atto')}
    memory = json.loads((out / 'benchmark_memory' / 'results.json').read_text())['memory']
    assert memory and memory[0]['plain'] and memory[0]['with_cp']
    torch_ap = json.loads((out / 'demo_amp_metrics.json').read_text())
    onnx_ap = json.loads((out / 'onnx_metrics.json').read_text())
    assert {'bbox_mAP', 'segm_mAP'} <= set(torch_ap) and torch_ap.keys() == onnx_ap.keys()
    speed = (out / 'detector_speed.log').read_text()
    assert '| configs/mask_rcnn_convnext_t.py | 800x800 | fp32 |' in speed  # the test resize
    assert '| configs/upernet_convnext_t.py | 64x64 | fp32 |' in speed
    table = (out / 'summary.md').read_text()
    assert table in run.stdout and all(f'| {s} |' in table for s in status)


def test_overrun_is_stopped_and_said(tmp_path):
    """A total of 12 s and a Python that takes a minute to start: the first step that runs is
    stopped at what is left, the later ones are skipped for want of time, the summary still
    comes and the exit status is 1 (on any machine: no step's speed decides it)."""
    out = tmp_path / 'results'
    slow_python = tmp_path / 'slow_python'
    slow_python.write_text(f'#!/bin/sh\nsleep 60\nexec {sys.executable} "$@"\n')
    slow_python.chmod(0o755)
    run = rehearse(out, GPU_CHECK_TOTAL_S='12', PYTHON=str(slow_python))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    status = summary(out)
    assert any(s.startswith('stopped at its budget') for s in status.values()), status
    assert status['demo_amp'] == 'skipped: no time left of the total', status
    assert '| step | status | seconds | results |' in run.stdout

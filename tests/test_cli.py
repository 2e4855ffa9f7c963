"""What the tools check before building anything: that mmcv's compiled ops can run on the run's
device (the GPU case simulated on this CPU machine)."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from convnext_backbone.cli import check_mmcv_ops
from convnext_backbone.errors import DeviceError

from .helpers import ROOT

DETECTOR = osp.join(ROOT, 'configs', 'mask_rcnn_convnext_t.py')
SEGMENTOR = osp.join(ROOT, 'configs', 'upernet_convnext_t.py')
MASK2FORMER = osp.join(ROOT, 'configs', 'mask2former_convnext_t.py')


@pytest.fixture
def gpu_machine(monkeypatch):
    """torch sees a GPU; mmcv's ops are this machine's (compiled without CUDA)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *_: 'NVIDIA H200')


def test_cpu_built_mmcv_on_a_gpu_run_is_refused_at_start(gpu_machine):
    from mmcv.ops import get_compiling_cuda_version
    assert get_compiling_cuda_version() == 'not available'  # this machine's build
    with pytest.raises(DeviceError, match=r"This run uses CUDA \(NVIDIA H200\), but mmcv 2.1.0 "
                       r"was compiled without it .*'not available'.*RoIAlign and NMS would fail "
                       r'at its first step. Run tools/setup_env.sh on this machine'):
        check_mmcv_ops(Config.fromfile(DETECTOR), 'cuda')
    with pytest.raises(DeviceError, match=r"compiled without it .*: the pixel decoder's "
                       r'multi-scale deformable attention would fail at its first step'):
        check_mmcv_ops(Config.fromfile(MASK2FORMER), 'cuda')
    with pytest.raises(DeviceError, match=r"compiled without it .*: the transformer's "
                       r'multi-scale deformable attention would fail at its first step'):
        check_mmcv_ops(Config.fromfile(osp.join(ROOT, 'configs/dino_4scale_convnext_t_12e.py')),
                       'cuda')


def test_what_can_run_passes(gpu_machine, monkeypatch):
    check_mmcv_ops(Config.fromfile(DETECTOR), 'cpu')  # a CPU run on the GPU machine
    check_mmcv_ops(Config.fromfile(SEGMENTOR), 'cuda')  # UPerNet needs no compiled op
    check_mmcv_ops(Config.fromfile(MASK2FORMER), 'cpu')  # deformable attention in torch
    cascade = Config.fromfile(SEGMENTOR)  # a list of decode heads (CascadeEncoderDecoder)
    cascade.model.decode_head = [dict(type='FCNHead'), dict(type='OCRHead')]
    check_mmcv_ops(cascade, 'cuda')
    cascade.model.decode_head[1] = dict(type='mmdet.Mask2FormerHead')
    with pytest.raises(DeviceError, match='multi-scale deformable attention would fail'):
        check_mmcv_ops(cascade, 'cuda')
    import mmcv.ops
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: '13.0')
    check_mmcv_ops(Config.fromfile(DETECTOR), 'cuda')  # a CUDA build


def test_missing_ops_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, 'mmcv.ops', None)  # mmcv-lite, or ops built for another torch
    with pytest.raises(DeviceError, match='Detection configs need mmcv with its compiled ops'):
        check_mmcv_ops(Config.fromfile(DETECTOR), 'cpu')
    with pytest.raises(DeviceError, match=r'Mask2Former configs need mmcv with its compiled '
                       r'ops \(multi-scale deformable attention\)'):
        check_mmcv_ops(Config.fromfile(MASK2FORMER), 'cpu')


@pytest.mark.parametrize('tool', ['train.py', 'test.py'])
def test_tools_stop_before_building_anything(tmp_path, tool):
    """The whole tool on a simulated GPU machine: exit 1 with the fix, no work dir made."""
    simulate = ('import sys, runpy, torch; torch.cuda.is_available = lambda: True; '
                'torch.cuda.get_device_name = lambda *a: "NVIDIA H200"; '
                'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')
    args = [osp.join(ROOT, 'tools', tool), DETECTOR, '--work-dir', str(tmp_path / 'work')]
    if tool == 'test.py':
        args.insert(2, str(tmp_path / 'any.pth'))
    run = subprocess.run([sys.executable, '-c', simulate, *args], cwd=tmp_path,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 1, run.stderr[-3000:]
    assert 'error: This run uses CUDA (NVIDIA H200), but mmcv 2.1.0 was compiled without it' \
        in run.stderr and 'Traceback' not in run.stderr
    assert not (tmp_path / 'work').exists()


@pytest.mark.parametrize('keep', [False, True])
def test_keep_freed_memory_keeps_a_freed_activation_mapped(keep):
    """A freed 200 MB tensor leaves the process's resident memory unless the memory is kept
    (then the next forward reuses mapped pages instead of faulting fresh ones in)."""
    script = f"""
import torch
from convnext_backbone.cli import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])
x = torch.ones(50 << 20)  # 200 MB, written
before = rss()
del x
print(before - rss())
"""
    run = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr[-2000:]
    released_kb = int(run.stdout.split()[-1])
    assert (released_kb < 10_000) if keep else (released_kb > 150_000), released_kb


@pytest.mark.parametrize('script,args,expected', [
    ('dist_train.sh', ['cfg.py', '2', '--amp'], '--nproc_per_node=2 {tools}/train.py cfg.py --amp'),
    ('dist_test.sh', ['cfg.py', 'ck.pth', '4'], '--nproc_per_node=4 {tools}/test.py cfg.py ck.pth'),
])
def test_dist_scripts_run_torchrun_on_the_tool(tmp_path, script, args, expected):
    fake = tmp_path / 'python'  # prints what torchrun would be called with
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    run = subprocess.run(['bash', osp.join(ROOT, 'tools', script), *args], capture_output=True,
                         text=True, env=dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}'),
                         check=True)
    assert run.stdout.startswith('-m torch.distributed.run --nnodes=1 --node_rank=0')
    assert expected.format(tools=osp.join(ROOT, 'tools')) in run.stdout
    assert run.stdout.rstrip().endswith('--launcher pytorch')

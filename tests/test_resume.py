"""Exact resume (docs/training.md, "Preemption and exact resume"): a run killed at a random
iteration, or preempted by a signal, and resumed ends with the weights, optimizer state and
logged losses of the run that was never interrupted, bitwise; checkpoints cannot tear."""
import glob
import json
import os
import os.path as osp
import random
import re
import subprocess
import sys

import pytest
import torch

from convnext_backbone.checkpoints import allow_mmengine_checkpoints
from convnext_backbone.data.demo import make_ade_shapes, make_coco_shapes
from convnext_backbone.engine import PREEMPTED_EXIT_CODE

from .helpers import ADE_DEMO, COCO_DEMO, ROOT

# Stochastic depth on, workers persistent, no validation (not what is compared), every loss
# logged, a checkpoint every few iterations as one preempted inside epochs would keep.
DETECTION = """
custom_imports = dict(imports=['convnext_backbone', 'tests.probe_hooks'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='SignalAtIterationHook')]
data_root = '{data}/'
model = dict(backbone=dict(drop_path_rate=0.2))
train_dataloader = dict(batch_size=2, num_workers=1, persistent_workers=True,
                        dataset=dict(data_root=data_root))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_epochs=3)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=3, by_epoch=True, milestones=[2],
                        gamma=0.1)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=2))
"""
SEGMENTATION = """
custom_imports = dict(imports=['convnext_backbone', 'tests.probe_hooks'],
                      allow_failed_imports=False)
custom_hooks = [dict(type='SignalAtIterationHook')]
data_root = '{data}/ADEChallengeData2016'
model = dict(backbone=dict(drop_path_rate=0.2))
train_dataloader = dict(batch_size=2, num_workers=1, persistent_workers=True,
                        dataset=dict(data_root=data_root))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_dataloader = None
test_cfg = None
test_evaluator = None
train_cfg = dict(max_iters=7, val_interval=1000)
param_scheduler = [dict(type='PolyLR', power=1.0, begin=0, end=7, eta_min=0.0, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=3, max_keep_ckpts=2))
"""


def _config(tmp_path, base, body, data):
    path = tmp_path / 'config.py'
    path.write_text(f"_base_ = ['{base}']\n" + body.format(data=data))
    return str(path)


def _train(tmp_path, cfg, work, *extra, signal_at=None, nproc=1, returncode=0):
    """tools/train.py in a session of its own (a signal to its process group reaches its
    workers, not pytest); ``signal_at=(iteration, name)`` sends it from inside the run."""
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), cfg, '--work-dir', str(work),
           *extra]
    if nproc > 1:
        cmd[1:1] = ['-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
                    '--master_port=29541']
        cmd += ['--launcher', 'pytorch']
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    if signal_at:
        env.update(SIGNAL_AT_ITERATION=str(signal_at[0]), SIGNAL_NAME=signal_at[1])
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                         start_new_session=True, env=env)
    assert run.returncode == returncode, run.stdout[-3000:] + run.stderr[-4000:]
    return run.stdout + run.stderr


def _logged_losses(work):
    """{iteration: {loss key: value}} of every run logged in the work dir (later runs win)."""
    losses = {}
    for path in sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                entry = json.loads(line)
                if 'loss' in entry:
                    losses[entry['iter']] = {k: v for k, v in entry.items() if 'loss' in k}
    return losses


def _assert_same_end(work, reference, final, every_iteration_logged=True):
    allow_mmengine_checkpoints()
    ours, theirs = torch.load(work / final), torch.load(reference / final)
    for key, value in theirs['state_dict'].items():
        assert torch.equal(ours['state_dict'][key], value), key
    for key, state in theirs['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(ours['optimizer']['state'][key][name]),
                               torch.as_tensor(value)), (key, name)
    logged, expected = _logged_losses(work), _logged_losses(reference)
    if every_iteration_logged:
        assert logged.keys() == expected.keys()
    assert logged and all(expected[i] == losses for i, losses in logged.items())


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    data = tmp_path_factory.mktemp('coco')
    make_coco_shapes(str(data), num_train=8, num_val=2, size=96, seed=4)
    return data


@pytest.fixture(scope='module')
def detection_reference(coco, tmp_path_factory):
    """The uninterrupted run: 3 epochs of 4 iterations."""
    tmp = tmp_path_factory.mktemp('reference')
    cfg = _config(tmp, COCO_DEMO, DETECTION, coco)
    _train(tmp, cfg, tmp / 'work')
    return cfg, tmp / 'work'


def test_detection_killed_then_preempted_resumes_bitwise(tmp_path, detection_reference):
    """Killed (SIGKILL) at a seeded random iteration inside an epoch: resumed from the last
    iteration checkpoint; then SIGTERM to the process group later on: saved, exit status 75,
    resumed again. The end equals the uninterrupted run's."""
    cfg, reference = detection_reference
    work = tmp_path / 'work'
    kill_at = random.Random(27).randint(4, 6)  # past the first checkpoint (iteration 3)
    _train(tmp_path, cfg, work, signal_at=(kill_at, 'SIGKILL'), returncode=-9)
    out = _train(tmp_path, cfg, work, '--resume', signal_at=(kill_at + 3, 'SIGTERM'),
                 returncode=PREEMPTED_EXIT_CODE)
    assert f'stopped after iteration {kill_at + 3}' in out, out[-2000:]
    assert (work / 'last_checkpoint').read_text() == str(work / f'iter_{kill_at + 3}.pth')
    _train(tmp_path, cfg, work, '--resume')
    _assert_same_end(work, reference, 'iter_12.pth')


def test_segmentation_killed_resumes_bitwise(tmp_path):
    """Iteration-based (mmseg's InfiniteSampler): killed at a seeded random iteration,
    resumed, equal to the uninterrupted run."""
    make_ade_shapes(str(tmp_path / 'ade'), num_train=8, num_val=2, size=64, seed=5)
    cfg = _config(tmp_path, ADE_DEMO, SEGMENTATION, tmp_path / 'ade')
    _train(tmp_path, cfg, tmp_path / 'reference')
    work = tmp_path / 'work'
    kill_at = random.Random(28).randint(4, 6)
    _train(tmp_path, cfg, work, signal_at=(kill_at, 'SIGKILL'), returncode=-9)
    _train(tmp_path, cfg, work, '--resume')
    _assert_same_end(work, tmp_path / 'reference', 'iter_7.pth')


def test_torn_newest_checkpoint_is_passed_over_said(tmp_path, detection_reference):
    """The newest checkpoint cut short (a copy torn as a crash mid-write would have left it
    without the atomic rename): ``--resume`` says so and resumes from the one before, still
    ending equal; ``--resume`` of the torn file refuses, naming the readable one."""
    cfg, reference = detection_reference
    work = tmp_path / 'work'
    work.mkdir()
    for name in ('iter_9.pth', 'iter_12.pth'):
        (work / name).write_bytes((reference / name).read_bytes())
    torn = work / 'iter_12.pth'
    torn.write_bytes(torn.read_bytes()[:torn.stat().st_size // 2])
    (work / 'last_checkpoint').write_text(str(torn))
    refused = _train(tmp_path, cfg, work, '--resume', str(torn), returncode=1)
    assert f'Cannot resume from {torn}' in refused and str(work / 'iter_9.pth') in refused
    out = _train(tmp_path, cfg, work, '--resume')
    assert f'Resuming from {work / "iter_9.pth"}: the newer {torn} cannot be read' in out
    _assert_same_end(work, reference, 'iter_12.pth', every_iteration_logged=False)


@pytest.mark.slow
def test_two_process_run_killed_resumes_bitwise(tmp_path, coco):
    """torchrun, 2 processes (gloo): the ranks stay identical; killed at a seeded random
    iteration, resumed on 2, equal to the uninterrupted 2-process run (each rank's random
    streams came back). Then the finished run goes on for an epoch on one process: an epoch
    twice as long, the schedule, the layer-decay groups and Adam's state continued."""
    body = DETECTION.replace('batch_size=2', 'batch_size=1').replace(
        "[dict(type='SignalAtIterationHook')]",
        "[dict(type='SignalAtIterationHook'), dict(type='SaveRankWeightsHook')]")
    cfg = _config(tmp_path, COCO_DEMO, body, coco)
    reference = tmp_path / 'reference'
    _train(tmp_path, cfg, reference, nproc=2)
    ranks = [torch.load(reference / f'weights_rank{rank}.pth') for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    work = tmp_path / 'work'
    kill_at = random.Random(29).randint(4, 11)
    _train(tmp_path, cfg, work, signal_at=(kill_at, 'SIGKILL'), nproc=2, returncode=1)
    _train(tmp_path, cfg, work, '--resume', nproc=2)
    _assert_same_end(work, reference, 'iter_12.pth')

    # 8 images, batch 1: 4 iterations per epoch on 2 processes, 8 on one.
    first = torch.load(reference / 'iter_12.pth')
    out = _train(tmp_path, cfg, reference, '--resume', '--cfg-options', 'train_cfg.max_epochs=4',
                 'default_hooks.checkpoint.by_epoch=True', 'default_hooks.checkpoint.interval=1')
    second = torch.load(reference / 'epoch_4.pth')
    assert first['meta']['epoch_position'] == [4, 4] and second['meta']['iter'] == 12 + 8
    groups1 = first['optimizer']['param_groups']
    groups2 = second['optimizer']['param_groups']
    assert [g['group_name'] for g in groups1] == [g['group_name'] for g in groups2]
    assert len(groups1) > 4  # the layer-decay groups, not one default group
    for g1, g2 in zip(groups1, groups2):  # milestone 2 had passed when epoch 3 ended
        assert g1['lr'] == g2['lr'] == pytest.approx(0.1 * g1['initial_lr'], rel=1e-9)
        assert g2['initial_lr'] == g1['initial_lr']
    # The scheduler went on from its saved step; a restarted one would have run epoch 4 at the
    # initial lr (the log gives the first group's).
    assert [s['_global_step'] for s in second['param_schedulers']] == [4]
    epoch4_lr = re.findall(r'Epoch\(train\) \[4\]\[8/8\].*? lr: (\S+)', out)
    assert epoch4_lr and float(epoch4_lr[0]) == pytest.approx(0.1 * groups1[0]['initial_lr'],
                                                              rel=1e-4), epoch4_lr
    state1, state2 = first['optimizer']['state'], second['optimizer']['state']
    assert state1.keys() == state2.keys()
    assert all(float(state2[k]['step']) == float(state1[k]['step']) + 8 for k in state1)

"""What a training checkpoint needs beyond mmengine's to resume exactly, and saving on a
preemption signal. ``CheckpointCheckingRunner`` registers both hooks in every run.

- ``RandomStateHook``: every rank's random streams (``randomness.random_states``) go into each
  checkpoint as ``random_states`` (gathered by ``CheckpointCheckingRunner.save_checkpoint`` on
  all ranks: only rank 0 writes); a resumed run puts its rank's back just before its first
  iteration, so stochastic depth and the proposal samplers draw what the uninterrupted run drew.
  An epoch-based run also saves where in its epoch it stood (``meta.epoch_position``: batches
  trained, batches in the epoch), where the resumed loop starts.
- ``PreemptionHook``: SIGTERM, or SIGUSR1 (what SLURM sends ahead of a kill with
  ``--signal``), makes the run finish its current iteration, save ``iter_N.pth`` (all ranks
  agree on the iteration), point ``last_checkpoint`` at it and end with ``TrainingPreempted``:
  ``tools/train.py`` then exits with ``PREEMPTED_EXIT_CODE`` and ``--resume`` continues.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .loops import PREEMPTION_SIGNALS
from .randomness import set_random_states

# sysexits' EX_TEMPFAIL: "a temporary failure; the user is invited to retry" (requeue).
PREEMPTED_EXIT_CODE = 75
RANDOM_STATES_KEY = 'random_states'
# meta key: [batches trained, batches in the epoch] of the epoch the checkpoint resumes in
POSITION_KEY = 'epoch_position'


class TrainingPreempted(Exception):
    """The run stopped on a preemption signal, after saving where it stood."""


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Each checkpoint carries every rank's random streams; a resumed run restores its own."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        states = getattr(runner, 'gathered_random_states', None)
        if states is not None:
            checkpoint[RANDOM_STATES_KEY] = states
        loop = runner.train_loop
        if hasattr(loop, 'position'):
            checkpoint['meta'][POSITION_KEY] = list(loop.position(checkpoint['meta']))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, 'is_resuming', False):
            self._pending = checkpoint
            position = checkpoint['meta'].get(POSITION_KEY)
            if position is not None and hasattr(runner.train_loop, 'resumed_position'):
                runner.train_loop.resumed_position = tuple(position)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        checkpoint, self._pending = self._pending, None
        if checkpoint is None:
            return
        states = checkpoint.get(RANDOM_STATES_KEY)
        if states is None:
            print_log('The checkpoint holds no random streams (not written by this package): '
                      'the resumed run draws new ones, so it will not repeat the '
                      'uninterrupted run exactly', logger='current', level=logging.WARNING)
        elif len(states) != get_world_size():
            print_log(f'The checkpoint was written by {len(states)} processes, this run has '
                      f'{get_world_size()}: the random streams start anew, so the resumed run '
                      'will not repeat the uninterrupted one exactly', logger='current',
                      level=logging.WARNING)
        else:
            set_random_states(states[get_rank()])


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM / SIGUSR1: finish the iteration, save it, stop (``TrainingPreempted``)."""

    priority = 'LOWEST'  # after the CheckpointHook, which may have saved this iteration already

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous = {}

    def before_train(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers in the main thread only
        for signum in PREEMPTION_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._receive)

    def _receive(self, signum, frame) -> None:
        self.received = signum  # only a flag: the iteration in progress finishes first

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._agreed_stop():
            return
        filename = f'iter_{runner.iter + 1}.pth'
        if getattr(runner, 'last_saved_iter', None) != runner.iter + 1:
            runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
        path = runner.point_last_checkpoint(filename)
        name = signal.Signals(self.received).name if self.received else 'another rank'
        raise TrainingPreempted(
            f'{name} received: stopped after iteration {runner.iter + 1}, saved as {path}; '
            'continue with tools/train.py CONFIG --resume (the same --work-dir)')

    def _agreed_stop(self) -> bool:
        """Whether any rank was signalled: every rank stops after the same iteration, or the
        checkpoint's collectives would wait for a rank that went on."""
        stop = self.received is not None
        if is_distributed():
            flag = torch.tensor([int(stop)])
            all_reduce(flag, op='max')
            stop = bool(flag.item())
        return stop

    def after_train(self, runner) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

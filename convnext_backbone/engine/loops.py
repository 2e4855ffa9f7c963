"""mmengine's training loops, resumable to the iteration: a run resumed from any checkpoint
(an epoch's end, or an iteration inside an epoch) draws the same batches, augmented the same
way, as the run that was never interrupted.

mmengine's ``EpochBasedTrainLoop`` restarts an interrupted epoch from its first batch, and its
``IterBasedTrainLoop`` skips the trained iterations by loading (and dropping) every batch of
them; both leave augmentation to the workers' random streams, which re-created workers
re-seed. Here the training data loader is rebuilt around two wrappers: ``ResumableBatchSampler``
numbers every sample it hands out (epoch, position) and can start an epoch after its first
batches without loading them; ``SeededSamples`` runs each sample's pipeline seeded by that
number (``randomness.sample_seed``). ``CheckpointCheckingRunner`` builds these loops in place
of mmengine's two.
"""
from __future__ import annotations

import ctypes
import signal
import sys
from functools import partial
from typing import Iterator, List, NamedTuple, Optional, Tuple

from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_rank
from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from torch.utils.data import DataLoader, Dataset

from .randomness import sample_seed, seeded


class SampleKey(NamedTuple):
    """A sample as ``ResumableBatchSampler`` hands it out: its index in the dataset and where
    this rank drew it (the epoch, the sample's position in it)."""
    index: int
    epoch: int
    position: int


class SeededSamples(Dataset):
    """The dataset, each ``SampleKey``'s pipeline run with the random streams seeded from the
    run's seed, the rank and the key's (epoch, position); plain indices pass through. Other
    attributes (``metainfo``, ``get_data_info``, ``pipeline``...) are the dataset's, read and
    set, so hooks that switch pipelines reach it."""

    _own = ('dataset', 'seed', 'rank')

    def __init__(self, dataset: Dataset, seed: int, rank: int) -> None:
        object.__setattr__(self, 'dataset', dataset)
        object.__setattr__(self, 'seed', seed)
        object.__setattr__(self, 'rank', rank)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        if not isinstance(key, SampleKey):
            return self.dataset[key]
        with seeded(sample_seed(self.seed, self.rank, key.epoch, key.position)):
            return self.dataset[key.index]

    def __getattr__(self, name: str):
        if name in SeededSamples._own:  # not set yet (unpickling in a spawned worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __setattr__(self, name: str, value) -> None:
        if name in SeededSamples._own:
            object.__setattr__(self, name, value)
        else:
            setattr(self.dataset, name, value)


class ResumableBatchSampler:
    """The batch sampler's batches as lists of ``SampleKey``. ``start_epoch(epoch, skip)``
    makes the next pass epoch ``epoch`` and drops its first ``skip`` batches as indices (the
    inner sampler is asked for them, nothing is loaded); a pass without it is the next epoch.
    ``sampler`` is the inner sampler, where ``DistSamplerSeedHook`` sets the shuffling
    epoch."""

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler
        self.sampler = batch_sampler.sampler
        self._epoch = -1
        self._skip = 0

    def start_epoch(self, epoch: int, skip: int = 0) -> None:
        self._epoch, self._skip = epoch - 1, skip  # __iter__ steps to epoch

    def __iter__(self) -> Iterator[List[SampleKey]]:
        self._epoch += 1
        epoch, skip, self._skip = self._epoch, self._skip, 0
        position = 0
        for i, batch in enumerate(self.batch_sampler):
            if i >= skip:
                yield [SampleKey(index, epoch, position + j) for j, index in enumerate(batch)]
            position += len(batch)

    def __len__(self) -> int:
        return len(self.batch_sampler)


def resumable_dataloader(loader: DataLoader, seed: Optional[int]) -> DataLoader:
    """``loader`` (not started) rebuilt around ``SeededSamples`` and ``ResumableBatchSampler``;
    its workers ignore the preemption signals, which the main process handles for them."""
    num_workers = loader.num_workers
    return DataLoader(
        SeededSamples(loader.dataset, seed or 0, get_rank()),
        batch_sampler=ResumableBatchSampler(loader.batch_sampler),
        num_workers=num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        timeout=loader.timeout, worker_init_fn=partial(_init_worker, loader.worker_init_fn),
        multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if num_workers else None,
        persistent_workers=loader.persistent_workers, pin_memory_device=loader.pin_memory_device)


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _init_worker(init_fn, worker_id: int) -> None:
    # A scheduler signals the whole process group: a worker that died of it would fail the
    # main process's next batch before it could save.
    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # Nor may a worker outlive a main process killed outright (SIGKILL, out of memory): torch's
    # would stay, blocked flushing batches nobody reads. Linux kills it with its parent.
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if init_fn is not None:
        init_fn(worker_id)


def shut_down_workers(*iterators) -> None:
    """Stop the workers of these data-loader iterators now. At interpreter exit
    multiprocessing would stop them with SIGTERM, which they ignore (``_init_worker``), and
    wait for them forever."""
    for iterator in iterators:
        if hasattr(iterator, '_shutdown_workers'):  # torch's multi-process iterator
            iterator._shutdown_workers()


def _resumable(runner, dataloader) -> DataLoader:
    if isinstance(dataloader, dict):
        dataloader = runner.build_dataloader(
            dataloader, seed=runner.seed,
            diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
    return resumable_dataloader(dataloader, runner.seed)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes inside an epoch at the batch after the checkpoint's
    iteration (numbered as the uninterrupted run numbered it), with the same augmentation."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _resumable(runner, dataloader), *args, **kwargs)

    _batches = None  # the epoch's data-loader iterator
    _skip = 0  # batches of the next epoch trained before the checkpoint resumed from
    _epoch_first_iter = 0  # the run's iteration count when the current epoch began
    # (batches trained, batches in the epoch) of the resumed epoch when its checkpoint was
    # saved (``position``), set by RandomStateHook on resuming; None: derived from the
    # iteration count.
    resumed_position: Optional[Tuple[int, int]] = None

    def position(self, meta: dict) -> Tuple[int, int]:
        """Where in its epoch the checkpoint with this ``meta`` (mmengine's epoch and iter) was
        saved: (batches of that epoch trained, batches in it); (0, n) after an epoch's end.
        Saved in the checkpoint, since the iteration count alone says nothing once the epoch
        length changes (another number of processes)."""
        done = 0 if meta['epoch'] > self._epoch else meta['iter'] - self._epoch_first_iter
        return done, len(self.dataloader)

    def _resumed_batches(self) -> int:
        """Batches of the first epoch to skip: those trained before the checkpoint (none in a
        run that starts from scratch)."""
        length = len(self.dataloader)
        position, self.resumed_position = self.resumed_position, None
        if position is None:  # a checkpoint without it (mmengine's): epochs of equal length
            done, total = self._iter - self._epoch * length, length
        else:
            done, total = position
        if done == total:  # saved after the epoch's last batch: the epoch is over
            return length
        if total != length or not 0 <= done < length:
            raise RuntimeError(
                f'Cannot resume after batch {done} of epoch {self._epoch + 1}: the epoch has '
                f'{length} batches now, so the checkpoint was written for another dataset, '
                'batch size or number of processes. Resume from a checkpoint saved at the end '
                'of an epoch (epoch_N.pth), or with the setting it was written with.')
        return done

    def run(self):
        self._skip = self._resumed_batches()
        try:
            return super().run()
        finally:
            shut_down_workers(self._batches, getattr(self.dataloader, '_iterator', None))

    def run_epoch(self) -> None:
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        # > 0 after a resume inside the epoch; all of it after a preemption at its last batch
        done, self._skip = self._skip, 0
        self._epoch_first_iter = self._iter - done
        self.dataloader.batch_sampler.start_epoch(self._epoch, skip=done)
        self._batches = iter(self.dataloader)
        for idx, data_batch in enumerate(self._batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose resume skips the trained iterations' batches as indices
    (mmengine's loads every one of them), with the same augmentation afterwards."""

    def __init__(self, runner, dataloader, *args, **kwargs) -> None:
        super().__init__(runner, _resumable(runner, dataloader), *args, **kwargs)

    def run(self):
        try:
            return self._run()
        finally:
            shut_down_workers(self.dataloader_iterator._iterator)

    def _run(self):
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        # One pass of an InfiniteSampler is the whole run (mmseg's configs); a finite sampler's
        # passes are epochs 0, 1... as _InfiniteDataloaderIterator restarts it.
        sampler = self.dataloader.batch_sampler.sampler
        passes, skip = (0, self._iter) if isinstance(sampler, InfiniteSampler) else divmod(
            self._iter, len(self.dataloader))
        if isinstance(sampler, InfiniteSampler):
            # Its one stream of indices, which the loader's first iterator (made and dropped
            # by IterBasedTrainLoop.__init__) closed, from the start.
            sampler.indices = sampler._indices_of_rank()
        elif passes and hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(passes)
        self.dataloader.batch_sampler.start_epoch(passes, skip=skip)
        self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        self.dataloader_iterator._epoch = passes
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model

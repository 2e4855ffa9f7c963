"""The random streams a training run draws from, as state that a checkpoint can carry, and the
per-sample seeding that makes data augmentation independent of which worker drew what before.

A run draws random numbers in two places. The main process draws from torch's generators (CPU
and CUDA: stochastic depth, mmdet's proposal samplers), numpy's and Python's (hooks, a pipeline
run without workers): ``random_states`` / ``set_random_states`` save and restore all of them.
Data-loader workers run the augmentation pipelines; their streams are not state a checkpoint
could hold (re-created workers re-seed, persistent ones carry theirs on), so each sample's
pipeline runs ``seeded`` by ``sample_seed`` of (run seed, rank, epoch, position in the epoch):
the same sample at the same place of the same run draws the same numbers on any worker.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def sample_seed(seed: int, rank: int, epoch: int, position: int) -> int:
    """A 32-bit seed for one sample's pipeline: numpy's SeedSequence of the four numbers, so
    that nearby inputs give unrelated streams."""
    entropy = [seed % 2**32, rank, epoch, position]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's CPU generator seeded with ``seed`` inside, restored after:
    a pipeline run in the main process (``num_workers=0``) leaves the run's streams as they
    were. CUDA's generators are left alone (pipelines run on the CPU)."""
    saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.set_rng_state(saved[2])


def random_states() -> dict:
    """This process's random streams: Python's, numpy's, torch's CPU generator and, once CUDA
    is in use, every device's generator; as tensors and plain Python values, which torch loads
    with ``weights_only=True``."""
    numpy_state = np.random.get_state(legacy=False)
    states = dict(python=random.getstate(),
                  numpy=dict(numpy_state, state=dict(
                      key=torch.from_numpy(numpy_state['state']['key'].astype(np.int64)),
                      pos=numpy_state['state']['pos'])),
                  torch=torch.random.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: dict) -> None:
    """Put back what ``random_states`` returned (CUDA's where it was saved and is in use)."""
    random.setstate(_python_state(states['python']))
    numpy_state = states['numpy']
    np.random.set_state(dict(numpy_state, state=dict(
        key=numpy_state['state']['key'].numpy().astype(np.uint32),
        pos=numpy_state['state']['pos'])))
    torch.random.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _python_state(state) -> tuple:
    """``random.setstate`` takes (version, tuple of ints, gauss): a checkpoint round trip may
    have made the inner tuple a list."""
    version, internal, gauss = state
    return version, tuple(internal), gauss

"""mmengine's Runner with its checkpoints read through the whole-model loader
(``checkpoints.model``): exact for evaluation and resuming, checked for fine-tuning; and
training that resumes exactly (``loops``, ``preemption``) from checkpoints that cannot tear."""
from __future__ import annotations

import copy
import glob
import inspect
import logging
import os
import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmengine.dist import all_gather_object, is_main_process
from mmengine.logging import print_log
from mmengine.registry import DATASETS, RUNNERS
from mmengine.runner import Runner

from ..checkpoints.model import (ConvertedCheckpoint, bare_model, check_model_checkpoint,
                                 load_model_checkpoint, read_model_checkpoint)
from ..errors import CheckpointError
from .preemption import PreemptionHook, RandomStateHook
from .randomness import random_states

# mmengine's own loops, replaced by the ones that resume to the iteration (engine/loops.py).
RESUMABLE_LOOPS = {'EpochBasedTrainLoop': 'ResumableEpochBasedTrainLoop',
                   'IterBasedTrainLoop': 'ResumableIterBasedTrainLoop'}


def config_dataset_meta(dataset: dict) -> Optional[dict]:
    """The metainfo (classes, palette...) of a dataset config, without reading its annotations
    (``lazy_init``); None when it cannot be built. Needs the stack's default scope set (the
    Runner and the inferencers set it)."""
    dataset = copy.deepcopy(dataset)
    dataset['lazy_init'] = True
    try:
        return DATASETS.build(dataset).metainfo
    except TypeError:  # a wrapper (ConcatDataset, RepeatDataset...) that takes no lazy_init
        return None
    except FileNotFoundError:  # a metainfo file that is not there: the data check names it
        return None


@RUNNERS.register_module()
class CheckpointCheckingRunner(Runner):
    """mmengine's ``Runner``, but ``load_from`` and ``resume`` load through
    ``load_model_checkpoint`` instead of mmengine's lenient ``load_checkpoint``.

    Any published ConvNeXt layout is converted and checked before anything is copied:
    ``test()``/``val()`` need an exact fit, ``train()`` with ``load_from`` fine-tunes (class-
    specific layers of another number of classes are re-initialised and reported), ``resume``
    needs a training checkpoint of this package. ``load_from`` is read and checked when
    ``train()``/``val()``/``test()`` starts, so a misfit stops the run before any dataset or
    optimizer is built; that checked checkpoint is what ``load_or_resume`` then loads. The
    configs of this package select it with ``runner_type``, so upstream tools (``mim test``,
    mmdet's and mmseg's ``tools/``) build it too.
    """

    _purpose = 'eval'  # what load_checkpoint() loads for: set by train() / val() / test()
    _checked_load_from: Optional[ConvertedCheckpoint] = None
    _read_resume: Optional[Tuple[str, ConvertedCheckpoint]] = None  # read while choosing it
    gathered_random_states: Optional[List[dict]] = None  # every rank's, for the next save
    last_saved_iter: Optional[int] = None

    @property
    def is_resuming(self) -> bool:
        return self._purpose == 'resume'

    def register_hooks(self, default_hooks=None, custom_hooks=None) -> None:
        super().register_hooks(default_hooks, custom_hooks)
        present = {type(hook) for hook in self.hooks}
        for hook in (RandomStateHook, PreemptionHook):
            if hook not in present:
                self.register_hook(hook())

    def build_train_loop(self, loop):
        """mmengine's two training loops become the ones that resume to the iteration."""
        if isinstance(loop, dict):
            loop = copy.deepcopy(loop)
            if 'by_epoch' in loop and 'type' not in loop:
                loop['type'] = ('EpochBasedTrainLoop' if loop.pop('by_epoch')
                                else 'IterBasedTrainLoop')
            loop['type'] = RESUMABLE_LOOPS.get(loop.get('type'), loop.get('type'))
        return super().build_train_loop(loop)

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        """mmengine's, each loader with a generator of its own: starting a loader's iterator
        draws its workers' base seed, which from torch's global stream would shift the
        model's random numbers by every validation."""
        if isinstance(dataloader, dict) and 'generator' not in dataloader:
            dataloader = dict(dataloader, generator=torch.Generator().manual_seed(seed or 0))
        return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs) -> None:
        """mmengine's, called on every rank: gathers the ranks' random streams (a collective),
        then rank 0 writes ``filename`` whole or not at all (a temporary file in the same
        folder, flushed to disk, renamed), before ``last_checkpoint`` can name it."""
        self.gathered_random_states = all_gather_object(random_states())
        given = inspect.signature(Runner.save_checkpoint).bind(
            self, out_dir, filename, *args, **kwargs)
        given.apply_defaults()
        options = given.arguments
        self.last_saved_iter = self.iter if options['by_epoch'] else self.iter + 1
        local = not (options['backend_args'] or options['file_client_args']
                     or '://' in str(out_dir))
        if not is_main_process() or not local:
            return super().save_checkpoint(out_dir, filename, *args, **kwargs)
        part = f'{filename}.part-{os.getpid()}'
        try:
            super().save_checkpoint(out_dir, part, *args, **kwargs)
            _replace_durably(osp.join(out_dir, part), osp.join(out_dir, filename))
        finally:
            if osp.exists(osp.join(out_dir, part)):
                os.remove(osp.join(out_dir, part))

    def point_last_checkpoint(self, filename: str) -> str:
        """Make ``last_checkpoint`` name ``filename`` of the work dir (as mmengine's
        CheckpointHook does, but written whole); returns the checkpoint's path."""
        path = osp.join(self.work_dir, filename)
        if is_main_process():
            pointer = osp.join(self.work_dir, 'last_checkpoint')
            with open(pointer + '.part', 'w') as f:
                f.write(path)
            _replace_durably(pointer + '.part', pointer)
        return path

    def train(self):
        self._purpose = 'finetune'
        if self._check_load_from():
            backbone = getattr(bare_model(self.model), 'backbone', None)
            if getattr(backbone, 'init_cfg', None):
                # load_from replaces every backbone weight (checked): no ImageNet file needed.
                print_log('load_from replaces the whole backbone: its init_cfg '
                          f'({backbone.init_cfg}) is not applied', logger='current')
                backbone.init_cfg = None
        return super().train()

    def val(self):
        self._purpose = 'eval'
        self._check_load_from()
        return super().val()

    def test(self):
        self._purpose = 'eval'
        self._check_load_from()
        return super().test()

    def resume(self, filename: str, *args, **kwargs) -> None:
        purpose, self._purpose = self._purpose, 'resume'
        try:
            return super().resume(filename, *args, **kwargs)
        finally:
            self._purpose = purpose

    def _check_load_from(self) -> bool:
        """Read and check ``load_from`` now, so that a misfit stops the run at start. True when
        there is a ``load_from`` to load (not a resume)."""
        if self._load_from is None or self._resume or self._has_loaded:
            return False
        checkpoint = read_model_checkpoint(self._load_from)
        check_model_checkpoint(self.model, checkpoint, self._purpose)
        self._checked_load_from = checkpoint
        return True

    def load_or_resume(self) -> None:
        """``load_from``: load the checkpoint checked at start (read once); ``resume``: the
        given checkpoint, or the newest readable one of the work dir (``--resume``)."""
        if self._has_loaded:
            return
        if self._resume:
            path = self._load_from or self._newest_readable_checkpoint()
            if path is not None:
                self.resume(path)
            self._has_loaded = True
            return
        if self._load_from is None:
            return
        checkpoint = self._checked_load_from or read_model_checkpoint(self._load_from)
        self._load(checkpoint)
        self._checked_load_from = None  # loaded: the tensors need not stay in memory
        self._has_loaded = True

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: Optional[list] = None) -> dict:
        """Load ``filename`` into the model for this run's purpose; returns the checkpoint as
        read. Every published layout is converted and checked: evaluating and resuming need
        an exact fit; fine-tuning re-initialises class-specific layers of another number of
        classes, unless ``strict``, which asks for an exact fit there too. ``revise_keys``
        (mmengine's key renaming) is refused: the layouts are converted by name, and a
        renamed key would bypass the check."""
        if revise_keys:
            raise CheckpointError(
                f'revise_keys={revise_keys!r} is not supported: CheckpointCheckingRunner '
                'converts every published layout itself and checks each key against the model; '
                'convert the file with tools/convert_weights.py or load it without revise_keys')
        checkpoint = self._read(filename, map_location)
        if self._purpose == 'resume' and \
                not {'epoch', 'iter'} <= set(checkpoint.checkpoint.get('meta') or {}):
            raise CheckpointError(
                f'Cannot resume from {filename}: it is not a training checkpoint of this package '
                '(no meta.epoch / meta.iter). To start a training from its weights, use '
                'tools/train.py CONFIG --load-from CHECKPOINT.')
        if strict and self._purpose == 'finetune':
            check_model_checkpoint(self.model, checkpoint, 'eval')  # every tensor must fit
        self._load(checkpoint)
        return checkpoint.checkpoint

    def _read(self, filename: str, map_location) -> ConvertedCheckpoint:
        """The checkpoint, read once: the one auto-resume chose was read to check it."""
        if self._read_resume is not None and self._read_resume[0] == filename:
            checkpoint, self._read_resume = self._read_resume[1], None
            return checkpoint
        try:
            return read_model_checkpoint(filename, map_location)
        except CheckpointError as exc:
            if self._purpose != 'resume':
                raise
            readable = [path for path, _ in _readable(_work_dir_checkpoints(self.work_dir))
                        if path != filename]
            raise CheckpointError(
                f'Cannot resume from {filename}: {exc}. Readable checkpoints in '
                f'{self.work_dir}: {", ".join(readable) or "none"}') from exc

    def _newest_readable_checkpoint(self) -> Optional[str]:
        """What ``--resume`` without a file resumes from: the checkpoint ``last_checkpoint``
        names, else the newest in the work dir; one that cannot be read is passed over, said.
        None (a start from scratch, said) when the work dir holds none."""
        candidates = _work_dir_checkpoints(self.work_dir)
        for path, checkpoint in _readable(candidates):
            if path != candidates[0]:
                print_log(f'Resuming from {path}: the newer {candidates[0]} cannot be read '
                          '(see the warning above)', logger='current', level=logging.WARNING)
            self._read_resume = path, checkpoint
            return path
        print_log(f'--resume: no readable checkpoint in {self.work_dir}'
                  + (f' ({len(candidates)} unreadable)' if candidates else '')
                  + ': training starts from scratch', logger='current', level=logging.WARNING)
        return None

    def _load(self, checkpoint: ConvertedCheckpoint) -> None:
        # Hooks see the file with the converted state dict, the one the model then loads, as
        # mmengine's load_checkpoint shows them what it loads: EMAHook copies it into its
        # averaged model (for a zoo file: this package's keys, not mmpretrain's, which its
        # lenient load would skip) or, resuming, swaps the saved averages out of it in place.
        self.call_hook('after_load_checkpoint',
                       checkpoint=dict(checkpoint.checkpoint, state_dict=checkpoint.state_dict))
        _, _, dataset_meta = load_model_checkpoint(self.model, checkpoint, self._purpose,
                                                   config_meta=self._config_dataset_meta())
        if dataset_meta and self._purpose == 'eval':
            bare_model(self.model).dataset_meta = dataset_meta

    def _config_dataset_meta(self) -> Optional[dict]:
        """The classes (and palette) of the dataset this run trains or evaluates on."""
        phase = 'train' if self._purpose != 'eval' else (
            'test' if self._test_dataloader is not None else 'val')
        loader = getattr(self, f'_{phase}_dataloader', None)
        if loader is None:
            return None
        if not isinstance(loader, dict):  # already built
            return getattr(loader.dataset, 'metainfo', None)
        return config_dataset_meta(loader['dataset'])


def _work_dir_checkpoints(work_dir: str) -> List[str]:
    """The work dir's training checkpoints, newest first: the one ``last_checkpoint`` names,
    then ``epoch_*.pth`` / ``iter_*.pth`` by modification time."""
    named = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = [f.read().strip()]
    found = sorted(glob.glob(osp.join(work_dir, 'epoch_*.pth'))
                   + glob.glob(osp.join(work_dir, 'iter_*.pth')), key=osp.getmtime, reverse=True)
    named = [osp.normpath(p) for p in named if p and osp.isfile(p)]
    return named + [osp.normpath(p) for p in found if osp.normpath(p) not in named]


def _readable(paths: List[str]):
    """(path, checkpoint) of each of ``paths`` that reads, in order; a warning for each that
    does not."""
    for path in paths:
        try:
            yield path, read_model_checkpoint(path, 'cpu')
        except CheckpointError as exc:
            print_log(f'Cannot read {path}: {exc}', logger='current', level=logging.WARNING)


def _replace_durably(source: str, target: str) -> None:
    """Rename ``source`` over ``target`` once its bytes are on disk, then record the rename in
    the folder: after a crash the target is the old file or the new one, whole."""
    with open(source, 'rb') as f:
        os.fsync(f.fileno())
    os.replace(source, target)
    folder = os.open(osp.dirname(osp.abspath(target)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)

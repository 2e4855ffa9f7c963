"""mmengine's Runner with its checkpoints read through the whole-model loader
(``checkpoints.model``): exact for evaluation and resuming, checked for fine-tuning."""
from __future__ import annotations

import copy
from typing import Optional

from mmengine.logging import print_log
from mmengine.registry import DATASETS, RUNNERS
from mmengine.runner import Runner

from ..checkpoints.model import (ConvertedCheckpoint, bare_model, check_model_checkpoint,
                                 load_model_checkpoint, read_model_checkpoint)
from ..errors import CheckpointError


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
        """``load_from``: load the checkpoint checked at start (read once); ``resume``: as
        mmengine does, through ``resume`` and ``load_checkpoint``."""
        if self._has_loaded or self._resume or self._load_from is None:
            return super().load_or_resume()
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
        checkpoint = read_model_checkpoint(filename, map_location)
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

    def _load(self, checkpoint: ConvertedCheckpoint) -> None:
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint.checkpoint)
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

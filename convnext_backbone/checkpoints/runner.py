"""mmengine's Runner with its checkpoints read through the whole-model loader (``model.py``)."""
from __future__ import annotations

from typing import Optional

from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..runtime import config_dataset_meta
from .model import (bare_model, check_model_checkpoint, convert_model_checkpoint,
                    load_model_checkpoint)
from .reading import CheckpointError, read_checkpoint

__all__ = ['CheckpointCheckingRunner']


@RUNNERS.register_module()
class CheckpointCheckingRunner(Runner):
    """mmengine's ``Runner``, but ``load_from`` and ``resume`` load through
    ``load_model_checkpoint`` instead of mmengine's lenient ``load_checkpoint``.

    Any published ConvNeXt layout is converted and checked before anything is copied:
    ``test()``/``val()`` need an exact fit, ``train()`` with ``load_from`` fine-tunes (class-
    specific layers of another number of classes are re-initialised and reported), ``resume``
    needs a training checkpoint of this package. A ``load_from`` that does not fit stops the run
    before any dataset or optimizer is built. The configs of this package select it with
    ``runner_type``, so upstream tools (``mim test``, mmdet's and mmseg's ``tools/``) build it too.
    """

    _purpose = 'eval'
    _read_cache: Optional[tuple] = None  # (path, checkpoint as read) of the early check

    def train(self):
        self._purpose = 'finetune'
        if self._check_load_from():
            backbone = getattr(bare_model(self.model), 'backbone', None)
            if isinstance(getattr(backbone, 'init_cfg', None), dict) and \
                    backbone.init_cfg.get('type') == 'Pretrained':
                # load_from replaces every backbone weight (checked): no ImageNet file needed.
                print_log('load_from replaces the whole backbone: its init_cfg '
                          f'({backbone.init_cfg.get("checkpoint")}) is not loaded',
                          logger='current')
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
        raw = read_checkpoint(self._load_from)
        check_model_checkpoint(self.model, convert_model_checkpoint(raw, str(self._load_from)),
                               self._purpose)
        self._read_cache = (self._load_from, raw)
        return True

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: list = None) -> dict:
        """Load ``filename`` into the model for this run's purpose (``strict`` and
        ``revise_keys`` of mmengine's signature are not used: the purpose says what must fit,
        and every published layout is converted). Returns the checkpoint as read."""
        cached = self._read_cache
        self._read_cache = None
        raw = cached[1] if cached and cached[0] == filename else read_checkpoint(
            filename, map_location)
        if self._purpose == 'resume' and not {'epoch', 'iter'} <= set(raw.get('meta') or {}):
            raise CheckpointError(
                f'Cannot resume from {filename}: it is not a training checkpoint of this package '
                '(no meta.epoch / meta.iter). To start a training from its weights, use '
                'tools/train.py CONFIG --load-from CHECKPOINT.')
        self.call_hook('after_load_checkpoint', checkpoint=raw)
        _, _, dataset_meta = load_model_checkpoint(
            self.model, convert_model_checkpoint(raw, str(filename)), self._purpose,
            config_meta=self._config_dataset_meta())
        if dataset_meta and self._purpose == 'eval':
            bare_model(self.model).dataset_meta = dataset_meta
        self._has_loaded = True
        return raw

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

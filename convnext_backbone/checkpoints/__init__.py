"""Where checkpoints are read, converted and loaded.

- ``reading``: files (``weights_only`` PyTorch files, safetensors), Hugging Face model folders,
  URLs; the allow-list that lets ``weights_only`` read mmengine Runner checkpoints.
- ``backbone``: ImageNet (backbone-only) checkpoints of every published layout -> the backbone
  (``init_cfg=dict(type='Pretrained', ...)``).
- ``model``: whole detector / segmentor checkpoints of every published layout -> the model,
  checked against it for evaluation, fine-tuning or resuming.
- ``runner``: mmengine's Runner with ``load_from`` and ``resume`` going through ``model``.

Nothing here imports the model code: the backbone imports ``backbone`` for its ``init_cfg``.
"""
from .backbone import LoadReport, convert_state_dict, load_pretrained
from .model import (ModelCheckpoint, ModelLoadReport, check_model_checkpoint,
                    load_model_checkpoint, read_model_checkpoint)
from .reading import CheckpointError, allow_mmengine_checkpoints, read_checkpoint
from .runner import CheckpointCheckingRunner

__all__ = [
    'CheckpointError', 'read_checkpoint', 'allow_mmengine_checkpoints', 'LoadReport',
    'convert_state_dict', 'load_pretrained', 'ModelCheckpoint', 'ModelLoadReport',
    'read_model_checkpoint', 'check_model_checkpoint', 'load_model_checkpoint',
    'CheckpointCheckingRunner'
]

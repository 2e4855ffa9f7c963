"""Checkpoint files and their conversions: files and state dicts only, no model and no Runner.

- ``reading``: files (``weights_only`` PyTorch files, safetensors), Hugging Face model folders,
  URLs; the allow-list that lets ``weights_only`` read mmengine Runner checkpoints.
- ``download``: URLs resolved to a local copy or downloaded once into a cache.
- ``imagenet``: ImageNet (backbone-only) checkpoints of every published layout -> the backbone
  (``init_cfg=dict(type='Pretrained', ...)``), and back to timm's / mmpretrain's layouts.
- ``model``: whole detector / segmentor checkpoints of every published layout -> the model,
  checked against it for evaluation, fine-tuning or resuming.

The Runner that loads through ``model`` is ``convnext_backbone.engine.CheckpointCheckingRunner``.
"""
from ..errors import CheckpointError
from .imagenet import LoadReport, convert_state_dict, load_pretrained
from .model import (ConvertedCheckpoint, ModelLoadReport, check_model_checkpoint,
                    load_model_checkpoint, read_model_checkpoint)
from .reading import allow_mmengine_checkpoints, read_checkpoint

__all__ = [
    'CheckpointError', 'read_checkpoint', 'allow_mmengine_checkpoints', 'LoadReport',
    'convert_state_dict', 'load_pretrained', 'ConvertedCheckpoint', 'ModelLoadReport',
    'read_model_checkpoint', 'check_model_checkpoint', 'load_model_checkpoint'
]


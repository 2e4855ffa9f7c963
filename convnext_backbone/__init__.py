"""ConvNeXt (V1, V2) for MMDetection and MMSegmentation.

Importing the package registers, in mmengine's root registries (visible from mmdet's and
mmseg's child registries), the ``ConvNeXt`` backbone, the
``ConvNeXtLayerDecayOptimizerConstructor``, the ``CheckpointCheckingRunner`` and the
``NonFiniteLossHook``, and lets ``torch.load(weights_only=True)`` read mmengine Runner
checkpoints (``allow_mmengine_checkpoints``). Configs use
``custom_imports=dict(imports=['convnext_backbone'], allow_failed_imports=False)``.
Needs only torch, timm and mmengine. The layering: docs/architecture.md.
"""
from .archs import ARCH_SETTINGS, PUBLISHED_ARCHS
from .backbone import ConvNeXt
from .checkpoints import (allow_mmengine_checkpoints, convert_state_dict, load_model_checkpoint,
                          load_pretrained)
from .engine import (CheckpointCheckingRunner, ConvNeXtLayerDecayOptimizerConstructor,
                     NonFiniteLossHook)
from .errors import CheckpointError, DataError, DeviceError
from .inference import optimize_for_inference

# Upstream tools (mim test, mmdet's / mmseg's tools/test.py) read Runner checkpoints with
# torch >= 2.6's weights_only=True once a config has imported this package.
allow_mmengine_checkpoints()

__all__ = [
    'ARCH_SETTINGS', 'PUBLISHED_ARCHS', 'ConvNeXt', 'ConvNeXtLayerDecayOptimizerConstructor',
    'CheckpointCheckingRunner', 'CheckpointError', 'DataError', 'DeviceError',
    'NonFiniteLossHook', 'convert_state_dict', 'load_model_checkpoint', 'load_pretrained',
    'optimize_for_inference'
]
__version__ = '0.1.0'

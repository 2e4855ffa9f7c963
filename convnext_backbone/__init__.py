"""ConvNeXt (V1, V2) for MMDetection and MMSegmentation.

Importing the package registers, in mmengine's root registries (visible from mmdet's and
mmseg's child registries), the ``ConvNeXt`` backbone and the
``ConvNeXtLayerDecayOptimizerConstructor``. Configs use
``custom_imports=dict(imports=['convnext_backbone'], allow_failed_imports=False)``.
Needs only torch, timm and mmengine.
"""
from .backbone import ARCH_SETTINGS, PUBLISHED_ARCHS, ConvNeXt
from .layer_decay import ConvNeXtLayerDecayOptimizerConstructor
from .runtime import NonFiniteLossHook
from .weights import CheckpointError, convert_state_dict, load_pretrained

__all__ = [
    'ARCH_SETTINGS', 'PUBLISHED_ARCHS', 'ConvNeXt', 'ConvNeXtLayerDecayOptimizerConstructor',
    'CheckpointError', 'NonFiniteLossHook', 'convert_state_dict', 'load_pretrained'
]
__version__ = '0.1.0'

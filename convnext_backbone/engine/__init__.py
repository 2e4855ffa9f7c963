"""Training and evaluation machinery for mmengine, as mmdet's own ``engine/`` holds it: the
checkpoint-checking Runner, the hooks, the layer-wise learning-rate-decay constructor. Importing
it registers them in mmengine's root registries (visible from mmdet's and mmseg's)."""
from .hooks import NonFiniteLossHook, OptimizeForInferenceHook
from .layer_decay import ConvNeXtLayerDecayOptimizerConstructor
from .loops import ResumableEpochBasedTrainLoop, ResumableIterBasedTrainLoop
from .memory import keep_freed_memory
from .preemption import (PREEMPTED_EXIT_CODE, PreemptionHook, RandomStateHook,
                         TrainingPreempted)
from .runner import CheckpointCheckingRunner, config_dataset_meta

__all__ = ['CheckpointCheckingRunner', 'ConvNeXtLayerDecayOptimizerConstructor',
           'NonFiniteLossHook', 'OptimizeForInferenceHook', 'PREEMPTED_EXIT_CODE',
           'PreemptionHook', 'RandomStateHook', 'ResumableEpochBasedTrainLoop',
           'ResumableIterBasedTrainLoop', 'TrainingPreempted', 'config_dataset_meta',
           'keep_freed_memory']

"""Hooks of this package's runs (``cli.prepare_config`` adds them to every run of the tools)."""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

__all__ = ['NonFiniteLossHook']


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training at the first non-finite loss, before a checkpoint can be written from the
    broken weights (the last good checkpoint stays the latest one)."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs is None:
            return
        loss = outputs.get('loss')
        if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
            raise FloatingPointError(
                f'Loss became {float(loss)} at iteration {runner.iter + 1} (epoch '
                f'{runner.epoch + 1}); training stopped without saving. Resume from the last '
                f'checkpoint in {runner.work_dir} with a lower lr or a longer warm-up.')

"""Hooks of this package's runs: ``cli.prepare_config`` adds ``NonFiniteLossHook`` to every run
of the tools, ``tools/test.py`` adds ``OptimizeForInferenceHook`` on CPU."""
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..checkpoints.model import bare_model
from ..inference import optimize_for_inference


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


@HOOKS.register_module()
class OptimizeForInferenceHook(Hook):
    """Test the model through ``optimize_for_inference`` (``convnext_backbone.inference``):
    its ConvNeXt blocks are replaced in place once the checkpoint is loaded (mmengine's test
    loop calls ``before_test`` after ``load_or_resume``). The Runner's model is for this test
    only afterwards: it cannot be saved or trained."""

    priority = 'VERY_LOW'  # after every hook that puts weights in place (an EMA swap)

    def before_test(self, runner) -> None:
        optimize_for_inference(bare_model(runner.model), inplace=True)

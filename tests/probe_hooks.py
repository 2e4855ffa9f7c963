"""Test-only hooks, imported by the end-to-end tests' configs: each rank writes its final
weights (distributed training keeps the ranks identical); a signal at a chosen iteration
(preemption and resume)."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class SaveRankWeightsHook(Hook):

    def after_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        torch.save(model.state_dict(), osp.join(runner.work_dir, f'weights_rank{get_rank()}.pth'))


@HOOKS.register_module()
class SignalAtIterationHook(Hook):
    """Sends the signal named by $SIGNAL_NAME after training iteration $SIGNAL_AT_ITERATION
    (nothing without them): SIGKILL to this process (a crash: nothing saved), others to the
    whole process group, as a scheduler does."""

    priority = 'HIGHEST'  # before the checkpoint hook: the iteration's own save never happens

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        import os
        import signal
        if runner.iter + 1 != int(os.environ.get('SIGNAL_AT_ITERATION', -1)):
            return
        signum = getattr(signal, os.environ['SIGNAL_NAME'])
        if signum == signal.SIGKILL:
            os.kill(os.getpid(), signum)
        else:
            os.killpg(os.getpgid(0), signum)

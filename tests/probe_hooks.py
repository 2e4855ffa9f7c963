"""A test-only hook, imported by the end-to-end tests' configs: each rank writes its final
weights, so that the test can check that distributed training kept the ranks identical."""
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

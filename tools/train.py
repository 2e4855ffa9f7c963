"""Train a detector or segmentor from a config (MMDetection or MMSegmentation, picked by the
config's default_scope), over mmengine's Runner.

    python tools/train.py configs/mask_rcnn_convnext_t.py [--work-dir DIR]
        [--resume [CKPT] | --load-from CKPT] [--amp] [--cfg-options key=value ...]
        [--launcher none|pytorch|slurm|mpi]

``--resume`` continues a run exactly as if it had not stopped (docs/training.md, "Preemption
and exact resume"); SIGTERM or SIGUSR1 makes a run save after its current iteration and exit
with status 75 (``PREEMPTED_EXIT_CODE``), for a scheduler to requeue it with ``--resume``.
``--load-from`` fine-tunes from a whole detector / segmentor checkpoint of any published layout
(``convnext_backbone.checkpoints.model``): everything but the class-specific output layers must
fit, and those are re-initialised and reported when the number of classes differs.
"""
import argparse
import sys

from convnext_backbone.cli import (add_runner_arguments, check_mmcv_ops, fit_optim_wrapper,
                                   prepare_config, run_device, run_tool,
                                   setup_cpu_distributed)
from convnext_backbone.data import check_dataset
from convnext_backbone.engine import (PREEMPTED_EXIT_CODE, CheckpointCheckingRunner,
                                      TrainingPreempted)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    start = parser.add_mutually_exclusive_group()
    start.add_argument('--resume', nargs='?', const='auto', default=None,
                       help='resume from CKPT, or from the latest checkpoint in the work dir')
    start.add_argument('--load-from', metavar='CKPT',
                       help='fine-tune from a detector / segmentor checkpoint (file, Hugging '
                       'Face folder or URL)')
    parser.add_argument('--amp', action='store_true', help='mixed precision (needs a GPU)')
    add_runner_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher,
                         args.data, args.data_split)
    fit_optim_wrapper(cfg, args.amp)
    check_mmcv_ops(cfg, run_device())  # before anything is built
    check_dataset(cfg, phases=('train', 'val'))
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    elif args.load_from:
        cfg.resume, cfg.load_from = False, args.load_from
    setup_cpu_distributed(args.launcher)
    try:
        CheckpointCheckingRunner.from_cfg(cfg).train()
    except TrainingPreempted as exc:  # saved: a scheduler's requeue resumes it
        print(f'preempted: {exc}', file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
    sys.exit(run_tool(main))

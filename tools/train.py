"""Train a detector or segmentor from a config (MMDetection or MMSegmentation, picked by the
config's default_scope), over mmengine's Runner.

    python tools/train.py configs/mask_rcnn_convnext_t.py [--work-dir DIR] [--resume [CKPT]]
        [--amp] [--cfg-options key=value ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse

from mmengine.runner import Runner

from convnext_backbone.runtime import (add_runner_arguments, allow_mmengine_checkpoints,
                                       check_data, prepare_config, setup_cpu_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from CKPT, or from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true', help='mixed precision (needs a GPU)')
    add_runner_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    allow_mmengine_checkpoints()  # --resume reads Runner checkpoints with weights_only=True
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher, args.amp)
    check_data(cfg, phases=('train', 'val'))
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    setup_cpu_distributed(args.launcher)
    Runner.from_cfg(cfg).train()


if __name__ == '__main__':
    main()

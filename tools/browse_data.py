"""Write a grid of training images as the model will see them (after the training pipeline:
resizing, cropping, flipping, colour changes) with their ground truth drawn: boxes and masks
(detection configs) or the label map (segmentation configs).

    python tools/browse_data.py CONFIG [--data DIR] [-n 12] [--columns 4] [--phase train]
        [--seed 0] [--out work_dirs/<config>/browse_train.png] [--cfg-options ...]

The picture is written as PNG, or as JPEG for an --out ending in .jpg.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.registry import DefaultScope

from convnext_backbone.cli import add_data_arguments, prepare_config, run_tool
from convnext_backbone.data import check_dataset
from convnext_backbone.data.pictures import build_visualizer, draw_sample, grid, training_samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('-n', '--num', type=int, default=12, help='how many images')
    parser.add_argument('--columns', type=int, default=4)
    parser.add_argument('--phase', default='train', choices=['train', 'val', 'test'])
    parser.add_argument('--seed', type=int, default=0, help='which images and augmentations')
    parser.add_argument('--out', help='PNG to write (default: in the work dir)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    cfg = prepare_config(args.config, cfg_options=args.cfg_options, data=args.data,
                         data_splits=args.data_split)
    check_dataset(cfg, phases=(args.phase, ))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        samples, metainfo = training_samples(cfg, args.num, args.phase, args.seed)
        visualizer = build_visualizer(cfg, metainfo)
        pictures = [draw_sample(visualizer, image, sample) for _, image, sample in samples]
    out = args.out or osp.join(cfg.work_dir, f'browse_{args.phase}.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    import mmcv
    mmcv.imwrite(grid(pictures, args.columns)[..., ::-1], out)  # RGB -> BGR for cv2
    print(f'Wrote {out}: {len(pictures)} {args.phase} images after the pipeline, ground truth '
          'drawn')
    return out


if __name__ == '__main__':
    sys.exit(run_tool(main))

"""Export a config's segmentor or detector, with a checkpoint's weights, to one ONNX file that
runs in onnxruntime without mmcv, mmdet or mmseg (convnext_backbone.deploy.runtime).

    python tools/export_onnx.py CONFIG CHECKPOINT --out FILE.onnx [--shape H W | --dynamic]
        [--data DIR] [--cfg-options ...]

CHECKPOINT is read as tools/test.py reads it (any published layout); one that does not fit the
config's model exactly is refused and nothing is written. The whole test-time model is in the
graph (normalisation, padding, backbone, neck, heads, resize of the outputs, post-processing);
the file's metadata holds the classes, palette, mean / std, the test resize, the config's name
and the checkpoint's sha256. --shape fixes the input size (default: the sliding window of
sliding-window configs); --dynamic makes one file for any size. See docs/deploy.md.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from convnext_backbone.cli import add_data_arguments, prepare_config, run_tool


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file, Hugging Face folder or URL')
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    size = parser.add_mutually_exclusive_group()
    size.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'),
                      help='the input size the file takes (after the test resize)')
    size.add_argument('--dynamic', action='store_true', help='one file for any input size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_data_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from convnext_backbone.deploy.export import export_onnx
    cfg = prepare_config(args.config, cfg_options=args.cfg_options, data=args.data,
                         data_splits=args.data_split)
    return export_onnx(cfg, args.checkpoint, args.out, shape=args.shape, dynamic=args.dynamic,
                       config_name=osp.basename(args.config))


if __name__ == '__main__':
    sys.exit(run_tool(main))

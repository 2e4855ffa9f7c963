"""Quantize an exported file to INT8 (static post-training quantization, onnxruntime's QDQ form),
calibrated on the config's training images read as the runtime reads them (or --data's).

    python tools/quantize.py CONFIG FILE.onnx --out FILE.int8.onnx [--data DIR]
        [--calib-images 32]

FILE.onnx is an fp32 file of tools/export_onnx.py made for CONFIG (refused otherwise, as
tools/test.py refuses it). The convolutions and linear layers of the backbone, neck and heads
go to INT8 (per-channel weights); LayerNorm, GELU, GRN, softmax / sigmoid and the
post-processing stay in float. --data DIR is a folder of images to calibrate on, or a dataset
folder as tools/train.py takes it (the config takes its classes; calibration reads its training
images). The INT8 file runs wherever the fp32 one does: tools/test.py, tools/infer.py,
OnnxModel, with --backend onnxruntime or openvino. See docs/deploy.md.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from convnext_backbone.cli import add_data_arguments, prepare_config, run_tool
from convnext_backbone.deploy.evaluate import check_file_fits_config
from convnext_backbone.deploy.quantize import (DEFAULT_CALIBRATION_IMAGES,
                                               calibration_image_paths, has_images,
                                               quantize_onnx)
from convnext_backbone.deploy.runtime import OnnxModel
from convnext_backbone.errors import DeployError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the file was exported from')
    parser.add_argument('onnx', help='the fp32 .onnx file of tools/export_onnx.py')
    parser.add_argument('--out', required=True, help='the INT8 .onnx file to write')
    parser.add_argument('--calib-images', type=int, default=DEFAULT_CALIBRATION_IMAGES,
                        metavar='N', help='calibration images, spread evenly over the sorted '
                        f'images (default {DEFAULT_CALIBRATION_IMAGES})')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    add_data_arguments(parser, 'a folder of images to calibrate on, or a dataset folder as '
                       'tools/train.py takes it: the config takes its classes, calibration its '
                       'training images')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    image_folder = args.data if args.data and has_images(args.data) else None
    cfg = prepare_config(args.config, cfg_options=args.cfg_options,
                         data=None if image_folder else args.data,
                         data_splits=args.data_split)
    if osp.abspath(args.out) == osp.abspath(args.onnx):
        raise DeployError(f'--out {args.out} is the file to quantize: write the INT8 file '
                          'beside it (e.g. FILE.int8.onnx)')
    check_file_fits_config(OnnxModel(args.onnx), cfg, args.config)
    paths = calibration_image_paths(cfg, image_folder, args.calib_images)
    print(f'Calibrating on {len(paths)} images of {osp.dirname(paths[0])}')
    result = quantize_onnx(args.onnx, args.out, paths)
    print(f'Quantized {len(result["quantized_nodes"])} nodes to INT8 (Conv, MatMul, Gemm with '
          f'constant weights), by module:')
    print('\n'.join(result['lines']))
    print(f'Calibrated on {result["quantizer"]["calibration_inputs"]} inputs; took '
          f'{result["seconds"]:.1f} s')
    print(f'Wrote {args.out} ({osp.getsize(args.out) / 2**20:.1f} MiB, int8)')


if __name__ == '__main__':
    sys.exit(run_tool(main))

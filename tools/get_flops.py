"""Parameters and FLOPs of a config's model and of its backbone, as the ConvNeXt paper's tables
give them (docs/configs.md: the counting convention, every config beside the paper).

    python tools/get_flops.py CONFIG [--shape H W] [--params-only] [--cfg-options ...]

FLOPs are multiply-adds of one forward of one image of H x W pixels (default: the paper's size,
1280x800 for detection, the test scale for segmentation: 2048x512, or 2560x640 for the 640
configs), counted by mmengine's FlopAnalyzer; NMS, RoIAlign and element-wise operations count
nothing. The model is built with random weights: nothing is downloaded.
"""
import argparse
import sys

from mmengine.config import DictAction

from convnext_backbone.analysis.complexity import count_complexity, count_parameters
from convnext_backbone.cli import add_data_arguments, prepare_config, run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="input height and width (default: the paper's)")
    parser.add_argument('--params-only', action='store_true',
                        help='count parameters only (instant: nothing is run)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    cfg = prepare_config(args.config, cfg_options=args.cfg_options, data=args.data,
                         data_splits=args.data_split)
    if args.params_only:
        result = count_parameters(cfg)
    else:
        result = count_complexity(cfg, args.shape)
    print(f'{args.config}' + (f' at {result.shape[0]}x{result.shape[1]} (H x W)'
                              if result.shape else ''))
    for name, params, flops in (('model', result.params, result.flops),
                                ('backbone', result.backbone_params, result.backbone_flops)):
        line = f'  {name:<9} {params / 1e6:8.2f} M parameters'
        if flops is not None:
            line += f'  {flops / 1e9:8.1f} GFLOPs (multiply-adds)'
        print(line)
    if result.uncounted:
        print('  not counted: ' + ', '.join(f'{op} x{n}' for op, n in
                                            sorted(result.uncounted.items())))
    return result


if __name__ == '__main__':
    sys.exit(run_tool(main))

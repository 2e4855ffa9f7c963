"""Draw the training loss and validation metrics of one or more runs into one picture
(MMDetection's analyze_logs.py plot_curve): one panel per key, one colour per run.

    python tools/plot_curves.py WORK_DIR_OR_SCALARS_JSON [...] [--keys loss bbox_mAP]
        [--legend NAME ...] --out curves.png

A key may be given without its metric's prefix (bbox_mAP for coco/bbox_mAP, mIoU).
"""
import argparse
import sys

from convnext_backbone.analysis.curves import plot_curves
from convnext_backbone.cli import run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('runs', nargs='+', help='work folders of tools/train.py, or their '
                        '*/vis_data/scalars.json')
    parser.add_argument('--keys', nargs='+', default=['loss'])
    parser.add_argument('--legend', nargs='+', default=(), help='a name per run')
    parser.add_argument('--out', default='curves.png')
    args = parser.parse_args(argv)
    plot_curves(args.runs, args.keys, args.out, args.legend)
    print(f'Wrote {args.out}')
    return args.out


if __name__ == '__main__':
    sys.exit(run_tool(main))

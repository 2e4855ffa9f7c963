"""Check a config's data before training on it: what would break or silently empty the run
(missing, empty or unreadable images, images of another size than their annotations say,
unknown categories, classes that match nothing, label values beyond the classes, heads of
another number of classes), and a table of images and instances (or pixels) per class and
split, counted in the dataset mmdet / mmseg build from the config, with the rules that left
annotations and images out.

    python tools/check_data.py CONFIG [--data DIR] [--data-split SPLIT=PATH[:PATH] ...]
        [--decode] [--cfg-options key=value ...]

Every image's header is read; --decode also decodes every image fully, which finds truncated
and corrupt files (slower: a few hundred images per second and CPU core). Exit status 1 when
something is fatal. tools/train.py and tools/test.py run the same check, without --decode.
"""
import argparse
import sys

from mmengine.config import DictAction

from convnext_backbone.cli import add_data_arguments, prepare_config, run_tool
from convnext_backbone.data import check_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--phases', nargs='+', default=['train', 'val', 'test'],
                        choices=['train', 'val', 'test'])
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, as tools/train.py does')
    parser.add_argument('--decode', action='store_true',
                        help='decode every image fully (finds truncated files; slower)')
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    cfg = prepare_config(args.config, cfg_options=args.cfg_options, data=args.data,
                         data_splits=args.data_split)
    report = check_dataset(cfg, phases=args.phases, decode=args.decode)
    print(f'Data check passed: {len(report.classes)} classes, {len(report.warnings)} warnings')
    return report


if __name__ == '__main__':
    sys.exit(run_tool(main))

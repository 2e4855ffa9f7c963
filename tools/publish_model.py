"""Make a training checkpoint ready to publish: weights and meta kept, optimizer, parameter
schedulers and message hub removed, written as OUT_DIR/NAME-<first 8 of sha256>.pth (the
name torch.hub and this package verify after a download; docs/weights.md).

    python tools/publish_model.py work_dirs/x/epoch_36.pth OUT_DIR
"""
import argparse
import os.path as osp
import sys

from convnext_backbone.checkpoints.publish import publish_checkpoint
from convnext_backbone.cli import run_tool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help="a Runner checkpoint of tools/train.py")
    parser.add_argument('out_dir')
    args = parser.parse_args(argv)
    path = publish_checkpoint(args.checkpoint, args.out_dir)
    print(f'Wrote {path} ({osp.getsize(path) / 1e6:.1f} MB)')
    return path


if __name__ == '__main__':
    sys.exit(run_tool(main))

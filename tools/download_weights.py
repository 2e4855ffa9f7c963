"""Fetch the ImageNet checkpoints that configs name by URL, once, on a machine with internet, so
that training on machines without it finds them.

    python tools/download_weights.py CONFIG [CONFIG ...] [--dir DIR] [--dry-run]
    python tools/download_weights.py --all [--dir DIR] [--dry-run]

Without --dir each file goes where training looks (``convnext_backbone.checkpoints.download``):
a copy in ``checkpoints/``, ``$CONVNEXT_CHECKPOINTS`` or the cache is reused, else the file is
downloaded into the cache (``$CONVNEXT_CACHE/checkpoints``, default
``~/.cache/convnext_backbone/checkpoints``). With --dir the files go into DIR: copy it to the
offline machines and set ``CONVNEXT_CHECKPOINTS=DIR`` there (or copy it to ``checkpoints/`` in
the directory training runs from). Prints where each file is, already there or downloaded,
and the terms its weights come with: the official ConvNeXt (V1) weights are MIT, every
ConvNeXt-V2 file (FCMAE pre-trained or fine-tuned, official or converted) is CC-BY-NC 4.0,
non-commercial use only (docs/weights.md, "Licences of the weights").
"""
import argparse
import glob
import os.path as osp
import sys
from typing import Dict, List, Optional

from mmengine.config import Config

from convnext_backbone.checkpoints import CheckpointError
from convnext_backbone.checkpoints.download import (cache_dir, checkpoint_path,
                                                    download_checkpoint, file_name_of,
                                                    find_checkpoint, is_url)
from convnext_backbone.checkpoints.licences import weights_licence
from convnext_backbone.cli import run_tool

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The paper configs; configs/demo train from scratch and configs/_base_ are not complete.
PROJECT_CONFIGS = osp.join(ROOT, 'configs', '*.py')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='ConvNeXt-V2 weights are CC-BY-NC 4.0 (non-commercial use only); the official '
        'ConvNeXt (V1) weights are MIT. Each URL is printed with its licence.')
    parser.add_argument('configs', nargs='*', help='config files')
    parser.add_argument('--all', action='store_true',
                        help='every config of the project (configs/*.py)')
    parser.add_argument('--dir', help='download into this folder instead of the cache')
    parser.add_argument('--dry-run', action='store_true',
                        help='say what is there and what would be downloaded; download nothing')
    args = parser.parse_args(argv)
    if not args.configs and not args.all:
        parser.error('name configs, or --all')
    return args


def imagenet_checkpoint(config: str) -> Optional[str]:
    """The ``model.backbone.init_cfg.checkpoint`` of a config (None without one); the config
    needs no other part of a model."""
    cfg = Config.fromfile(config)
    init_cfg = (cfg.get('model') or {}).get('backbone', {}).get('init_cfg')
    if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
        return init_cfg.get('checkpoint')
    return None


def urls_of(configs: List[str]) -> Dict[str, List[str]]:
    """URL -> the configs that name it, in order of first use; configs without a URL say so."""
    urls: Dict[str, List[str]] = {}
    for config in configs:
        if not osp.isfile(config):
            raise CheckpointError(f'Config file not found: {config}')
        checkpoint = imagenet_checkpoint(config)
        if checkpoint is None or not is_url(str(checkpoint)):
            print(f'{config}: no ImageNet checkpoint URL (model.backbone.init_cfg.checkpoint '
                  f'is {checkpoint!r}); nothing to fetch')
            continue
        urls.setdefault(checkpoint, []).append(osp.basename(config))
    return urls


def fetch(url: str, folder: Optional[str], dry_run: bool) -> str:
    """Where the file of ``url`` is after this call, and how it got there, as one line."""
    if folder:  # only DIR counts: it is what will be copied to the offline machines
        path = osp.join(folder, file_name_of(url))
        if osp.isfile(path):
            return f'already there: {path}'
        if dry_run:
            return f'would download to {path}'
        path, downloaded = download_checkpoint(url, folder)
        return f'{"downloaded" if downloaded else "already there"}: {path}'
    path = find_checkpoint(url)
    if path is not None:
        return f'already there: {path}'
    if dry_run:
        return f'would download to {osp.join(cache_dir(), file_name_of(url))}'
    return f'downloaded: {checkpoint_path(url)}'


def main(argv=None) -> int:
    args = parse_args(argv)
    configs = list(args.configs)
    if args.all:
        configs += sorted(glob.glob(PROJECT_CONFIGS))
    failed = []
    for url, users in urls_of(configs).items():
        try:
            where = fetch(url, args.dir, args.dry_run)
        except CheckpointError as exc:  # report it, and go on with the others
            failed.append(url)
            where = f'FAILED: {exc}'
        licence = weights_licence(url) or 'not known here: see where the file comes from'
        print(f'{url} ({", ".join(users)})\n  {where}\n  licence: {licence}')
    if args.dir and not args.dry_run and not failed:
        print(f'On machines without internet: copy {args.dir} there and set '
              f'CONVNEXT_CHECKPOINTS to it, or copy its files to checkpoints/ in the directory '
              'training runs from.')
    if failed:
        raise CheckpointError(f'{len(failed)} checkpoint(s) could not be fetched: '
                              f'{", ".join(failed)}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))

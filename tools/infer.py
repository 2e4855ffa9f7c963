"""Draw a model's predictions on an image: boxes and masks (detection configs) or a
colour-coded segmentation (segmentation configs), written as a PNG.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [--out-dir outputs] [--score-thr 0.3]

CHECKPOINT is read like tools/test.py reads it (any published layout, exact fit). Class names
and palette come from the checkpoint when it names the config's classes, from the config
otherwise.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

from mmengine.config import Config

from convnext_backbone.checkpoints import load_model_checkpoint
from convnext_backbone.runtime import config_dataset_meta, run_tool, stack_of


def build_inferencer(config: str, checkpoint: str, device: str = 'cpu'):
    """mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` for the config, with the
    checkpoint loaded through ``load_model_checkpoint`` (the inferencers' own loading is
    mmengine's lenient one, and knows only mmengine's layout)."""
    if stack_of(Config.fromfile(config)) == 'mmdet':
        from mmdet.apis import DetInferencer as Inferencer
        kwargs = dict(show_progress=False)
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
        kwargs = {}
    with warnings.catch_warnings():  # "no checkpoint loaded": it is loaded below
        warnings.simplefilter('ignore')
        inferencer = Inferencer(model=config, weights=None, device=device, **kwargs)
    config_meta = config_dataset_meta(inferencer.cfg.test_dataloader.dataset)
    _, _, meta = load_model_checkpoint(inferencer.model, checkpoint, 'eval',
                                       config_meta=config_meta)
    meta = {k: v for k, v in (meta or {}).items() if k in ('classes', 'palette')}
    inferencer.model.dataset_meta = meta
    inferencer.visualizer.dataset_meta = meta
    return inferencer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='checkpoint file, Hugging Face folder or URL')
    parser.add_argument('image')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw predictions above this score')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    for path in (args.config, args.image):
        if not osp.isfile(path):
            raise FileNotFoundError(f'File not found: {path}')
    inferencer = build_inferencer(args.config, args.checkpoint, args.device)
    os.makedirs(args.out_dir, exist_ok=True)
    out = osp.join(args.out_dir, osp.splitext(osp.basename(args.image))[0] + '_pred.png')
    if stack_of(inferencer.cfg) == 'mmdet':
        result = inferencer(args.image, return_vis=True, pred_score_thr=args.score_thr)
    else:
        result = inferencer(args.image, return_vis=True, opacity=0.6)
    vis = result['visualization']
    # DetInferencer returns a list per input; MMSegInferencer unwraps a single input's array.
    vis = vis[0] if isinstance(vis, list) else vis
    import mmcv
    mmcv.imwrite(vis[..., ::-1], out)  # RGB -> BGR for cv2
    print(f'Wrote {out}')
    return out


if __name__ == '__main__':
    sys.exit(run_tool(main))

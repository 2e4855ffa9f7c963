"""Draw a model's predictions on an image: boxes and masks (detection configs) or a
colour-coded segmentation (segmentation configs), written as a PNG.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [--out-dir outputs] [--score-thr 0.3]
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config

from convnext_backbone.runtime import allow_mmengine_checkpoints, stack_of


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('image')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw predictions above this score')
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    for path in (args.config, args.checkpoint, args.image):
        if not osp.isfile(path):
            raise FileNotFoundError(f'File not found: {path}')
    allow_mmengine_checkpoints()
    os.makedirs(args.out_dir, exist_ok=True)
    out = osp.join(args.out_dir, osp.splitext(osp.basename(args.image))[0] + '_pred.png')
    if stack_of(Config.fromfile(args.config)) == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=args.config, weights=args.checkpoint,
                                   device=args.device, show_progress=False)
        result = inferencer(args.image, return_vis=True, pred_score_thr=args.score_thr)
    else:
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=args.config, weights=args.checkpoint,
                                     device=args.device)
        result = inferencer(args.image, return_vis=True, opacity=0.6)
    vis = result['visualization']
    # DetInferencer returns a list per input; MMSegInferencer unwraps a single input's array.
    vis = vis[0] if isinstance(vis, list) else vis
    import mmcv
    mmcv.imwrite(vis[..., ::-1], out)  # RGB -> BGR for cv2
    print(f'Wrote {out}')
    return out


if __name__ == '__main__':
    main()

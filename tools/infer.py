"""Draw a model's predictions on images: boxes and masks (detection configs) or a colour-coded
segmentation (segmentation configs), one PNG per image; with --show-gt the ground truth of the
config's test data beside each prediction.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] [--data DIR] [--show-gt]
        [--out-dir outputs] [--score-thr 0.3] [--pred-out-dir DIR] [--backend openvino]

CHECKPOINT is read like tools/test.py reads it (any published layout, exact fit), or is an
.onnx file of tools/export_onnx.py or tools/quantize.py, run by onnxruntime or, with --backend
openvino, OpenVINO (docs/deploy.md). Class names and palette come from the checkpoint when it
names the config's classes, from the config otherwise. --data fits the config to a dataset of
one's own, as in tools/train.py.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

from mmengine.config import DictAction

from convnext_backbone.checkpoints import load_model_checkpoint
from convnext_backbone.cli import (add_backend_arguments, add_data_arguments, check_mmcv_ops,
                                   keep_freed_memory, prepare_config, refuse_backend_arguments,
                                   run_device, run_tool, stack_of)
from convnext_backbone.data.layouts import IMAGE_SUFFIXES
from convnext_backbone.data.predictions import write_prediction
from convnext_backbone.engine import config_dataset_meta
from convnext_backbone.inference import optimize_for_inference


def build_inferencer(cfg, checkpoint: str, device: str = 'cpu'):
    """mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` for the config, with the
    checkpoint loaded through ``load_model_checkpoint`` (the inferencers' own loading is
    mmengine's lenient one, and knows only mmengine's layout)."""
    if stack_of(cfg) == 'mmdet':
        from mmdet.apis import DetInferencer as Inferencer
        kwargs = dict(show_progress=False)
    else:
        from mmseg.apis import MMSegInferencer as Inferencer
        kwargs = {}
    with warnings.catch_warnings():  # "checkpoint is not loaded": it is loaded below
        warnings.filterwarnings('ignore', message='.*[Cc]heckpoint is not loaded')
        inferencer = Inferencer(model=cfg, weights=None, device=device, **kwargs)
    config_meta = config_dataset_meta(inferencer.cfg.test_dataloader.dataset)
    _, _, meta = load_model_checkpoint(inferencer.model, checkpoint, 'eval',
                                       config_meta=config_meta)
    meta = {k: v for k, v in (meta or {}).items() if k in ('classes', 'palette')}
    inferencer.model.dataset_meta = meta
    inferencer.visualizer.dataset_meta = meta
    inferencer.visualizer.alpha = 0.6  # segmentation: the image shows through the colours
    if device == 'cpu':  # CPU inference near its matmul floor (docs/speed.md)
        optimize_for_inference(inferencer.model, inplace=True)
    return inferencer


def image_paths(inputs):
    """The images named, and those in the folders named (sorted)."""
    paths = []
    for path in inputs:
        if osp.isdir(path):
            paths += sorted(osp.join(path, n) for n in os.listdir(path)
                            if osp.splitext(n)[1].lower() in IMAGE_SUFFIXES)
        elif osp.isfile(path):
            paths.append(path)
        else:
            raise FileNotFoundError(f'No such image or folder: {path}')
    if not paths:
        raise FileNotFoundError(f'No images ({", ".join(IMAGE_SUFFIXES)}) in {", ".join(inputs)}')
    return paths


def predict(inferencer, cfg, path: str, score_thr: float):
    """The model's prediction on the image, as a data sample."""
    kwargs = dict(return_datasamples=True)
    if stack_of(cfg) == 'mmdet':
        kwargs['pred_score_thr'] = score_thr
    prediction = inferencer(path, **kwargs)
    # DetInferencer returns {'predictions': [sample]}, MMSegInferencer the sample itself.
    prediction = prediction['predictions'] if isinstance(prediction, dict) else prediction
    return prediction[0] if isinstance(prediction, list) else prediction


def draw(inferencer, cfg, path: str, prediction, score_thr: float, show_gt: bool):
    """The prediction drawn on the image (RGB), with the ground truth on its left if asked."""
    import mmcv
    from convnext_backbone.data.pictures import draw_sample, ground_truth_of
    gt = ground_truth_of(cfg, path) if show_gt else None
    if show_gt and gt is None:
        print(f'{path} is not in the config\'s test data: drawn without ground truth')
    if gt is not None:
        for key in ('gt_instances', 'gt_sem_seg'):
            if key in gt:
                prediction.set_field(gt.get(key), key)
    extra = dict(pred_score_thr=score_thr) if stack_of(cfg) == 'mmdet' else {}
    return draw_sample(inferencer.visualizer, mmcv.imread(path, channel_order='rgb'), prediction,
                       draw_gt=gt is not None, draw_pred=True, **extra)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='checkpoint file, Hugging Face folder, URL, or an '
                        '.onnx file of tools/export_onnx.py')
    parser.add_argument('images', nargs='+', help='images, or folders of images')
    parser.add_argument('--out-dir', default='outputs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw predictions above this score')
    parser.add_argument('--show-gt', action='store_true',
                        help="draw the ground truth of the config's test data beside")
    parser.add_argument('--pred-out-dir', metavar='DIR',
                        help='also write the predictions as data: one JSON per image '
                        '(detection: boxes, scores, classes, COCO RLE masks) or a PNG of '
                        'class indices (segmentation)')
    parser.add_argument('--device', help='cpu or cuda (default: cuda where torch sees a GPU)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    add_data_arguments(parser)
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    paths = image_paths(args.images)
    cfg = prepare_config(args.config, cfg_options=args.cfg_options, data=args.data,
                         data_splits=args.data_split)
    if args.checkpoint.endswith('.onnx'):  # onnxruntime / OpenVINO: no mmcv ops, no torch
        from convnext_backbone.deploy.evaluate import OnnxInferencer
        inferencer = OnnxInferencer(cfg, args.checkpoint, args.config,
                                    backend=args.backend or 'onnxruntime',
                                    precision=args.precision or 'f32')
    else:
        refuse_backend_arguments(args)
        device = run_device(args.device)
        check_mmcv_ops(cfg, device)  # before anything is built
        if device == 'cpu':
            keep_freed_memory()
        inferencer = build_inferencer(cfg, args.checkpoint, device)
    os.makedirs(args.out_dir, exist_ok=True)
    import mmcv
    written = []
    for path in paths:
        out = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '_pred.png')
        prediction = predict(inferencer, cfg, path, args.score_thr)
        if args.pred_out_dir:
            write_prediction(prediction, path, args.pred_out_dir,
                             inferencer.visualizer.dataset_meta.get('classes'))
        picture = draw(inferencer, cfg, path, prediction, args.score_thr, args.show_gt)
        mmcv.imwrite(picture[..., ::-1], out)
        written.append(out)
    print(f'Wrote {len(written)} pictures to {args.out_dir}' if len(written) > 1 else
          f'Wrote {written[0]}')
    return written


if __name__ == '__main__':
    sys.exit(run_tool(main))

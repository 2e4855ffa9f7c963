"""Whole-model inference speed of detection and segmentation configs on one device: frames/s
of the test-time model (random weights, as the config initialises it) on one image, fp32 and
autocast (mmcv's CPU ops take fp32 only), as the paper's Table 3 (A100, 1280x800) and
MMSegmentation's metafile time them.

    python tools/benchmark_detector.py CONFIG [CONFIG ...] [--size H W] [--device cuda]
        [--precisions fp32 fp16] [--runs 10] [--warmup 3]

Detection: mmdet's ``test_step`` on the packed input (preprocessing, predict, rescale, masks
pasted), as ``tools/benchmark_deploy.py`` builds it; segmentation: ``encode_decode`` of one
normalised window (``test_cfg.mode='whole'``). Each time is of a synchronised call.
"""
import argparse
import statistics
import sys
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from benchmark_deploy import detection_input

AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def timed_call(path, size, device):
    """A call of the config's test-time model on ``device`` on one image of ``size``, and the
    model's input size (a detector's test resize may change it)."""
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg = None
    detection = cfg.default_scope == 'mmdet'
    if not detection:
        cfg.model.test_cfg = dict(mode='whole')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model).eval().to(device)
    image = np.random.RandomState(0).randint(0, 256, (*size, 3)).astype(np.uint8)
    if detection:
        data = detection_input(cfg, image)
        return (lambda: model.test_step(data)), tuple(data['inputs'][0].shape[1:])
    x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float().to(device)
    x = (x - model.data_preprocessor.mean) / model.data_preprocessor.std
    return (lambda: model.encode_decode(x, [dict(img_shape=tuple(size))])), tuple(size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--size', nargs=2, type=int, default=(800, 1280), metavar=('H', 'W'))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'fp16'],
                        choices=tuple(AUTOCAST))
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=3)
    args = parser.parse_args(argv)
    sync = torch.get_device_module(args.device).synchronize
    print('| config | input | precision | ms (median) | frames/s |')
    print('|---|---|---|---|---|')
    for path in args.configs:
        call, shape = timed_call(path, args.size, args.device)
        for precision in args.precisions:
            times = []
            for i in range(args.warmup + args.runs):
                start = time.perf_counter()
                with torch.no_grad(), torch.autocast(args.device, dtype=AUTOCAST[precision],
                                                     enabled=AUTOCAST[precision] is not None):
                    call()
                sync()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f'| {path} | {shape[0]}x{shape[1]} | {precision} | '
                  f'{median * 1e3:.1f} | {1 / median:.1f} |', flush=True)
    print(f'{torch.cuda.get_device_name() if args.device == "cuda" else args.device}, '
          f'torch {torch.__version__}')


if __name__ == '__main__':
    sys.exit(main())

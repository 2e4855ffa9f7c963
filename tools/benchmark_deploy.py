"""Time an exported model against PyTorch eager: one config's model (random weights, or a
checkpoint's), exported to ONNX (export time, file size), then onnxruntime and PyTorch on the
same input, interleaved (ORT, torch, ORT, torch...), median of each.

    python tools/benchmark_deploy.py [CONFIG] [--checkpoint CKPT] [--size 512 512] [--runs 5]

Segmentation configs only: the graph's one window (SegmentorForExport) against mmseg's
``encode_decode`` on the same normalised input. Prints one Markdown table row.
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?',
                        default=osp.join(ROOT, 'configs/upernet_convnext_t.py'))
    parser.add_argument('--checkpoint', help='default: random weights')
    parser.add_argument('--size', nargs=2, type=int, default=(512, 512), metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args(argv)
    from convnext_backbone.deploy.export import export_onnx
    from convnext_backbone.deploy.runtime import OnnxModel
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg = dict(mode='whole')  # one forward at --size
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model).eval()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = osp.join(folder, 'random.pth')
            torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
        out = osp.join(folder, 'model.onnx')
        start = time.perf_counter()
        export_onnx(cfg, checkpoint, out, shape=tuple(args.size))
        export_s = time.perf_counter() - start
        size_mib = osp.getsize(out) / 2**20
        onnx_model = OnnxModel(out)
        image = np.random.RandomState(0).randint(0, 256, (*args.size, 3)).astype(np.uint8)
        x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
        x = (x - model.data_preprocessor.mean) / model.data_preprocessor.std
        metas = [dict(img_shape=tuple(args.size))]
        times = {'onnxruntime': [], 'torch': []}
        for _ in range(args.runs + 1):  # the first of each is a warm-up
            start = time.perf_counter()
            onnx_model.run(image)
            times['onnxruntime'].append(time.perf_counter() - start)
            start = time.perf_counter()
            with torch.no_grad():
                model.encode_decode(x, metas)
            times['torch'].append(time.perf_counter() - start)
    ort_s = statistics.median(times['onnxruntime'][1:])
    torch_s = statistics.median(times['torch'][1:])
    print('| config | input | onnxruntime s | torch eager s | ratio | export s | file MiB |')
    print('|---|---|---|---|---|---|---|')
    print(f'| {osp.basename(args.config)} | {args.size[0]}x{args.size[1]} | {ort_s:.3f} | '
          f'{torch_s:.3f} | {ort_s / torch_s:.2f} | {export_s:.1f} | {size_mib:.1f} |')
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; runs: '
          f'onnxruntime {[round(t, 3) for t in times["onnxruntime"]]}, '
          f'torch {[round(t, 3) for t in times["torch"]]}')


if __name__ == '__main__':
    sys.exit(main())

"""Time an exported model against PyTorch eager, with this package's backbone and with
mmpretrain's ConvNeXt (the backbone of the MMDetection / MMSegmentation zoo configs).

    python tools/benchmark_deploy.py [CONFIG [CONFIG ...]] [--size H W ...] [--runs 3]
        [--threads N]

Default: configs/mask_rcnn_convnext_t.py at 800x1216 and configs/upernet_convnext_t.py at
512x512. Each config's model gets random weights (its initialisation; ``--checkpoint`` is not
taken), and the same weights go into the mmpretrain twin (``type='mmpretrain.ConvNeXt'``, the
config's arch, ``out_indices=(0, 1, 2, 3)``, ``gap_before_final_norm=False``, converted by
``convnext_backbone.checkpoints.imagenet.to_mmpretrain``). Each is exported to ONNX (export
time, file size; detection: a file for any size, the default; segmentation: the window), then
onnxruntime, PyTorch with this backbone and PyTorch with mmpretrain's run on the same input,
interleaved over all configs (ORT, ours, mmpretrain, next config, ...), the first round a
warm-up, and the medians are printed as a Markdown table.

- Segmentation: the graph's one window against mmseg's ``encode_decode`` on the same
  normalised input (``test_cfg.mode='whole'``).
- Detection: the graph (normalisation to pasted, thresholded masks) against mmdet's
  ``test_step`` on the same packed input (data preprocessor, predict, rescale, masks pasted);
  ``score_thr=0`` so that every run keeps ``max_per_img`` (100) detections, as a trained
  model on a busy image does (random weights score below the configs' 0.05).
"""
import argparse
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import MODELS, DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULTS = [(osp.join(ROOT, 'configs/mask_rcnn_convnext_t.py'), (800, 1216)),
            (osp.join(ROOT, 'configs/upernet_convnext_t.py'), (512, 512))]
VARIANTS = ('onnxruntime', 'torch', 'torch mmpretrain')


def mmpretrain_twin(cfg: Config, model):
    """The config's model with mmpretrain's ConvNeXt, holding ``model``'s weights."""
    import mmpretrain.models  # noqa: F401  registers mmpretrain.ConvNeXt
    from convnext_backbone.checkpoints.imagenet import to_mmpretrain
    ours = cfg.model.backbone
    twin_cfg = cfg.model.copy()
    twin_cfg.backbone = dict(
        type='mmpretrain.ConvNeXt', arch=ours.get('arch', 'tiny'), out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False, drop_path_rate=0.0,
        layer_scale_init_value=ours.get('layer_scale_init_value') or 0.,
        use_grn=bool(ours.get('use_grn', False) or ours.get('version') == 'v2'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        twin = MODELS.build(twin_cfg).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    backbone = to_mmpretrain(model.backbone.state_dict())
    state.update({f'backbone.{k}': v for k, v in backbone.items()})
    twin.load_state_dict(state, strict=True)
    return twin


def detection_input(cfg: Config, image: np.ndarray) -> dict:
    """``image`` (H, W, 3 BGR) through the config's test pipeline, as a batch of one for
    ``test_step``."""
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                if t['type'] not in ('LoadImageFromFile', 'LoadAnnotations')]
    pipeline.insert(0, dict(type='mmdet.LoadImageFromNDArray'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        return pseudo_collate([Compose(pipeline)(dict(img=image, img_id=0))])


class Case:
    """One config: its model, the mmpretrain twin, the exported file and the calls to time."""

    def __init__(self, path: str, size, folder: str):
        from convnext_backbone.deploy.export import export_onnx
        from convnext_backbone.deploy.runtime import OnnxModel
        cfg = Config.fromfile(path)
        cfg.model.backbone.init_cfg = None
        self.name, self.size = osp.basename(path), tuple(size)
        self.task = 'detection' if cfg.default_scope == 'mmdet' else 'segmentation'
        if self.task == 'segmentation':
            cfg.model.test_cfg = dict(mode='whole')  # one forward at --size
        else:
            cfg.model.test_cfg.rcnn.score_thr = 0.0
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = MODELS.build(cfg.model).eval()
        twin = mmpretrain_twin(cfg, model)
        checkpoint = osp.join(folder, f'{self.name}.pth')
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
        out = osp.join(folder, f'{self.name}.onnx')
        start = time.perf_counter()
        export_onnx(cfg, checkpoint, out,
                    shape=self.size if self.task == 'segmentation' else None)
        self.export_s = time.perf_counter() - start
        self.size_mib = osp.getsize(out) / 2**20
        onnx_model = OnnxModel(out)
        image = np.random.RandomState(0).randint(0, 256, (*self.size, 3)).astype(np.uint8)
        if self.task == 'segmentation':
            x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
            x = (x - model.data_preprocessor.mean) / model.data_preprocessor.std
            metas = [dict(img_shape=self.size)]
            self.calls = {'onnxruntime': lambda: onnx_model.run(image)['logits'],
                          'torch': lambda: model.encode_decode(x, metas),
                          'torch mmpretrain': lambda: twin.encode_decode(x, metas)}
        else:
            data = detection_input(cfg, image)
            assert tuple(data['data_samples'][0].img_shape) == self.size  # the resize keeps it
            self.calls = {'onnxruntime': lambda: onnx_model.run(image)['scores'],
                          'torch': lambda: model.test_step(data)[0].pred_instances.scores,
                          'torch mmpretrain':
                          lambda: twin.test_step(data)[0].pred_instances.scores}
        self.times = {v: [] for v in VARIANTS}
        self.outputs = {}

    def run(self, variant: str) -> None:
        with torch.no_grad():
            start = time.perf_counter()
            output = self.calls[variant]()
            self.times[variant].append(time.perf_counter() - start)
        self.outputs.setdefault(variant, np.asarray(output, np.float64))

    def check(self) -> str:
        """How far the three outputs are apart (logits, or detection scores)."""
        ref = self.outputs['torch']
        far = [f'{v} {np.abs(self.outputs[v] - ref).max():.1e}'
               if self.outputs[v].shape == ref.shape else f'{v} shape {self.outputs[v].shape}'
               for v in ('onnxruntime', 'torch mmpretrain')]
        what = 'logits' if self.task == 'segmentation' else f'{len(ref)} detection scores'
        return f'{self.name}: {what} vs torch: ' + ', '.join(far)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', help='default: Mask R-CNN T and UPerNet T')
    parser.add_argument('--size', nargs=2, type=int, action='append', metavar=('H', 'W'),
                        help='one per config (default 800 1216 / 512 512)')
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--threads', type=int, help="torch's threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = DEFAULTS if not args.configs else [
        (c, (args.size or [None] * len(args.configs))[i] or (512, 512))
        for i, c in enumerate(args.configs)]
    with tempfile.TemporaryDirectory() as folder:
        cases = [Case(path, size, folder) for path, size in cases]
        for _ in range(args.runs + 1):  # the first round is a warm-up
            for case in cases:
                for variant in VARIANTS:
                    case.run(variant)
    print('| config | input | onnxruntime s | torch s (this backbone) | torch s (mmpretrain '
          'ConvNeXt) | ort / torch | export s | file MiB |')
    print('|---|---|---|---|---|---|---|---|')
    for case in cases:
        s = {v: statistics.median(case.times[v][1:]) for v in VARIANTS}
        print(f'| {case.name} | {case.size[0]}x{case.size[1]} | {s["onnxruntime"]:.2f} | '
              f'{s["torch"]:.2f} | {s["torch mmpretrain"]:.2f} | '
              f'{s["onnxruntime"] / s["torch"]:.2f} | {case.export_s:.1f} | '
              f'{case.size_mib:.1f} |')
    import onnxruntime
    print(f'torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime '
          f'{onnxruntime.__version__}, {platform.processor() or platform.machine()}')
    for case in cases:
        print(case.check())
        print(f'{case.name} runs (s): ' + '; '.join(
            f'{v} {[round(t, 2) for t in case.times[v]]}' for v in VARIANTS))


if __name__ == '__main__':
    sys.exit(main())

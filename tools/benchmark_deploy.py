"""Time exported models in onnxruntime and OpenVINO, fp32, bf16 and INT8, against PyTorch eager
with this package's backbone; and the backbone alone in each beside its matmul floor.

    python tools/benchmark_deploy.py [CONFIG [CONFIG ...]] [--size H W ...] [--runs 3]
        [--variants torch ort-fp32 ort-int8 ov-fp32 ov-bf16 ov-int8] [--score-thr 0]
        [--backbone-size 512 512 | --no-backbone] [--calib-images 2] [--threads N] [--profile]

Default: configs/mask_rcnn_convnext_t.py and configs/cascade_mask_rcnn_convnext_t.py at
800x1216, configs/upernet_convnext_t.py at 512x512, then ConvNeXt-T alone at 512x512 (eval,
the four stages' outputs). Each model gets random weights (the config's initialisation) and is
exported (detection: the any-size file, the default; segmentation: one window of --size),
quantized by tools/quantize.py's code (calibrated on --calib-images random images of the
size; the backbone on random normalised inputs) and compiled by each runtime. Then, case by
case, every variant runs on the same input, interleaved (each variant once per round, the first
round a warm-up), and the medians of --runs rounds are printed as one Markdown table, with each
variant's agreement with PyTorch's output:

- torch: PyTorch eager, fp32, the model as built (mmdet's ``test_step`` on the packed input:
  preprocessing to pasted masks; mmseg's ``encode_decode`` on the normalised window; the
  backbone's forward). ``torch-opt``: the same through ``optimize_for_inference`` (what
  tools/test.py runs on the CPU); ``mmpretrain``: the config with mmpretrain's ConvNeXt
  holding the same weights (the MMDetection / MMSegmentation zoo's backbone).
- ort-fp32 / ort-int8: onnxruntime on the fp32 and INT8 files (the graph's one call);
  ov-fp32 / ov-bf16 / ov-int8: OpenVINO, INFERENCE_PRECISION_HINT f32 or bf16 (bf16 left out,
  said, where the CPU has no AVX512_BF16 / AMX; the INT8 file's float parts in f32).
- the backbone rows add "x floor": the time over the matmul floor of the backbone's pointwise
  linears at this input (``convnext_backbone.benchmark.floor.MatmulFloor``, docs/speed.md),
  stepped in the same rounds.

``--profile`` then runs each model's onnxruntime files (ort-fp32, ort-int8) under onnxruntime's
profiler and prints the time per operator type (docs/deploy.md's tables).

Agreement with PyTorch: detection, the detections matched one to one (same label, box IoU >=
0.5) over the larger count; segmentation, the label maps' equal pixels; backbone, the largest
difference of the last stage's output over its largest magnitude. Random weights: reported,
not asserted. Detection uses ``score_thr=0`` by default (the R-CNN's, RTMDet's; DINO has
none), so that each run keeps its ``max_per_img`` (Mask R-CNN: 100) detections as a trained
model on a busy image does; ``--score-thr config`` keeps the config's own (random weights then
score below it: no detections, no mask head).
"""
import argparse
import gc
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import MODELS, DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULTS = [(osp.join(ROOT, 'configs/mask_rcnn_convnext_t.py'), (800, 1216)),
            (osp.join(ROOT, 'configs/cascade_mask_rcnn_convnext_t.py'), (800, 1216)),
            (osp.join(ROOT, 'configs/upernet_convnext_t.py'), (512, 512))]
# name: (runtime, precision) of the exported variants; torch variants run the model itself
EXPORTED = {'ort-fp32': ('onnxruntime', 'fp32'), 'ort-int8': ('onnxruntime', 'int8'),
            'ov-fp32': ('openvino', 'fp32'), 'ov-bf16': ('openvino', 'bf16'),
            'ov-int8': ('openvino', 'int8')}
TORCH = {'torch': 'PyTorch eager', 'torch-opt': 'PyTorch, optimize_for_inference',
         'mmpretrain': "PyTorch eager, mmpretrain's ConvNeXt"}
VARIANTS = [*TORCH, *EXPORTED]
DEFAULT_VARIANTS = ['torch', 'ort-fp32', 'ort-int8', 'ov-fp32', 'ov-bf16', 'ov-int8']


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


def random_image(size, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (*size, 3)).astype(np.uint8)


def bf16_available() -> bool:
    import openvino
    return 'BF16' in openvino.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


class Case:
    """One model at one size: the calls to time (one per variant), their outputs, their times.

    Subclasses set ``name``, ``size``, ``calls`` (variant -> callable returning an output for
    ``agreement``), ``notes`` (export / quantization figures)."""

    floor = None

    def __init__(self) -> None:
        self.times = {}
        self.outputs = {}

    def run(self, variant: str) -> None:
        with torch.no_grad():
            start = time.perf_counter()
            output = self.calls[variant]()
            self.times.setdefault(variant, []).append(time.perf_counter() - start)
        self.outputs.setdefault(variant, output)

    def median(self, variant: str) -> float:
        return statistics.median(self.times[variant][1:])  # the first round: a warm-up


class WholeModel(Case):
    """A config's detector or segmentor, exported, quantized, in each runtime."""

    def __init__(self, path: str, size, folder: str, variants, score_thr: str,
                 calib_images: int) -> None:
        super().__init__()
        from convnext_backbone.deploy.export import export_onnx
        from convnext_backbone.deploy.runtime import OnnxModel
        cfg = Config.fromfile(path)
        cfg.model.backbone.init_cfg = None
        self.name, self.size = osp.basename(path), tuple(size)
        self.task = 'detection' if cfg.default_scope == 'mmdet' else 'segmentation'
        if self.task == 'segmentation':
            cfg.model.test_cfg = dict(mode='whole')  # one forward at --size
        image = random_image(self.size, 0)
        if self.task == 'detection':
            # the two-stage detectors' R-CNN test, RTMDet's own; DINO keeps max_per_img
            test_cfg = cfg.model.test_cfg.get('rcnn', cfg.model.test_cfg)
            if 'score_thr' in test_cfg:
                if score_thr != 'config':
                    test_cfg.score_thr = float(score_thr)
                self.name += f' (score_thr {test_cfg.score_thr:g})'
            resized = tuple(detection_input(cfg, image)['data_samples'][0].img_shape)
            if resized != self.size:  # every variant must see the same pixels
                sys.exit(f'--size {self.size[0]} {self.size[1]}: the test resize of {self.name} '
                         f'makes it {resized[0]}x{resized[1]}; give a size it keeps (one '
                         '--size per config; the paper configs keep 800 1216)')
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = MODELS.build(cfg.model).eval()
        stem = osp.join(folder, osp.basename(path))
        checkpoint = stem + '.pth'
        torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
        start = time.perf_counter()
        export_onnx(cfg, checkpoint, stem + '.onnx',
                    shape=self.size if self.task == 'segmentation' else None)
        self.notes = [f'export {time.perf_counter() - start:.1f} s, '
                      f'{osp.getsize(stem + ".onnx") / 2**20:.1f} MiB']
        if any(EXPORTED[v][1] == 'int8' for v in variants if v in EXPORTED):
            from convnext_backbone.deploy.quantize import quantize_onnx
            paths = []
            for index in range(calib_images):
                paths.append(osp.join(folder, f'calibration_{index}.png'))
                cv2.imwrite(paths[-1], random_image(self.size, index + 1))
            added = quantize_onnx(stem + '.onnx', stem + '.int8.onnx', paths)
            self.notes.append(f'quantize {added["seconds"]:.1f} s ({len(added["quantized_nodes"])}'
                              f' nodes, {calib_images} random images), '
                              f'{osp.getsize(stem + ".int8.onnx") / 2**20:.1f} MiB')
        self.calls = {}
        torch_models = {'torch': model}
        if 'torch-opt' in variants:
            from convnext_backbone.inference import optimize_for_inference
            torch_models['torch-opt'] = optimize_for_inference(model)
        if 'mmpretrain' in variants:
            torch_models['mmpretrain'] = mmpretrain_twin(cfg, model)
        if self.task == 'segmentation':
            x = torch.from_numpy(image).permute(2, 0, 1)[None, [2, 1, 0]].float()
            x = (x - model.data_preprocessor.mean) / model.data_preprocessor.std
            metas = [dict(img_shape=self.size)]
            for name, net in torch_models.items():
                self.calls[name] = lambda net=net: net.encode_decode(x, metas).argmax(1)[0].numpy()
        else:
            data = detection_input(cfg, image)

            def detect(net):
                found = net.test_step(data)[0].pred_instances
                return SimpleNamespace(boxes=found.bboxes.numpy(), labels=found.labels.numpy())
            for name, net in torch_models.items():
                self.calls[name] = lambda net=net: detect(net)
        self.image = image
        self.onnxruntime_models = {}
        for variant in variants:
            if variant in EXPORTED:
                backend, precision = EXPORTED[variant]
                file = stem + ('.int8.onnx' if precision == 'int8' else '.onnx')
                # (onnxruntime fp32 as the package's OnnxModel has always taken it, so that
                # an earlier checkout's package profiles too: docs/deploy.md)
                onnx_model = OnnxModel(file) if variant == 'ort-fp32' else OnnxModel(
                    file, backend=backend, precision='bf16' if precision == 'bf16' else 'f32')
                self.calls[variant] = lambda m=onnx_model: self._exported(m, image)
                if backend == 'onnxruntime':
                    self.onnxruntime_models[variant] = onnx_model

    def profile(self, runs: int) -> str:
        """onnxruntime's own profiler (``SessionOptions.enable_profiling``) on the case's
        onnxruntime files: each operator type's time per run over ``runs`` runs after one left
        out, as a Markdown table per file."""
        import onnxruntime as ort
        tables = []
        for variant, model in self.onnxruntime_models.items():
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = osp.join(osp.dirname(model.path), variant)
            session = ort.InferenceSession(model.path, options,
                                           providers=['CPUExecutionProvider'])
            feeds = {'image': self.image[None]}
            if self.task == 'detection':  # the image at its size: no resize
                feeds.update(scale_factor=np.ones(2, np.float32),
                             original_size=np.asarray(self.size, np.int64))
            taken = {i.name for i in session.get_inputs()}  # one-stage / DINO: no original_size
            feeds = {name: value for name, value in feeds.items() if name in taken}
            for _ in range(runs + 1):
                session.run(None, feeds)
            tables.append(f'{self.name} {self.size[0]}x{self.size[1]}, {variant} (onnxruntime '
                          f'profiler, {runs} runs after one left out):\n\n' +
                          operator_table(session.end_profiling()))
        return '\n\n'.join(tables)

    def _exported(self, model, image):
        outputs = model.run(image)
        if self.task == 'segmentation':
            return outputs['labels'][0]
        return SimpleNamespace(boxes=outputs['boxes'], labels=outputs['labels'])

    def agreement(self, variant: str) -> str:
        from convnext_backbone.deploy.agreement import detection_agreement, label_agreement
        ours, reference = self.outputs[variant], self.outputs['torch']
        if self.task == 'segmentation':
            return f'{100 * label_agreement(reference, ours):.2f}% pixels'
        count = max(len(reference.boxes), len(ours.boxes))
        if not count:  # random weights under the config's score_thr: nothing to compare
            return 'no detections in either'
        return f'{100 * detection_agreement(reference, ours):.0f}% of {count} detections'


class Backbone(Case):
    """ConvNeXt-T alone (eval, the four stages' outputs) at one size, exported and quantized,
    beside the matmul floor of its pointwise linears."""

    def __init__(self, size, folder: str, variants, calib_images: int) -> None:
        super().__init__()
        import onnx
        from convnext_backbone import ConvNeXt
        from convnext_backbone.benchmark.floor import MatmulFloor
        from convnext_backbone.deploy.export import OPSET
        from convnext_backbone.deploy.quantize import quantize_graph
        from convnext_backbone.deploy.runtime import OnnxRuntimeSession, OpenVinoSession
        self.name, self.size = 'ConvNeXt-T backbone', tuple(size)
        model = ConvNeXt(arch='tiny', out_indices=(0, 1, 2, 3)).eval()
        x = torch.randn(1, 3, *self.size, generator=torch.Generator().manual_seed(0))
        path = osp.join(folder, 'backbone.onnx')
        start = time.perf_counter()
        torch.onnx.export(model, (x, ), path, dynamo=False, opset_version=OPSET,
                          input_names=['input'],
                          output_names=[f'stage{i}' for i in range(4)])
        self.notes = [f'export {time.perf_counter() - start:.1f} s']
        if any(EXPORTED[v][1] == 'int8' for v in variants if v in EXPORTED):
            start = time.perf_counter()
            feeds = ({'input': torch.randn(1, 3, *self.size).numpy()}
                     for _ in range(calib_images))
            quantize_graph(onnx.load(path), osp.join(folder, 'backbone.int8.onnx'), feeds)
            self.notes.append(f'quantize {time.perf_counter() - start:.1f} s')
        self.calls = {'torch': lambda: model(x)[-1].numpy()}
        if 'torch-opt' in variants:
            from convnext_backbone.inference import optimize_for_inference
            optimized = optimize_for_inference(model)
            self.calls['torch-opt'] = lambda: optimized(x)[-1].numpy()
        feeds = {'input': x.numpy()}
        for variant in variants:
            if variant in EXPORTED:
                backend, precision = EXPORTED[variant]
                file = osp.join(folder, 'backbone' + ('.int8' if precision == 'int8' else '') +
                                '.onnx')
                session = (OnnxRuntimeSession(file) if backend == 'onnxruntime' else
                           OpenVinoSession(file, 'bf16' if precision == 'bf16' else 'f32'))
                self.calls[variant] = lambda s=session: s.run(feeds)['stage3']
        self.floor = MatmulFloor(model, x, mode='eval', dtype=None)

    def run(self, variant: str) -> None:
        super().run(variant)
        if variant == 'torch':  # the floor steps once a round, beside the model
            self.floor.step()

    def agreement(self, variant: str) -> str:
        ours, reference = self.outputs[variant], self.outputs['torch']
        return (f'last stage within {np.abs(ours - reference).max() / np.abs(reference).max():.1e}'
                ' of its largest')


def operator_table(profile: str) -> str:
    """An onnxruntime profile (JSON) as a Markdown table: per operator type, its nodes' time
    per run and share of the run, over the runs after the first."""
    import json
    with open(profile) as f:
        events = json.load(f)
    runs = sorted((e for e in events if e.get('name') == 'model_run'), key=lambda e: e['ts'])
    start = runs[0]['ts'] + runs[0]['dur']  # the first run is left out
    counted = runs[1:]
    per_run = sum(e['dur'] for e in counted) / len(counted) / 1e6
    times, nodes = {}, {}
    for event in events:
        if event.get('cat') == 'Node' and event['ts'] >= start and \
                event['name'].endswith('_kernel_time'):
            kind = event['args']['op_name']
            times[kind] = times.get(kind, 0.0) + event['dur'] / 1e6 / len(counted)
            nodes.setdefault(kind, set()).add(event['name'])
    lines = ['| operator | nodes | s per run | share of the run |', '|---|---|---|---|']
    for kind, seconds in sorted(times.items(), key=lambda item: -item[1]):
        if seconds / per_run >= 0.005:
            lines.append(f'| {kind} | {len(nodes[kind])} | {seconds:.3f} | '
                         f'{100 * seconds / per_run:.1f}% |')
    rest = per_run - sum(times.values())
    lines.append(f'| (operators under 0.5%, and between operators) | | '
                 f'{rest + sum(t for t in times.values() if t / per_run < 0.005):.3f} | |')
    lines.append(f'| the run (model_run) | | {per_run:.3f} | 100% |')
    return '\n'.join(lines)


def table(cases) -> str:
    lines = ['| model | input | variant | median s | x PyTorch eager | x matmul floor | '
             'agreement with PyTorch |', '|---|---|---|---|---|---|---|']
    for case in cases:
        reference = case.median('torch')
        for variant in case.calls:
            seconds = case.median(variant)
            floor = (f'{seconds / case.floor.seconds():.2f}' if case.floor is not None else '')
            agreement = '(reference)' if variant == 'torch' else case.agreement(variant)
            lines.append(f'| {case.name} | {case.size[0]}x{case.size[1]} | {variant} | '
                         f'{seconds:.3f} | {seconds / reference:.2f} | {floor} | {agreement} |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('configs', nargs='*', help='default: Mask R-CNN T, Cascade Mask R-CNN '
                        'T, UPerNet T')
    parser.add_argument('--size', nargs=2, type=int, action='append', metavar=('H', 'W'),
                        help='one per config (default 800 1216, 800 1216, 512 512)')
    parser.add_argument('--runs', type=int, default=3, help='timed rounds (after a warm-up)')
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=DEFAULT_VARIANTS)
    parser.add_argument('--score-thr', default='0', help="detection's score_thr: a number, or "
                        "'config' for the config's own")
    parser.add_argument('--backbone-size', nargs=2, type=int, default=(512, 512),
                        metavar=('H', 'W'))
    parser.add_argument('--no-backbone', action='store_true', help='leave the backbone out')
    parser.add_argument('--calib-images', type=int, default=2,
                        help='random calibration images per model (default 2)')
    parser.add_argument('--threads', type=int, help="torch's threads (default: torch's)")
    parser.add_argument('--profile', action='store_true',
                        help="then onnxruntime's profiler on each model's onnxruntime files: "
                        'time per operator type')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = list(dict.fromkeys(['torch', *args.variants]))  # torch: the reference
    if 'ov-bf16' in variants and not bf16_available():
        print('ov-bf16 left out: OpenVINO sees no bf16 instructions (AVX512_BF16 / AMX) here')
        variants.remove('ov-bf16')
    if args.configs:
        sizes = args.size or []
        configs = [(c, sizes[i] if i < len(sizes) else (512, 512))
                   for i, c in enumerate(args.configs)]
    else:
        configs = [(c, (args.size or [])[i] if i < len(args.size or []) else s)
                   for i, (c, s) in enumerate(DEFAULTS)]
    done = []
    with tempfile.TemporaryDirectory() as folder:
        makers = [lambda c=c, s=s: WholeModel(c, s, folder, variants, args.score_thr,
                                              args.calib_images) for c, s in configs]
        if not args.no_backbone:
            makers.append(lambda: Backbone(args.backbone_size, folder,
                                           [v for v in variants if v != 'mmpretrain'],
                                           args.calib_images))
        for make in makers:  # one case at a time: its runtimes interleaved, then freed
            case = make()
            for _ in range(args.runs + 1):
                for variant in case.calls:
                    case.run(variant)
            if args.profile and isinstance(case, WholeModel):
                print(case.profile(args.runs), flush=True)
            del case.calls
            case.calls = dict.fromkeys(case.times)
            case.onnxruntime_models = {}
            done.append(case)
            print(f'{case.name} {case.size[0]}x{case.size[1]}: {"; ".join(case.notes)}; runs (s): '
                  + '; '.join(f'{v} {[round(t, 2) for t in case.times[v]]}'
                              for v in case.times), flush=True)
            gc.collect()
    print()
    print(table(done))
    import onnxruntime
    import openvino
    print(f'\ntorch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime '
          f"{onnxruntime.__version__}, openvino {openvino.__version__.split('-')[0]}, "
          f'{platform.processor() or platform.machine()}; medians of {args.runs} interleaved '
          'rounds after a warm-up')


if __name__ == '__main__':
    sys.exit(main())

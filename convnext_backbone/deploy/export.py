"""Export a config's detector or segmentor, loaded from a whole-model checkpoint, to one ONNX
file that ``deploy.runtime`` (onnxruntime, numpy, OpenCV) runs without mmcv, mmdet or mmseg.

The checkpoint is loaded by ``checkpoints.load_model_checkpoint(model, path, 'eval')``, the
loader of ``tools/test.py``: a checkpoint that does not fit the config's model is refused in
the same words and nothing is written. The file is written next to ``out`` under a temporary
name and renamed when complete, so an interrupted export leaves nothing at ``out``.

Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it exports torchvision's NMS and
RoIAlign as the ONNX operators (the ``torch.export`` one has no rules for them) and sizes traced
from the input stay symbolic in the graph, so one file can take any size (``dynamic``).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import os.path as osp
import uuid
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, DefaultScope

from ..checkpoints import load_model_checkpoint
from ..checkpoints.download import checkpoint_path, is_url
from ..data.configure import innermost_dataset
from ..engine import config_dataset_meta
from ..errors import DeployError
from .detector import DetectorForExport
from .detr import DETECTORS as DETR_DETECTORS
from .detr import DetrForExport
from .one_stage import DETECTORS as ONE_STAGE_DETECTORS
from .one_stage import OneStageDetectorForExport, pad_settings
from .inputs import swaps_channels
from .segmentor import SegmentorForExport

# 16: RoiAlign's coordinate_transformation_mode (half_pixel = mmcv's aligned=True).
OPSET = 17
# The message of torch's FutureWarning at every TorchScript-based export (see export_onnx).
TORCHSCRIPT_DEPRECATION = '.*TorchScript-based ONNX export.*'
TASKS = {'mmseg': 'segmentation', 'mmdet': 'detection'}
# The test-pipeline steps the runtime reproduces; anything else is refused. A ``Pad`` is
# reproduced in the graph of the detectors that take one (RTMDet: deploy/one_stage.py) and
# refused for the others.
PIPELINE_STEPS = ('LoadImageFromFile', 'LoadAnnotations', 'Resize', 'Pad', 'PackSegInputs',
                  'PackDetInputs')
# DETR-style detectors other than DINO (deploy/detr.py), refused by name (docs/deploy.md,
# "DINO").
DETR_STYLE = ('DeformableDETR', 'ConditionalDETR', 'DABDETR', 'DETR')


# ------------------------------------------------------------------- the config's test time
def _step_kind(step: dict) -> str:
    """A pipeline step's transform name (``'Resize'`` of ``'mmdet.Resize'`` or the class)."""
    kind = step.get('type')
    return kind.split('.')[-1] if isinstance(kind, str) else getattr(kind, '__name__', kind)


def test_resize_of(cfg: Config) -> Optional[dict]:
    """The test pipeline's ``Resize`` as the runtime's metadata (``scale`` or ``scale_factor``,
    ``keep_ratio``, ``interpolation``); None if it has none. Refuses steps the runtime does
    not reproduce, naming them."""
    pipeline = innermost_dataset(cfg.test_dataloader.dataset).get('pipeline') or []
    resize = None
    for step in pipeline:
        kind = _step_kind(step)
        if kind not in PIPELINE_STEPS:
            raise DeployError(f'The test pipeline has a {kind} step, which the ONNX runtime does '
                              f'not reproduce; it handles {", ".join(PIPELINE_STEPS)}')
        if kind == 'LoadImageFromFile' and (step.get('color_type', 'color') != 'color' or
                                            step.get('imdecode_backend', 'cv2') != 'cv2'):
            raise DeployError('The runtime reads images as LoadImageFromFile(color_type='
                              "'color', imdecode_backend='cv2') does; the test pipeline has "
                              f'{dict(step)}')
        if kind == 'Resize':
            if step.get('backend', 'cv2') != 'cv2':
                raise DeployError(f"The runtime resizes with OpenCV (backend='cv2'); the "
                                  f"test pipeline's Resize has backend={step['backend']!r}")
            scale = step.get('scale')
            resize = dict(scale=[scale, scale] if isinstance(scale, int) else
                          (list(scale) if scale is not None else None),
                          scale_factor=step.get('scale_factor'),
                          keep_ratio=bool(step.get('keep_ratio', False)),
                          interpolation=step.get('interpolation', 'bilinear'))
    return resize


def test_pad_of(cfg: Config) -> Optional[dict]:
    """The test pipeline's ``Pad`` as the graph reproduces it (``one_stage.pad_settings``); None
    if it has none."""
    pipeline = innermost_dataset(cfg.test_dataloader.dataset).get('pipeline') or []
    pads = [step for step in pipeline if _step_kind(step) == 'Pad']
    if len(pads) > 1:
        raise DeployError(f'The test pipeline pads {len(pads)} times; the exporter reproduces '
                          'one Pad')
    return pad_settings(pads[0]) if pads else None


def config_fingerprint(cfg: Config) -> str:
    """sha256 of what the predictions depend on: the model config (classes included) and the
    test resize; a file is evaluated only with a config of the same fingerprint."""
    model = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else cfg.model)
    model.get('backbone', {}).pop('init_cfg', None)  # ImageNet weights: replaced by the file
    model.pop('train_cfg', None)
    pad = test_pad_of(cfg)  # (only where there is one: the fingerprints of others stay)
    text = json.dumps(dict(model=model, resize=test_resize_of(cfg), **({'pad': pad} if pad
                                                                       else {})),
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a checkpoint file, or of a model folder's files (names and contents)."""
    digest = hashlib.sha256()
    paths = [path] if osp.isfile(path) else sorted(
        osp.join(root, name) for root, _, names in os.walk(path) for name in names)
    for item in paths:
        if osp.isdir(path):
            digest.update(osp.relpath(item, path).encode())
        with open(item, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ the model
def build_loaded_model(cfg: Config, checkpoint: str) -> Tuple[torch.nn.Module, dict]:
    """The config's model (eval mode, CPU) with the checkpoint loaded exactly as tools/test.py
    loads it, and the dataset meta (classes, palette) to use."""
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
        config_meta = config_dataset_meta(cfg.test_dataloader.dataset)
    # The checkpoint replaces every weight: no ImageNet download for the init_cfg.
    _, _, meta = load_model_checkpoint(model, checkpoint, 'eval', config_meta=config_meta)
    return model.eval(), dict(meta or config_meta or {})


def _segmentation_settings(cfg: Config, model, shape: Optional[Sequence[int]],
                           dynamic: bool) -> Tuple[dict, Optional[Tuple[int, int]]]:
    """The sliding-window metadata and the fixed input size (None: any size)."""
    test_cfg = cfg.model.get('test_cfg') or {}
    mode = test_cfg.get('mode', 'whole')
    preprocess_cfg = model.data_preprocessor.test_cfg
    settings = dict(test_mode=mode, align_corners=bool(model.decode_head.align_corners),
                    threshold=float(getattr(model.decode_head, 'threshold', None) or 0.3))
    if mode == 'slide':
        if preprocess_cfg:
            raise DeployError('A sliding-window config whose data_preprocessor pads at test time '
                              f'(test_cfg={dict(preprocess_cfg)}) is not handled by the exporter')
        crop = tuple(int(s) for s in test_cfg['crop_size'])
        settings.update(crop_size=list(crop), stride=[int(s) for s in test_cfg['stride']])
        if dynamic:
            return settings, None
        if shape is not None and tuple(shape) != crop:
            raise DeployError(f'The config segments in sliding {crop[0]}x{crop[1]} windows '
                              f'(model.test_cfg.crop_size): export with --shape {crop[0]} '
                              f'{crop[1]} (the default) or --dynamic, not --shape '
                              f'{shape[0]} {shape[1]}')
        return settings, crop
    if mode != 'whole':
        raise DeployError(f"model.test_cfg.mode={mode!r}: the exporter handles 'whole' and "
                          "'slide'")
    if shape is None and not dynamic:
        print_log('Whole-image segmentation: test images vary in size, so the file takes any '
                  'size (as --dynamic); --shape H W fixes one', logger='current')
    return settings, (None if dynamic or shape is None else tuple(shape))


def _config_values(preprocessor_cfg: dict, key: str, preprocessor) -> Optional[List[float]]:
    """The config's mean or std (its numbers, not their float32 buffers); None when the data
    preprocessor does not normalise."""
    if not preprocessor._enable_normalize:
        return None
    values = preprocessor_cfg.get(key)
    if values is None:
        values = getattr(preprocessor, key).flatten().tolist()
    return [float(v) for v in values]


def _detection_settings(model, shape: Optional[Sequence[int]],
                        dynamic: bool) -> Tuple[dict, Optional[Tuple[int, int]]]:
    """The detection metadata and the fixed input size (None: any size, the default: test
    images keep their aspect ratio, so their sizes vary)."""
    if hasattr(model, 'roi_head'):
        rcnn = model.roi_head.test_cfg
        settings = dict(score_thr=float(rcnn.score_thr), max_per_img=int(rcnn.max_per_img),
                        mask_thr_binary=float(rcnn.mask_thr_binary))
    elif type(model).__name__ in DETR_DETECTORS:  # no threshold, no NMS
        settings = dict(max_per_img=int(model.bbox_head.test_cfg.get(
            'max_per_img', model.num_queries)))
    else:  # one-stage: boxes only
        test_cfg = model.bbox_head.test_cfg
        settings = dict(score_thr=float(test_cfg.get('score_thr', 0)),
                        max_per_img=int(test_cfg.max_per_img), nms_pre=int(test_cfg.nms_pre))
    settings['pad_size_divisor'] = int(model.data_preprocessor.pad_size_divisor)
    if shape is None and not dynamic:
        print_log('Detection: test images keep their aspect ratio, so the file takes any size '
                  '(as --dynamic); --shape H W fixes one', logger='current')
    return settings, (None if dynamic or shape is None else tuple(shape))


def _trace_example(fixed: Optional[Tuple[int, int]], settings: dict) -> Tuple[int, int]:
    """The input size to trace with: the fixed size, else the crop size, else a size that is
    no multiple of the strides, so that no size-dependent constant hides."""
    if fixed is not None:
        return fixed
    if settings.get('crop_size'):
        return tuple(settings['crop_size'])
    return (200, 232)


@contextlib.contextmanager
def replaced_when_complete(out: str) -> Iterator[str]:
    """A temporary path next to ``out`` to write the file to; renamed to ``out`` when the block
    ends without an error, removed otherwise (an interrupted write leaves nothing at ``out``).

    The temporary file is created by whoever writes it, with the mode any new file gets (the
    umask), not ``tempfile.mkstemp``'s 0600, which a server running as another user could not
    read."""
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    temporary = osp.join(folder, f'.{osp.basename(out)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part')
    try:
        yield temporary
        os.replace(temporary, out)
    finally:
        if osp.exists(temporary):
            os.remove(temporary)


def _check_operators(onnx_model) -> None:
    """Refuse a graph with operators outside the standard ONNX domain (mmcv's custom RoIAlign
    or NMS would need mmcv's onnxruntime plug-in)."""
    custom = sorted({f'{n.domain}::{n.op_type}' for n in onnx_model.graph.node
                     if n.domain not in ('', 'ai.onnx')})
    if custom:
        raise DeployError(f'The exported graph has non-standard operators ({", ".join(custom)}); '
                          'the runtime runs standard ONNX only')


def export_onnx(cfg: Config,
                checkpoint: str,
                out: str,
                shape: Optional[Sequence[int]] = None,
                dynamic: bool = False,
                config_name: Optional[str] = None,
                opset: int = OPSET) -> Dict[str, object]:
    """Export the config's model with the checkpoint's weights to ``out``.

    Args:
        cfg (Config): The config (``cli.prepare_config``: ``--data`` already applied).
        checkpoint (str): A whole-model checkpoint (file, Hugging Face folder or URL) that fits
            the config's model exactly.
        out (str): The ``.onnx`` file to write (replaced if it exists).
        shape (Sequence[int], optional): (h, w) of the input the file takes. Default: the
            sliding window's size, any size for whole-image segmentation.
        dynamic (bool): One file for any input size (batch 1).
        config_name (str, optional): The config's name in the metadata (its file name).
        opset (int): ONNX opset (>= 16 for RoiAlign's half_pixel).

    Returns:
        The metadata written into the file (before JSON encoding).
    """
    import onnx
    if shape is not None and dynamic:
        raise DeployError('Give --shape H W or --dynamic, not both')
    task = TASKS.get(cfg.get('default_scope'))
    if task is None:
        raise DeployError(f"The config's default_scope is {cfg.get('default_scope')!r}; "
                          f"expected one of {', '.join(TASKS)}")
    local = checkpoint_path(checkpoint) if is_url(checkpoint) else checkpoint
    test_resize = test_resize_of(cfg)  # refuses a pipeline the runtime cannot follow, early
    pad = test_pad_of(cfg)
    kind = cfg.model.get('type')
    if task == 'detection' and kind in DETR_STYLE:  # before anything is read
        raise DeployError(
            f'{kind} is not exported: of the DETR-style detectors the exporter reproduces '
            f"DINO's test path only (its queries, head and post-processing), not {kind}'s; "
            'evaluate it with its checkpoint (tools/test.py) (docs/deploy.md, "DINO")')
    if pad is not None and kind not in ONE_STAGE_DETECTORS:
        raise DeployError(f"The test pipeline pads the image (Pad); the exporter reproduces a "
                          f"Pad in the graphs of {', '.join(ONE_STAGE_DETECTORS)} only, not of "
                          f'a {kind}')
    fingerprint = config_fingerprint(cfg)  # before building: mmdet's builders edit cfg.model
    model, dataset_meta = build_loaded_model(cfg, local)
    if task == 'segmentation':
        settings, fixed = _segmentation_settings(cfg, model, shape, dynamic)
        wrapper = SegmentorForExport(model).eval()
        inputs, outputs = ['image'], ['logits', 'labels']
        axes = {'logits': {2: 'height', 3: 'width'}, 'labels': {1: 'height', 2: 'width'}}
    else:
        one_stage = type(model).__name__ in ONE_STAGE_DETECTORS
        detr = type(model).__name__ in DETR_DETECTORS
        # (the wrappers refuse heads they do not handle)
        wrapper = (OneStageDetectorForExport(model, pad) if one_stage else
                   DetrForExport(model) if detr else DetectorForExport(model)).eval()
        boxes_only = one_stage or detr  # no masks, so no original size either
        settings, fixed = _detection_settings(model, shape, dynamic)
        inputs = ['image', 'scale_factor'] + ([] if boxes_only else ['original_size'])
        outputs = ['boxes', 'scores', 'labels'] + ([] if boxes_only else ['masks'])
        # the number of detections and the original size vary, whatever the input size
        axes = {'boxes': {0: 'detections'}, 'scores': {0: 'detections'},
                'labels': {0: 'detections'}}
        if not boxes_only:
            axes['masks'] = {0: 'detections', 1: 'original_height', 2: 'original_width'}
    if fixed is None:
        axes['image'] = {1: 'height', 2: 'width'}
    preprocessor = model.data_preprocessor
    meta = dict(
        task=task, exporter='convnext_backbone tools/export_onnx.py', precision='fp32',
        config=config_name or cfg.filename and osp.basename(cfg.filename),
        config_fingerprint=fingerprint,
        checkpoint=osp.basename(str(checkpoint).rstrip('/')),
        checkpoint_sha256=file_sha256(local),
        classes=list(dataset_meta.get('classes') or ()),
        palette=[list(map(int, c)) for c in dataset_meta.get('palette') or ()],
        input='image: (1, H, W, 3) uint8, BGR as LoadImageFromFile reads, after the test resize'
        + ('; scale_factor: (2,) float32 (w, h) of the resize' if task == 'detection' else '')
        + ('; original_size: (2,) int64 (h, w)' if 'original_size' in inputs else ''),
        input_channel_order='BGR',
        model_channel_order='RGB' if swaps_channels(preprocessor) else 'BGR',
        mean=_config_values(cfg.model.data_preprocessor, 'mean', preprocessor),
        std=_config_values(cfg.model.data_preprocessor, 'std', preprocessor),
        test_resize=test_resize,
        **({'test_pad': pad} if pad else {}),
        input_shape=list(fixed) if fixed is not None else 'dynamic',
        outputs=outputs, **settings)
    size = _trace_example(fixed, settings)
    example = torch.zeros((1, *size, 3), dtype=torch.uint8)
    example.random_(0, 256, generator=torch.Generator().manual_seed(0))
    example = (example, torch.tensor([1.0, 1.0]), torch.tensor(size, dtype=torch.long))
    example = example[:len(inputs)]  # the image, the scale factor, the original size
    with replaced_when_complete(out) as temporary:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export, which cannot
            # export torchvision's NMS / RoIAlign (module docstring); tracer warnings are about
            # Python values (sizes, counts) that the parity tests cover. Other warnings show.
            warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', message=TORCHSCRIPT_DEPRECATION)
            torch.onnx.export(wrapper, example, temporary, dynamo=False,
                              opset_version=opset, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes or None,
                              do_constant_folding=True)
        onnx_model = onnx.load(temporary)
        _check_operators(onnx_model)
        for key, value in meta.items():
            entry = onnx_model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.checker.check_model(onnx_model)
        onnx.save(onnx_model, temporary)
    size = osp.getsize(out) / 2**20
    print_log(f'Wrote {out} ({size:.1f} MiB, {task}, '
              f'{"any size" if fixed is None else f"{fixed[0]}x{fixed[1]}"} inputs, opset '
              f'{opset})', logger='current')
    return meta

"""An exported file evaluated and drawn as a checkpoint is: the config's test dataset and
metric (mmseg's ``IoUMetric``, mmdet's ``CocoMetric``) over the runtime's predictions, and the
config's visualizer. For ``tools/test.py`` and ``tools/infer.py`` given an ``.onnx`` file.

The predictions come from ``deploy.runtime`` alone (onnxruntime or OpenVINO); mmdet / mmseg
build only the dataset, the metric and the pictures. Needs the config's stack (mmdet or mmseg).
"""
from __future__ import annotations

import copy
import time
from typing import Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DefaultScope

from ..engine import config_dataset_meta
from ..errors import DeployError, shorten
from .export import TASKS, config_fingerprint
from .runtime import DetectionResult, OnnxModel, SegmentationResult


def check_file_fits_config(model: OnnxModel, cfg: Config, config: str) -> None:
    """Refuse a file made for another task, other classes or another config, naming what it
    was made for and how to make one for this config."""
    task = TASKS.get(cfg.get('default_scope'))
    again = (f'Export one from this config: python tools/export_onnx.py {config} CHECKPOINT '
             '--out FILE.onnx (with the same --data, if any)')
    if model.task != task:
        raise DeployError(f'{model.path} is a {model.task} model ({model.describe()}); {config} '
                          f'is a {task} config. {again}')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        config_meta = config_dataset_meta(cfg.test_dataloader.dataset) or {}
    config_classes = tuple(config_meta.get('classes') or ())
    if config_classes and model.classes != config_classes:
        raise DeployError(
            f"{model.path} was made for {model.describe()} with the classes "
            f"{shorten(model.classes, quote=True)}; the test data of {config} has the classes "
            f"{shorten(config_classes, quote=True)}. {again}")
    if model.meta.get('config_fingerprint') != config_fingerprint(cfg):
        raise DeployError(
            f"{model.path} was made for {model.describe()}: its model or test-time resize "
            f"differs from {config}'s (config fingerprints "
            f"{str(model.meta.get('config_fingerprint'))[:12]}... and "
            f'{config_fingerprint(cfg)[:12]}...). {again}')


def data_sample_of(result: 'SegmentationResult | DetectionResult', sample):
    """The runtime's prediction put into the data sample (SegDataSample / DetDataSample) as
    mmseg's / mmdet's models put theirs: ``pred_sem_seg`` and ``seg_logits``, or
    ``pred_instances`` (bboxes, scores, labels, masks)."""
    from mmengine.structures import InstanceData, PixelData
    sample = copy.copy(sample)
    if isinstance(result, SegmentationResult):
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(result.labels)[None])
        sample.seg_logits = PixelData(data=torch.from_numpy(result.logits))
        return sample
    instances = InstanceData()
    instances.bboxes = torch.from_numpy(result.boxes)
    instances.scores = torch.from_numpy(result.scores)
    instances.labels = torch.from_numpy(result.labels)
    if result.masks is not None:
        instances.masks = torch.from_numpy(result.masks)
    sample.pred_instances = instances
    return sample


def evaluate_onnx(cfg: Config, path: str, config: str, threads: Optional[int] = None,
                  backend: str = 'onnxruntime', precision: str = 'f32') -> dict:
    """The config's test metric of the exported file ``path``, logged as the test loop logs
    it (``Iter(test) [n/n]  mIoU: ...``); returns the metrics.

    Args:
        cfg (Config): The config (``cli.prepare_config``: ``--data`` already applied).
        path (str): The ``.onnx`` file (``tools/export_onnx.py``).
        config (str): The config's path, for messages.
        threads (int, optional): The runtime's intra-op threads.
        backend (str): ``'onnxruntime'`` or ``'openvino'``.
        precision (str): OpenVINO's inference precision, ``'f32'`` or ``'bf16'``.
    """
    from mmengine.evaluator import Evaluator
    from mmengine.runner import Runner
    model = OnnxModel(path, threads=threads, backend=backend, precision=precision)
    check_file_fits_config(model, cfg, config)
    print_log(f'Evaluating {path}: {model.describe()} with {model.execution}', logger='current')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        # The runtime reads each image itself (``model(sample.img_path)``); the loader gives
        # the annotations. Worker processes would only prepare unused tensors, and forking a
        # process that runs OpenVINO's thread pool corrupted this process's heap (a crash
        # later in an unrelated allocation, measured with OpenVINO 2026.4.1): no workers.
        loader = copy.deepcopy(cfg.test_dataloader)
        loader.update(num_workers=0, persistent_workers=False)
        dataloader = Runner.build_dataloader(loader)
        evaluator = Evaluator(copy.deepcopy(cfg.test_evaluator))
        evaluator.dataset_meta = dataloader.dataset.metainfo
        total = len(dataloader)
        start = time.perf_counter()
        for index, data_batch in enumerate(dataloader):
            samples = [data_sample_of(model(sample.img_path), sample)
                       for sample in data_batch['data_samples']]
            evaluator.process(data_samples=samples, data_batch=data_batch)
            if (index + 1) % 50 == 0:
                print_log(f'Iter(test) [{index + 1}/{total}]', logger='current')
        metrics = evaluator.evaluate(len(dataloader.dataset))
    seconds = time.perf_counter() - start
    figures = '  '.join(f'{k}: {round(float(v), 4)}' if isinstance(v, (int, float, np.number))
                        else f'{k}: {v}' for k, v in metrics.items())
    print_log(f'Iter(test) [{total}/{total}]    {figures}  ({model.execution}, {seconds:.1f} s)',
              logger='current')
    return metrics


class OnnxInferencer:
    """What tools/infer.py asks of mmdet's / mmseg's inferencers, for an exported file: called
    on an image path, the prediction as a data sample; ``visualizer``: the config's, with the
    file's classes and palette.

    Args:
        cfg (Config): The config (``--data`` already applied).
        path (str): The ``.onnx`` file; refused if made for another config or other classes.
        config (str): The config's path, for messages.
        backend (str): ``'onnxruntime'`` or ``'openvino'``.
        precision (str): OpenVINO's inference precision, ``'f32'`` or ``'bf16'``.
    """

    def __init__(self, cfg: Config, path: str, config: str, backend: str = 'onnxruntime',
                 precision: str = 'f32') -> None:
        from ..data.pictures import build_visualizer
        self.model = OnnxModel(path, backend=backend, precision=precision)
        check_file_fits_config(self.model, cfg, config)
        meta = dict(classes=self.model.classes)
        if self.model.meta.get('palette'):
            meta['palette'] = [tuple(c) for c in self.model.meta['palette']]
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            self.visualizer = build_visualizer(cfg, meta)
        self.visualizer.alpha = 0.6  # as tools/infer.py sets mmseg's

    def __call__(self, image_path: str, **kwargs):
        """The prediction on one image (``kwargs``: the inferencers' options, unused)."""
        from .runtime import read_image
        if self.model.task == 'segmentation':
            from mmseg.structures import SegDataSample as Sample
        else:
            from mmdet.structures import DetDataSample as Sample
        image = read_image(image_path)
        sample = Sample()
        sample.set_metainfo(dict(img_path=image_path, ori_shape=image.shape[:2]))
        return data_sample_of(self.model(image), sample)

"""Static INT8 post-training quantization of an exported file (``tools/quantize.py``), with
onnxruntime's quantizer in QDQ form, calibrated on images read and resized as the runtime
reads them, so that calibration sees what inference sees.

What is quantized (ConvNeXt-aware, by rule on the graph): every ``Conv``, ``MatMul`` and ``Gemm``
whose weight is a constant of the file, i.e. the learned layers of the backbone (stem,
downsampling and depthwise convolutions, the pointwise linears), the neck and the heads (RPN,
box and mask heads, decode head): weights INT8 symmetric per output channel, their inputs
UINT8 per tensor, calibrated by min / max. Everything else stays in float: LayerNorm, GELU,
GRN, layer scale, softmax / sigmoid, resizes, and the post-processing, whose matrix products
take computed operands (mask paste, adaptive pooling's bin weights), as do NMS, RoiAlign, box
decoding and the label map. onnxruntime and OpenVINO both run the file's quantized products
in INT8 (``runtime.OnnxModel(..., backend=...)``).

The written file keeps every metadata key of the fp32 file (classes, config fingerprint, test
resize...), so ``tools/test.py`` refuses it for another config as it refuses the fp32 file, and
adds ``precision='int8'``, ``quantizer`` (library, version, settings, calibration images) and
``quantized_nodes``. It is written under a temporary name next to ``out`` and renamed when
complete: an interrupted quantization leaves nothing at ``out``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import os.path as osp
import time
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np
from mmengine.config import Config
from mmengine.logging import print_log

from ..data.configure import innermost_dataset
from ..data.layouts import IMAGE_SUFFIXES
from ..errors import DataError, DeployError, shorten
from .export import file_sha256, replaced_when_complete
from .runtime import OnnxModel, read_image, resize_image, slide_windows

# The operators whose constant weights are quantized (per output channel: Conv's axis 0, the
# (K, N) weight of MatMul its axis 1, Gemm's (N, K) weight (transB) its axis 0).
WEIGHT_OPERATORS = ('Conv', 'MatMul', 'Gemm')
DEFAULT_CALIBRATION_IMAGES = 32


# ------------------------------------------------------------------------------- the graph
def _constants(graph) -> set:
    """Names of the graph's constant tensors: initializers and ``Constant`` outputs."""
    names = {i.name for i in graph.initializer}
    names.update(out for n in graph.node if n.op_type == 'Constant' for out in n.output)
    return names


def fold_identity_constants(onnx_model) -> int:
    """Replace each ``Identity`` of an initializer by an initializer of its own (in place);
    returns how many. The TorchScript exporter writes equal parameters (e.g. the zero biases
    of freshly initialised layers) once and passes them on through ``Identity`` nodes;
    onnxruntime's quantizer quantizes a bias only when it is an initializer, and a layer whose
    bias it leaves in float is not fused into an INT8 operator (``QLinearConv``)."""
    from onnx import numpy_helper
    graph = onnx_model.graph
    initializers = {i.name: i for i in graph.initializer}
    folded = [n for n in graph.node if n.op_type == 'Identity' and n.input[0] in initializers]
    for node in folded:
        array = numpy_helper.to_array(initializers[node.input[0]])
        graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
        graph.node.remove(node)
    return len(folded)


def quantizable_nodes(onnx_model) -> List[str]:
    """Names of the ``Conv`` / ``MatMul`` / ``Gemm`` nodes whose weight (second input) is a
    constant of the file: the learned layers. The post-processing's products (mask paste,
    adaptive pooling) multiply computed tensors and are not among them."""
    graph = onnx_model.graph
    constants = _constants(graph)
    return [n.name for n in graph.node
            if n.op_type in WEIGHT_OPERATORS and len(n.input) > 1 and n.input[1] in constants]


def describe_nodes(onnx_model, names: Sequence[str]) -> List[str]:
    """Lines saying which nodes are quantized, per module of the model (the first part of
    the exporter's node names, ``/backbone/stages.0/...``) and operator type."""
    kinds = {n.name: n.op_type for n in onnx_model.graph.node}
    scopes: Dict[str, Counter] = {}
    for name in names:
        parts = [p for p in name.split('/') if p]
        scope = parts[0] if len(parts) > 1 else '(top level)'
        scopes.setdefault(scope, Counter())[kinds[name]] += 1
    return [f'  {scope}: ' + ', '.join(f'{count} {kind}' for kind, count in sorted(c.items()))
            for scope, c in scopes.items()]


# ---------------------------------------------------------------------- calibration images
def _image_files(folder: str) -> List[str]:
    return sorted(osp.join(folder, n) for n in os.listdir(folder)
                  if osp.splitext(n)[1].lower() in IMAGE_SUFFIXES)


def has_images(folder: str) -> bool:
    """Whether ``folder`` holds image files at its top (a folder of images, not a dataset)."""
    return osp.isdir(folder) and bool(_image_files(folder))


def training_image_folder(cfg: Config) -> str:
    """The folder of the config's training images (data root and image prefix)."""
    loader = cfg.get('train_dataloader') or {}
    dataset = innermost_dataset(loader.get('dataset') or {})
    prefix = dataset.get('data_prefix') or {}
    relative = prefix.get('img') or prefix.get('img_path') or ''
    return osp.join(dataset.get('data_root') or '', relative)


def calibration_image_paths(cfg: Config, folder: Optional[str], count: int) -> List[str]:
    """``count`` image files, spread evenly over the sorted images of ``folder`` (a folder of
    images) or of the config's training images; refused, naming ``--data``, where there are
    none."""
    if count < 1:
        raise DeployError(f'--calib-images {count}: at least one calibration image is needed')
    where = folder or training_image_folder(cfg)
    if not osp.isdir(where) or not _image_files(where):
        what = (f'--data {folder} holds no images ({", ".join(IMAGE_SUFFIXES)})' if folder else
                f"the config's training images ({where}) are not there")
        raise DataError(f'No calibration images: {what}. Give --data DIR: a folder of images '
                        'like those the model will see, or a dataset folder as tools/train.py '
                        'takes it (its training images)')
    paths = _image_files(where)
    picks = np.unique(np.linspace(0, len(paths) - 1, min(count, len(paths))).round())
    return [paths[int(i)] for i in picks]


def calibration_inputs(model: OnnxModel, paths: Sequence[str]) -> Iterator[Dict[str, np.ndarray]]:
    """The file's inputs for each image, as the runtime makes them (read, test resize, the
    sliding windows of a sliding-window file; a fixed-size whole-image file gets the resized
    image resized to its size). Unreadable images are passed over, said; none readable is
    refused."""
    readable = 0
    for path in paths:
        try:
            image = read_image(path)
        except DeployError:
            print_log(f'Calibration: cannot read an image from {path}; passed over',
                      logger='current', level=logging.WARNING)
            continue
        readable += 1
        resized, scale_factor = resize_image(image, model.meta.get('test_resize'))
        if model.task == 'detection':
            yield model.inputs_of(resized, scale_factor=np.asarray(scale_factor, np.float32),
                                  original_size=np.asarray(image.shape[:2], np.int64))
        elif model.meta.get('test_mode') == 'slide':
            height, width = resized.shape[:2]
            for y1, y2, x1, x2 in slide_windows(height, width, model.meta['crop_size'],
                                                model.meta['stride']):
                window = resized[y1:y2, x1:x2]
                if model.input_shape is not None and window.shape[:2] != model.input_shape:
                    continue  # a window cut short by a small image: the file refuses it
                yield model.inputs_of(window)
        else:
            if model.input_shape is not None and resized.shape[:2] != model.input_shape:
                resized = cv2.resize(resized, model.input_shape[::-1],
                                     interpolation=cv2.INTER_LINEAR)
            yield model.inputs_of(resized)
    if not readable:
        raise DataError(f'No calibration image could be read: {shorten(paths)} '
                        '(give --data DIR with readable images)')


class CalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` (what has ``get_next`` is one): the calibration
    inputs one by one, counted; read once, as min-max calibration reads them."""

    def __init__(self, inputs: Iterator[Dict[str, np.ndarray]]) -> None:
        self.inputs = inputs
        self.count = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        feeds = next(self.inputs, None)
        self.count += feeds is not None
        return feeds


# -------------------------------------------------------------------------------- quantize
# The quantizer's settings, in words (the file's metadata) and as onnxruntime's arguments.
SETTINGS = dict(format='QDQ', weights='int8, symmetric, per output channel',
                activations='uint8, asymmetric, per tensor', calibration='min-max',
                operators=list(WEIGHT_OPERATORS))


def quantize_graph(onnx_model, out: str, inputs: Iterator[Dict[str, np.ndarray]],
                   nodes: Optional[Sequence[str]] = None) -> int:
    """Any ONNX graph's constant-weight ``Conv`` / ``MatMul`` / ``Gemm`` (``nodes``, default
    ``quantizable_nodes``) to INT8 in QDQ form (``SETTINGS``), calibrated on the feeds of
    ``inputs``, written to ``out``; ``onnx_model`` is changed (``fold_identity_constants``).
    Returns how many feeds calibration ran."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    fold_identity_constants(onnx_model)
    inputs = iter(inputs)
    first = next(inputs, None)  # refused here, not as onnxruntime's "No data is collected"
    if first is None:
        raise DataError('Calibration has no input: no image gave one the file takes (a '
                        'sliding-window file takes whole windows: images at least its size)')
    reader = CalibrationReader(itertools.chain([first], inputs))
    quantize_static(
        onnx_model, out, reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(WEIGHT_OPERATORS),
        nodes_to_quantize=list(nodes if nodes is not None else quantizable_nodes(onnx_model)),
        per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        extra_options=dict(WeightSymmetric=True, ActivationSymmetric=False,
                           QDQOpTypePerChannelSupportToAxis={'MatMul': 1}))
    return reader.count


def quantize_onnx(path: str, out: str, image_paths: Sequence[str]) -> Dict[str, object]:
    """Quantize the exported fp32 file ``path`` to INT8 in ``out`` (module docstring),
    calibrated on ``image_paths``. Returns the metadata added to the file's, with
    ``seconds`` (the time it took) and ``lines`` (the nodes quantized, per module)."""
    import onnx
    import onnxruntime
    model = OnnxModel(path)
    if model.precision != 'fp32':
        raise DeployError(f'{path} is already {model.precision}: quantize the fp32 file that '
                          'tools/export_onnx.py wrote')
    onnx_model = onnx.load(path)
    fold_identity_constants(onnx_model)  # weights passed on by an Identity are constants too
    nodes = quantizable_nodes(onnx_model)
    if not nodes:
        raise DeployError(f'{path} has no Conv, MatMul or Gemm with constant weights to quantize')
    start = time.perf_counter()
    with replaced_when_complete(out) as temporary:
        count = quantize_graph(onnx_model, temporary, calibration_inputs(model, image_paths),
                               nodes)
        quantized = onnx.load(temporary)
        added = dict(precision='int8',
                     quantizer=dict(library=f'onnxruntime.quantization {onnxruntime.__version__}',
                                    calibration_inputs=count,
                                    calibration_images=len(image_paths), **SETTINGS),
                     fp32_file=osp.basename(path), fp32_sha256=file_sha256(path),
                     quantized_nodes=nodes)
        # every key of the fp32 file's (as written: JSON), then the INT8 file's own
        meta = {**{p.key: p.value for p in onnx_model.metadata_props},
                **{k: json.dumps(v) for k, v in added.items()}}
        del quantized.metadata_props[:]
        for key, value in meta.items():
            entry = quantized.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(quantized, temporary)
    return dict(added, seconds=time.perf_counter() - start,
                lines=describe_nodes(onnx_model, nodes))

"""Run an exported detector or segmentor (``tools/export_onnx.py``, fp32 or INT8 from
``tools/quantize.py``) with onnxruntime or OpenVINO, numpy and OpenCV only: no torch, mmcv,
mmdet or mmseg. OpenVINO is imported only when its backend is asked for.

The file carries what the runtime needs in its metadata (``metadata_props``, JSON values): the
test-time resize of the config's test pipeline, the sliding-window settings, the classes and
palette. What is not in the graph is done here as the config's test pipeline and mmdet / mmseg
do it:

- the image is read and resized with OpenCV as ``LoadImageFromFile`` and ``Resize`` (mmcv's
  ``imrescale`` / ``imresize``, cv2 backend) do;
- sliding-window segmentation crops the resized image as mmseg's ``slide_inference`` does, runs
  the (fixed-size) file on each crop and averages the overlapping logits;
- segmentation logits are resized to the original image (bilinear, as ``F.interpolate``) and
  the label map is their argmax; detection boxes are divided by the resize's scale factors and
  masks are pasted on the original image.

This module imports nothing of the package except, where it can, ``errors.DeployError``: it can
be copied alone next to an ``.onnx`` file.
"""
from __future__ import annotations

import json
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

try:  # inside the package: the tools end with the message of its error class
    from ..errors import DeployError
except ImportError:  # this file copied alone
    class DeployError(ValueError):
        """An exported file that cannot run what it is asked to."""

# mmcv's names of OpenCV's interpolations (mmcv.image.geometric.cv2_interp_codes).
CV2_INTERPOLATIONS = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR,
                      'bicubic': cv2.INTER_CUBIC, 'area': cv2.INTER_AREA,
                      'lanczos': cv2.INTER_LANCZOS4}


# ------------------------------------------------------------------------------ the image
def read_image(path: str) -> np.ndarray:
    """An image file as ``LoadImageFromFile`` reads it: BGR, uint8, (H, W, 3); EXIF orientation
    applied (OpenCV's ``IMREAD_COLOR``, mmcv's default ``color_type='color'``)."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DeployError(f'Cannot read an image from {path}')
    return image


def rescale_size(width: int, height: int, scale) -> Tuple[int, int]:
    """The (width, height) mmcv's ``imrescale`` gives: as large as possible within ``scale``
    (a pair: long and short edge limits, in any order) or ``scale`` times (a number)."""
    if isinstance(scale, (int, float)):
        factor = float(scale)
    else:
        factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: np.ndarray, resize: Optional[dict]) -> Tuple[np.ndarray,
                                                                      Tuple[float, float]]:
    """The image resized as the config's test ``Resize`` does, and its (w, h) scale factors.

    Args:
        image (np.ndarray): (H, W, 3) uint8.
        resize (dict, optional): The ``test_resize`` metadata: ``scale`` (w, h) or
            ``scale_factor`` (w, h), ``keep_ratio``, ``interpolation``; None: no resize.
    """
    if not resize:
        return image, (1.0, 1.0)
    height, width = image.shape[:2]
    if resize.get('scale') is not None:
        scale = resize['scale']
        scale = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
    else:  # Resize(scale_factor=...): mmcv's _scale_size of the image's (w, h)
        factor = resize['scale_factor']
        factor = (factor, factor) if isinstance(factor, (int, float)) else factor
        scale = (int(width * float(factor[0]) + 0.5), int(height * float(factor[1]) + 0.5))
    if resize.get('keep_ratio', False):
        size = rescale_size(width, height, scale)
    else:
        size = (int(scale[0]), int(scale[1]))
    interpolation = CV2_INTERPOLATIONS[resize.get('interpolation', 'bilinear')]
    resized = cv2.resize(image, size, interpolation=interpolation)
    # mmcv's Resize takes the factors from the sizes it got, not the factor it asked for.
    return resized, (resized.shape[1] / width, resized.shape[0] / height)


def slide_windows(height: int, width: int, crop: Sequence[int],
                  stride: Sequence[int]) -> List[Tuple[int, int, int, int]]:
    """The crops (y1, y2, x1, x2) of mmseg's ``EncoderDecoder.slide_inference``, in its order;
    ``crop`` and ``stride`` are (h, w). Crops are smaller than ``crop`` where the image is."""
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def _source_index(size_in: int, size_out: int,
                  align_corners: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output row (or column): the two input rows and the second one's weight, as
    PyTorch's bilinear upsampling computes them (``area_pixel_compute_source_index``)."""
    # float32 as PyTorch's CPU kernel computes them (its ``opmath`` of a float tensor)
    out = np.arange(size_out, dtype=np.float32)
    if align_corners:
        scale = np.float32((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
        source = out * scale
    else:
        scale = np.float32(size_in / size_out)
        source = np.maximum((out + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    weight = (source - low).astype(np.float32)
    return low, high, weight


def resize_bilinear(array: np.ndarray, size: Tuple[int, int],
                    align_corners: bool = False) -> np.ndarray:
    """(C, H, W) float32 resized to ``size`` (h, w) as ``F.interpolate(mode='bilinear')`` does
    (no antialiasing): what mmseg's ``resize`` of the logits to the original image gives."""
    if tuple(array.shape[1:]) == tuple(size):
        return array
    low, high, weight = _source_index(array.shape[1], size[0], align_corners)
    rows = array[:, low] * (1 - weight)[None, :, None] + array[:, high] * weight[None, :, None]
    low, high, weight = _source_index(array.shape[2], size[1], align_corners)
    return rows[:, :, low] * (1 - weight) + rows[:, :, high] * weight


# ----------------------------------------------------------------------------- the results
@dataclass
class SegmentationResult:
    """A segmentation of the original image: ``labels`` (H, W) int64, ``logits`` (C, H, W)
    float32 (as mmseg's ``seg_logits``: before softmax)."""
    labels: np.ndarray
    logits: np.ndarray


@dataclass
class DetectionResult:
    """Detections on the original image, best first: ``boxes`` (N, 4) x1 y1 x2 y2 float32,
    ``scores`` (N,), ``labels`` (N,) int64, ``masks`` (N, H, W) bool or None."""
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Optional[np.ndarray] = None


def decode_metadata(props: Dict[str, str]) -> Dict[str, object]:
    """The file's ``metadata_props``, JSON-decoded (``tools/export_onnx.py`` writes JSON)."""
    found = {}
    for key, value in props.items():
        try:
            found[key] = json.loads(value)
        except ValueError:
            found[key] = value
    return found


# ---------------------------------------------------------------------------- the runtimes
BACKENDS = ('onnxruntime', 'openvino')
# OpenVINO's INFERENCE_PRECISION_HINT for the float parts of the graph.
PRECISIONS = ('f32', 'bf16')
INSTALL = "pip install 'convnext_backbone[deploy]'"


def _import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise DeployError(f'The OpenVINO backend needs the openvino package, which does not '
                          f'import here ({exc}): {INSTALL} (or pip install openvino)') from None
    return openvino


def _unreadable(path: str, runtime: str, exc: Exception) -> DeployError:
    last = [line for line in str(exc).splitlines() if line.strip()][-1:]
    return DeployError(f'{path} is not an ONNX file that {runtime} can read '
                       f'({" ".join(last)[:300]}): tools/export_onnx.py writes one')


class OnnxRuntimeSession:
    """A file in an onnxruntime ``InferenceSession``: ``run(feeds)`` -> {output name: array}.

    Args:
        path (str): The ``.onnx`` file.
        providers (Sequence[str], optional): Execution providers (default: CPU).
        threads (int, optional): Intra-op threads (default: onnxruntime's choice).
    """

    name = 'onnxruntime'

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DeployError(f'The onnxruntime backend needs the onnxruntime package, which '
                              f'does not import here ({exc}): {INSTALL}') from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf
        try:
            self.session = ort.InferenceSession(
                path, options, providers=list(providers or ['CPUExecutionProvider']))
        except (Fail, InvalidGraph, InvalidProtobuf) as exc:
            raise _unreadable(path, 'onnxruntime', exc) from None
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.version = ort.__version__

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))


class OpenVinoSession:
    """A file compiled by OpenVINO for the CPU: ``run(feeds)`` -> {output name: array}, the
    outputs found by name (OpenVINO may order them otherwise than the file).

    Args:
        path (str): The ``.onnx`` file (fp32, or INT8 with QuantizeLinear / DequantizeLinear,
            which OpenVINO runs in INT8).
        precision (str): ``INFERENCE_PRECISION_HINT`` of the float parts: ``'f32'`` (set
            explicitly: on CPUs with AMX or AVX512_BF16 OpenVINO's default is bf16) or
            ``'bf16'``, refused on a CPU without bf16 instructions.
        threads (int, optional): ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice).
    """

    name = 'openvino'

    def __init__(self, path: str, precision: str = 'f32', threads: Optional[int] = None) -> None:
        openvino = _import_openvino()
        if precision not in PRECISIONS:
            raise DeployError(f'OpenVINO inference precision {precision!r}: expected one of '
                              f'{", ".join(PRECISIONS)}')
        core = openvino.Core()
        if precision == 'bf16' and 'BF16' not in core.get_property(
                'CPU', 'OPTIMIZATION_CAPABILITIES'):
            raise DeployError('bf16 inference needs a CPU with AVX512_BF16 or AMX; this one ('
                              f"{core.get_property('CPU', 'FULL_DEVICE_NAME')}) has neither: "
                              "use precision 'f32'")
        try:
            model = core.read_model(path)
        except RuntimeError as exc:  # what OpenVINO raises for a file it cannot read
            raise _unreadable(path, 'OpenVINO', exc) from None
        self.metadata = _openvino_metadata(model)
        config = {'INFERENCE_PRECISION_HINT': precision, 'PERFORMANCE_HINT': 'LATENCY'}
        if threads:
            config['INFERENCE_NUM_THREADS'] = int(threads)
        self.compiled = core.compile_model(model, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        # An input's tensor may carry other names too (a no-op Cast after it, removed, leaves
        # its output name: scale_factor is also /Cast_53_output_0); its Parameter keeps the
        # file's input name.
        self.input_names = [p.get_node().get_friendly_name() for p in self.compiled.inputs]
        self.version = openvino.__version__.split('-')[0]  # 2026.4.1-22982-...: the release

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self.request.infer(feeds)
        return {name: array for port in self.compiled.outputs
                for array in [np.array(results[port])] for name in port.get_names()}


def _openvino_metadata(model) -> Dict[str, str]:
    """The ONNX file's ``metadata_props``, which OpenVINO's ONNX reader keeps in the model's
    run-time info under ``framework``."""
    if not model.has_rt_info(['framework']):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info()['framework'].items()}


class OnnxModel:
    """An exported detector or segmentor (fp32, or INT8 from ``tools/quantize.py``) in
    onnxruntime or OpenVINO, with the config's test-time pre- and post-processing.

    Args:
        path (str): The ``.onnx`` file.
        providers (Sequence[str], optional): onnxruntime execution providers (default: CPU).
        threads (int, optional): Intra-op threads (default: the runtime's choice).
        backend (str): ``'onnxruntime'`` (default) or ``'openvino'`` (CPU).
        precision (str): OpenVINO's inference precision of the float parts, ``'f32'``
            (default) or ``'bf16'`` (CPUs with AVX512_BF16 or AMX).
    """

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, backend: str = 'onnxruntime',
                 precision: str = 'f32') -> None:
        if backend not in BACKENDS:
            raise DeployError(f'Unknown backend {backend!r}: expected one of '
                              f'{", ".join(BACKENDS)}')
        if backend != 'openvino' and precision != 'f32':
            raise DeployError(f'precision {precision!r} is an OpenVINO setting: use '
                              "backend='openvino' (--backend openvino)")
        if not osp.isfile(path):
            raise DeployError(f'No such ONNX file: {path}')
        self.path = path
        self.backend = backend
        self.runtime = (OnnxRuntimeSession(path, providers, threads) if backend == 'onnxruntime'
                        else OpenVinoSession(path, precision, threads))
        self.meta = decode_metadata(self.runtime.metadata)
        if self.meta.get('task') not in ('segmentation', 'detection'):
            raise DeployError(f'{path} was not made by tools/export_onnx.py: its metadata names '
                              f'no task (segmentation or detection)')
        self.task = self.meta['task']
        self.input_name = self.runtime.input_names[0]
        shape = self.meta.get('input_shape')
        self.input_shape = tuple(shape) if isinstance(shape, list) else None  # None: any
        self.precision = str(self.meta.get('precision', 'fp32'))
        self.execution = (f'{backend} {self.runtime.version}' +
                          (f', {precision} inference' if backend == 'openvino' else ''))

    @property
    def classes(self) -> Tuple[str, ...]:
        return tuple(self.meta.get('classes') or ())

    def describe(self) -> str:
        """What the file was made for, in words."""
        size = ('any size' if self.input_shape is None else
                f'{self.input_shape[0]}x{self.input_shape[1]} inputs')
        return (f"{self.meta.get('config')} ({self.task}, {len(self.classes)} classes, {size}, "
                f"{self.precision}, checkpoint sha256 "
                f"{str(self.meta.get('checkpoint_sha256'))[:12]}...)")

    # ------------------------------------------------------------------------------ running
    def run(self, image: np.ndarray, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph's outputs for one image as the graph takes it: (H, W, 3) uint8, BGR, already
        resized (detection: with the inputs ``scale_factor`` and ``original_size``). A
        fixed-size file refuses another size."""
        return self.runtime.run(self.inputs_of(image, **inputs))

    def inputs_of(self, image: np.ndarray, **inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """The graph's inputs by name for one image as ``run`` takes it (checked)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DeployError(f'Expected an (H, W, 3) uint8 BGR image, got {image.shape} '
                              f'{image.dtype}')
        if self.input_shape is not None and tuple(image.shape[:2]) != self.input_shape:
            raise DeployError(
                f'{self.path} was exported for {self.input_shape[0]}x{self.input_shape[1]} '
                f'inputs; this one is {image.shape[0]}x{image.shape[1]} (after the test '
                f'resize). Export with --shape {image.shape[0]} {image.shape[1]}, or with '
                '--dynamic for any size.')
        if self.task == 'detection' and not inputs:  # the image is the original one
            inputs = dict(scale_factor=np.ones(2, np.float32),
                          original_size=np.asarray(image.shape[:2], np.int64))
        # (a one-stage detector's graph takes no original_size: its boxes are all it returns)
        taken = set(self.runtime.input_names)
        return {self.input_name: np.ascontiguousarray(image[None]),
                **{k: v for k, v in inputs.items() if k in taken}}

    def __call__(self, image: 'np.ndarray | str'):
        """Predict on one image (BGR uint8 array, or a path) at its original size:
        ``SegmentationResult`` or ``DetectionResult``."""
        if isinstance(image, str):
            image = read_image(image)
        resized, scale_factor = resize_image(image, self.meta.get('test_resize'))
        if self.task == 'segmentation':
            return self._segment(resized, image.shape[:2])
        return self._detect(resized, scale_factor, image.shape[:2])

    # ------------------------------------------------------------------------ segmentation
    def segmentation_logits(self, image: np.ndarray) -> np.ndarray:
        """(C, H, W) logits at the resized image's size: the whole image at once, or averaged
        over sliding windows as mmseg's ``slide_inference`` does."""
        if self.meta.get('test_mode') != 'slide':
            return self.run(image)['logits'][0]
        height, width = image.shape[:2]
        preds = counts = None
        for y1, y2, x1, x2 in slide_windows(height, width, self.meta['crop_size'],
                                            self.meta['stride']):
            logits = self.run(image[y1:y2, x1:x2])['logits'][0]
            if preds is None:
                preds = np.zeros((logits.shape[0], height, width), np.float32)
                counts = np.zeros((1, height, width), np.float32)
            preds[:, y1:y2, x1:x2] += logits
            counts[:, y1:y2, x1:x2] += 1
        return preds / counts

    def _segment(self, image: np.ndarray, original: Tuple[int, int]) -> SegmentationResult:
        logits = resize_bilinear(self.segmentation_logits(image), tuple(original),
                                 bool(self.meta.get('align_corners', False)))
        if logits.shape[0] > 1:
            labels = logits.argmax(0)
        else:  # one output channel: a binary segmentation thresholded after a sigmoid
            logits = 1 / (1 + np.exp(-logits))
            labels = (logits[0] > float(self.meta.get('threshold', 0.3))).astype(np.int64)
        return SegmentationResult(labels=labels.astype(np.int64), logits=logits)

    # --------------------------------------------------------------------------- detection
    def _detect(self, image: np.ndarray, scale_factor: Tuple[float, float],
                original: Tuple[int, int]) -> DetectionResult:
        """Boxes divided by the resize's factors and masks pasted on the original image are
        the graph's (as mmdet's mask head does them); this passes the factors and the size."""
        outputs = self.run(image, scale_factor=np.asarray(scale_factor, np.float32),
                           original_size=np.asarray(original, np.int64))
        return DetectionResult(boxes=outputs['boxes'], scores=outputs['scores'],
                               labels=outputs['labels'].astype(np.int64),
                               masks=outputs.get('masks'))

"""Deployment: a config's detector or segmentor exported to ONNX (``export``: the whole
test-time computation in the graph) and run by onnxruntime without mmcv, mmdet or mmseg
(``runtime``); ``evaluate``: the config's metric and pictures of an exported file, for
tools/test.py and tools/infer.py. See docs/deploy.md.

Importing this package imports the runtime only (onnxruntime, numpy, OpenCV); the exporter
(torch, mmengine, mmdet / mmseg) is ``convnext_backbone.deploy.export``.
"""
from .runtime import DetectionResult, DeployError, OnnxModel, SegmentationResult, read_image

__all__ = ['DeployError', 'OnnxModel', 'SegmentationResult', 'DetectionResult', 'read_image']

"""Datasets: finding one in a folder (``layouts``), fitting a config to it (``configure``),
checking a config's data before anything is built (``check``), drawing what the pipeline makes
of it (``pictures``) and the built-in demo datasets (``demo``).

Needs mmengine, numpy and Pillow; the dataset classes come from mmdet / mmseg through the
registry when a check needs them.
"""
from ..errors import DataError
from .check import DataReport, check_dataset
from .configure import class_heads, fit_config_to_data, innermost_dataset, palette_for
from .layouts import DataLayout, find_layout, parse_split_overrides

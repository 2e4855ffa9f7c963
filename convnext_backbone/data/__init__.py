"""Users' own datasets: finding them in a folder (``layouts``), fitting a config to them
(``fit``) and checking a config's data before anything is built (``check``).

Needs mmengine, numpy and Pillow; the dataset classes come from mmdet / mmseg through the
registry when a check needs them.
"""
from .check import DataReport, check_dataset, config_classes
from .fit import class_heads, fit_config_to_data, innermost_dataset, palette_for
from .layouts import DataError, DataLayout, find_layout, parse_split_overrides

__all__ = [
    'DataError', 'DataLayout', 'DataReport', 'find_layout', 'parse_split_overrides',
    'fit_config_to_data', 'check_dataset', 'config_classes', 'class_heads',
    'innermost_dataset', 'palette_for'
]

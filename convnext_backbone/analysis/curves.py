"""Training curves of mmengine runs as one picture, as MMDetection's ``analyze_logs.py
plot_curve`` draws them: one panel per key (the training loss by iteration, validation metrics
by the step they were computed at), one colour per run, a legend naming the runs.

A run is its work folder (the newest ``*/vis_data/scalars.json`` under it) or that
``scalars.json`` file itself: mmengine's ``LocalVisBackend`` writes one JSON record a line,
training records with ``loss`` and ``iter``, validation records with the metrics and ``step``.
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple

from ..errors import DataError

# key -> (steps, values, whether logged by training records, whose step is the iteration)
Series = Dict[str, Tuple[List[float], List[float], bool]]


def scalars_file(run: str) -> str:
    """The ``scalars.json`` of a work folder (its newest run) or the file itself."""
    if osp.isfile(run):
        return run
    found = sorted(glob.glob(osp.join(run, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise DataError(f'{run}: no */vis_data/scalars.json in it; give a work folder of '
                        'tools/train.py or its scalars.json')
    return found[-1]  # the folders are timestamps: the last is the newest


def read_scalars(path: str) -> Series:
    """Every numeric key of the records, with the step it was logged at (``iter`` for
    training records, ``step`` for validation ones)."""
    series: Series = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            step = record.get('iter', record.get('step'))
            for key, value in record.items():
                if key in ('iter', 'step', 'epoch') or not isinstance(value, (int, float)):
                    continue
                steps, values, _ = series.setdefault(key, ([], [], 'iter' in record))
                steps.append(step)
                values.append(value)
    return series


def is_epoch_based(path: str) -> bool:
    """Whether the run was epoch-based: mmengine puts ``epoch`` in its training records then,
    and logs validation by epoch."""
    with open(path) as f:
        return any('"epoch"' in line and '"iter"' in line for line in f)


def _find(series: Series, key: str) -> str:
    """``key`` itself, or the one key ending in ``/key`` (``bbox_mAP`` -> ``coco/bbox_mAP``)."""
    if key in series:
        return key
    matches = [k for k in series if k.endswith('/' + key)]
    return matches[0] if len(matches) == 1 else key


def plot_curves(runs: Sequence[str], keys: Sequence[str], out: str,
                labels: Sequence[str] = ()) -> List[str]:
    """Draw ``keys`` of ``runs`` into ``out`` (PNG), one panel per key; returns the keys drawn.
    A key that no run logged is refused, naming the keys there are."""
    import matplotlib
    matplotlib.use('Agg')  # files only: no display needed
    import matplotlib.pyplot as plt
    files = [scalars_file(run) for run in runs]
    data = [read_scalars(path) for path in files]
    by_epoch = [is_epoch_based(path) for path in files]
    labels = list(labels) or [osp.basename(osp.normpath(run)) for run in runs]
    for key in keys:
        if not any(_find(series, key) in series for series in data):
            known = sorted({k for series in data for k in series})
            raise DataError(f'No run logged {key!r}; the runs logged: {", ".join(known)}')
    figure, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, key in zip(axes[0], keys):
        for index, (series, label) in enumerate(zip(data, labels)):
            name = _find(series, key)
            if name in series:
                steps, values, _ = series[name]
                ax.plot(steps, values, color=colours[index % len(colours)], label=label,
                        marker='o' if len(steps) < 30 else None)
        ax.set_title(key)
        logged = [(series[_find(series, key)][2], epochs) for series, epochs in
                  zip(data, by_epoch) if _find(series, key) in series]
        # Training is logged by iteration; validation by epoch in epoch-based runs.
        axis = {'iteration' if trained or not epochs else 'epoch' for trained, epochs in logged}
        ax.set_xlabel(axis.pop() if len(axis) == 1 else 'epoch or iteration (per run)')
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return list(keys)

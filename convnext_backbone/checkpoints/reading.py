"""Reading checkpoint files safely: PyTorch files with ``weights_only=True``, safetensors, and
Hugging Face model folders; http(s) URLs through a local copy or the download cache
(``download``). Nothing here knows about layouts; it returns what the file holds.

Every reader returns a dict: a PyTorch file's own top-level dict, or, for safetensors files and
Hugging Face folders, ``{'state_dict': tensors, 'meta': {...}}`` with the file's metadata
(``dataset_meta`` when this package wrote it) or the folder's ``config.json`` (``hf_config``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import pickle
from typing import Dict

import torch

from ..errors import CheckpointError
from .download import checkpoint_path

# The weight files a Hugging Face model folder may hold, in the order transformers prefers.
HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def read_checkpoint(source: str, map_location: str = 'cpu') -> dict:
    """Read a checkpoint: a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, a Hugging Face
    model folder (``config.json`` with ``model.safetensors`` or ``pytorch_model.bin``, also
    sharded) or an http(s) URL.

    A URL's file is read from ``checkpoints/<name>``, ``$CONVNEXT_CHECKPOINTS/<name>`` or the
    cache, the first that exists, else downloaded once into the cache (see ``download``).
    PyTorch files are read with ``weights_only=True``: tensors and plain containers only (and
    what ``allow_mmengine_checkpoints`` admits), never arbitrary objects.
    """
    source = os.fspath(source)
    if source.startswith(('http://', 'https://')):
        return _read_url(source, map_location)
    if osp.isdir(source):
        return _read_hf_folder(source, map_location)
    if not osp.isfile(source):
        raise CheckpointError(f'Checkpoint file not found: {source}')
    if source.endswith('.safetensors'):
        return _read_safetensors(source, map_location)
    return _read_torch(source, map_location)


def _read_url(url: str, map_location: str) -> dict:
    path = checkpoint_path(url)
    try:
        if path.endswith('.safetensors'):
            return _read_safetensors(path, map_location)
        return _read_torch(path, map_location)
    except CheckpointError as exc:
        # A complete download of something that is not a checkpoint (an error page, a file
        # that changed on the server) or a bad local copy: say which file to replace.
        raise CheckpointError(f'{exc}. {path} was used for {url}: replace it with the right '
                              'file, or delete it (with no other copy, it is downloaded '
                              'again)') from exc


def _read_torch(path: str, map_location: str) -> dict:
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any object that is not a tensor, a plain container or allowed.
        raise CheckpointError(
            f'Refusing to load {path}: it holds pickled objects other than tensors (e.g. a '
            f'training run\'s args), which could run code when unpickled. If you trust the '
            f'file, re-save its weights alone: torch.save(torch.load(path, weights_only=False)'
            f'[\'model\'], new_path) (or the key that holds them). ({exc})') from exc
    except Exception as exc:
        raise CheckpointError(f'Cannot read checkpoint {path} (truncated, corrupt or not a '
                              f'PyTorch file?): {exc}') from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of '
                              'tensors (a state dict or a checkpoint with one)')
    return checkpoint


def _read_safetensors(path: str, map_location: str) -> dict:
    from safetensors import safe_open
    try:
        tensors: Dict[str, torch.Tensor] = {}
        with safe_open(path, framework='pt', device=map_location) as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as exc:
        raise CheckpointError(f'Cannot read safetensors checkpoint {path} (truncated or not a '
                              f'safetensors file?): {exc}') from exc
    meta = {}
    if 'dataset_meta' in metadata:  # written by tools/convert_weights.py
        meta['dataset_meta'] = json.loads(metadata['dataset_meta'])
    return {'state_dict': tensors, 'meta': meta}


def _read_hf_folder(folder: str, map_location: str) -> dict:
    config_path = osp.join(folder, 'config.json')
    if not osp.isfile(config_path):
        raise CheckpointError(f'{folder} is a folder but not a Hugging Face model folder: it has '
                              'no config.json')
    with open(config_path) as f:
        config = json.load(f)
    weights = [osp.join(folder, name) for name in HF_WEIGHT_FILES
               if osp.isfile(osp.join(folder, name))]
    if not weights:  # sharded: an index names the shards
        for name in HF_WEIGHT_FILES:
            index = osp.join(folder, name + '.index.json')
            if osp.isfile(index):
                with open(index) as f:
                    shards = sorted(set(json.load(f)['weight_map'].values()))
                weights = [osp.join(folder, shard) for shard in shards]
                break
    if not weights:
        raise CheckpointError(f'The Hugging Face model folder {folder} holds no weights: '
                              f'expected one of {", ".join(HF_WEIGHT_FILES)} (or a sharded '
                              'index of them)')
    state_dict: Dict[str, torch.Tensor] = {}
    for path in weights:
        part = read_checkpoint(path, map_location)
        state_dict.update(part.get('state_dict', part))
    return {'state_dict': state_dict, 'meta': {'hf_config': config}}


def _history_buffer_attribute(owner, name: str):
    """The only ``getattr`` that a Runner checkpoint needs: pickle stores the message hub's
    ``HistoryBuffer`` statistics functions as ``getattr(HistoryBuffer, 'min')`` etc. Anything
    else is refused, so allowing this in place of the builtin opens no other attribute."""
    from mmengine.logging import HistoryBuffer
    # min/max/current/mean are registered by the first HistoryBuffer() call, which may not
    # have happened yet in this process; others by HistoryBuffer.register_statistics.
    known = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if owner is HistoryBuffer and name in known:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Refusing getattr({owner!r}, {name!r}) in a checkpoint: only HistoryBuffer statistics '
        'methods are allowed')


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (torch >= 2.6's default) read checkpoints that
    mmengine's Runner writes, without turning ``weights_only`` off. Importing the package
    calls it, so upstream tools (mmdet's and mmseg's ``tools/test.py``, ``mim test``) that load
    a config of this package read such checkpoints too.

    Besides tensors, such checkpoints hold the message hub's ``HistoryBuffer`` objects and
    numpy arrays and scalars. Allowed here, each because it rebuilds data and runs no other code:
    - ``HistoryBuffer``: rebuilt from its ``__dict__`` (two arrays and an int);
    - numpy's ``_reconstruct``, ``ndarray``, ``dtype``, the concrete dtype classes and
      ``scalar``: numpy's own pickle protocol for arrays and scalars;
    - ``getattr``, but only as ``_history_buffer_attribute``: pickle fetches the
      ``HistoryBuffer.min/max/mean/current`` functions with it. The builtin itself is not
      allowed: it would let a file read any attribute of every allowed class.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):  # torch < 2.4: nothing to add
        return
    import numpy as np
    from mmengine.logging import HistoryBuffer
    core = getattr(np, '_core', None) or np.core  # numpy 2 / numpy 1
    dtype_classes = [getattr(np.dtypes, name) for name in dir(np.dtypes)
                     if name.endswith('DType')] if hasattr(np, 'dtypes') else []
    torch.serialization.add_safe_globals([
        HistoryBuffer, core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray,
        np.dtype, *dtype_classes,
        (_history_buffer_attribute, '__builtin__.getattr'),  # as protocol-2 pickles name it
        (_history_buffer_attribute, 'builtins.getattr'),
    ])

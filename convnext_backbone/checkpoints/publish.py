"""A training checkpoint made ready to publish, as MMDetection's ``publish_model.py`` makes it:
the weights (``state_dict``) and ``meta`` (config, dataset classes, epoch) kept; the optimizer,
the parameter schedulers and the message hub dropped; written as ``NAME-<first 8 hex digits of
its sha256>.pth``, the name that ``checkpoints.download`` verifies after a download."""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import uuid

import torch

from ..errors import CheckpointError
from .model import _kind, _not_a_whole_model, _parts
from .reading import read_checkpoint

# What a published file keeps of a Runner checkpoint.
KEPT = ('meta', 'state_dict')


def publish_checkpoint(source: str, out_dir: str) -> str:
    """Write the published form of the training checkpoint ``source`` into ``out_dir``;
    returns its path. Refuses, in words, a file that is not a Runner checkpoint of a detector
    or segmentor (an ImageNet backbone, an already published file, a bare state dict)."""
    checkpoint = read_checkpoint(source)
    missing = [key for key in ('state_dict', 'meta', 'message_hub') if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f'{source} is not a training checkpoint of mmengine\'s Runner (tools/train.py '
            f'writes those: epoch_N.pth, iter_N.pth): it has no {", ".join(missing)} (its keys: '
            f'{", ".join(map(str, list(checkpoint)[:6]))})')
    state_dict = checkpoint['state_dict']
    if _kind(_parts(state_dict)) is None:
        raise CheckpointError(_not_a_whole_model(source, state_dict))
    published = {key: checkpoint[key] for key in KEPT}
    os.makedirs(out_dir, exist_ok=True)
    stem = osp.splitext(osp.basename(source.rstrip('/')))[0]
    part = osp.join(out_dir, f'.{stem}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}')
    try:
        torch.save(published, part)
        with open(part, 'rb') as f:
            digest = hashlib.file_digest(f, 'sha256').hexdigest()
        path = osp.join(out_dir, f'{stem}-{digest[:8]}.pth')
        os.replace(part, path)  # atomic: a reader sees the whole file or none
    finally:
        if osp.exists(part):
            os.remove(part)
    return path

"""Convert a published ConvNeXt checkpoint to this package's layout, verified, and say what was
done.

    python tools/convert_weights.py SRC DST [--arch tiny] [--version v1] [--ema]   # ImageNet
    python tools/convert_weights.py SRC DST [--config CONFIG]                      # whole model

SRC is a file (.pth/.pt/.bin/.safetensors), a Hugging Face model folder or an http(s) URL.
ImageNet (backbone-only) checkpoints of the official, timm, mmpretrain or transformers layout,
and FCMAE pre-training checkpoints (their encoder; the decoder is left out), are loaded into a
ConvNeXt of the given (default: detected) arch before writing. Whole detector /
segmentor checkpoints (this package's, the official releases, the MMDetection 3 / MMSegmentation
1 zoo, Hugging Face UperNet-ConvNeXt) are checked against CONFIG's model when given (exact fit),
else their backbone against a ConvNeXt of the detected arch; their class names go along.
DST is written as .safetensors or, for any other suffix, as a torch file holding
``{'state_dict': ..., 'meta': ...}``.
"""
import argparse
import json
import os
import re
import sys

import torch

from convnext_backbone import ConvNeXt
from convnext_backbone.archs import describe_arch
from convnext_backbone.checkpoints import read_checkpoint
from convnext_backbone.checkpoints.imagenet import (NOT_BACKBONE_KEYS, arch_of, backbone_of,
                                                    convert_state_dict, extract_state_dict,
                                                    guess_arch, load_converted)
from convnext_backbone.checkpoints.model import (check_model_checkpoint,
                                                 convert_model_checkpoint)
from convnext_backbone.cli import run_tool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint file, Hugging Face folder or http(s) URL')
    parser.add_argument('dst', help='output file: .safetensors, or .pth for a torch file')
    parser.add_argument('--config', help='whole models: check against this config\'s model')
    parser.add_argument('--arch', help='ImageNet: ConvNeXt arch to verify against '
                        '(default: detected)')
    parser.add_argument('--version', choices=('v1', 'v2'), help='default: detected')
    parser.add_argument('--ema', action='store_true', help='convert the model_ema copy')
    return parser.parse_args(argv)


def convert_imagenet(args, checkpoint: dict) -> tuple:
    state_dict, layout = convert_state_dict(extract_state_dict(checkpoint, use_ema=args.ema))
    arch, version = guess_arch(state_dict)
    arch, version = args.arch or arch, args.version or version
    if arch.startswith('custom'):
        sys.exit(f'{args.src}: the arch is not a published one ({arch}); pass --arch')
    # Verify before writing: the converted weights must load strictly into the model.
    report = load_converted(ConvNeXt(arch, version=version), state_dict, source=args.src,
                            layout=layout)
    print(report)
    what = f'ConvNeXt {version} {arch}, converted from the {layout} layout'
    beside = NOT_BACKBONE_KEYS.get(layout)
    if beside:  # an FCMAE file's decoder is no part of a ConvNeXt checkpoint: not written
        kept = {k: v for k, v in state_dict.items() if not beside.match(k)}
        what += f' (its {len(state_dict) - len(kept)} decoder tensors left out)'
        state_dict = kept
    return state_dict, {}, what


def convert_whole_model(args, checkpoint: dict) -> tuple:
    converted = convert_model_checkpoint(checkpoint, args.src)
    state_dict = converted.state_dict
    if args.config:
        check_model_checkpoint(_build_model(args.config), converted, 'eval')
        checked = f'fits {args.config} exactly'
    else:  # at least the backbone: every weight of the detected arch, with its output norms
        backbone = backbone_of(state_dict)
        depths, widths, version = arch_of(backbone)
        outputs = sorted(int(m.group(1)) for k in backbone
                         if (m := re.match(r'norm(\d)\.weight$', k)))
        model = ConvNeXt(dict(depths=depths, widths=widths), version=version,
                         out_indices=outputs)
        load_converted(model, backbone, source=args.src, layout=converted.layout)
        checked = f'backbone checked against {describe_arch(depths, widths, version)}'
    parts = sorted({k.split('.', 1)[0] for k in state_dict})
    classes = (converted.dataset_meta or {}).get('classes')
    print(f'{args.src}: {converted.layout}; {len(state_dict)} tensors in {", ".join(parts)}; '
          f'{checked}; classes: ' + (f'{len(classes)} ({", ".join(classes[:5])}'
                                     f'{", ..." if len(classes) > 5 else ""})' if classes else
                                     'none in the file'))
    meta = {'dataset_meta': converted.dataset_meta} if converted.dataset_meta else {}
    return state_dict, meta, f'whole model, converted from the {converted.layout}'


def _build_model(config: str):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope'))
    cfg.model.backbone.init_cfg = None  # the file under test provides the weights
    return MODELS.build(cfg.model)


def main(argv=None) -> int:
    args = parse_args(argv)
    checkpoint = read_checkpoint(args.src)
    whole = backbone_of(extract_state_dict(checkpoint)) is not None
    convert = convert_whole_model if whole else convert_imagenet
    state_dict, meta, what = convert(args, checkpoint)
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        metadata = {'format': 'pt', 'converted_from': what}
        if meta.get('dataset_meta'):  # read back by convnext_backbone.checkpoints.reading
            metadata['dataset_meta'] = json.dumps(meta['dataset_meta'])
        save_file(state_dict, args.dst, metadata=metadata)
    else:
        torch.save({'state_dict': state_dict, 'meta': meta}, args.dst)
    print(f'Wrote {args.dst}: {what}')
    return 0


if __name__ == '__main__':
    sys.exit(run_tool(main))

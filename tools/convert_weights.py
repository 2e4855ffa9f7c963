"""Convert a published ConvNeXt checkpoint to this package's (the official) layout, verified.

    python tools/convert_weights.py SRC DST [--arch tiny] [--version v1] [--ema]

SRC may be in the official, timm, mmpretrain or transformers layout (.pth/.bin/.safetensors);
DST is written as .safetensors or, for any other suffix, as a torch file holding
``{'state_dict': ...}``. The converted weights are loaded into a ConvNeXt of the given (or, by
default, the detected) arch before writing, and the load report is printed.
"""
import argparse
import os
import sys

import torch

from convnext_backbone import ConvNeXt
from convnext_backbone.weights import (convert_state_dict, extract_state_dict, guess_arch,
                                       load_converted, read_checkpoint)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='checkpoint file (or http(s) URL) to convert')
    parser.add_argument('dst', help='output file: .safetensors, or .pth for a torch file')
    parser.add_argument('--arch', help='ConvNeXt arch to verify against (default: detected)')
    parser.add_argument('--version', choices=('v1', 'v2'), help='default: detected')
    parser.add_argument('--ema', action='store_true', help='convert the model_ema copy')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    state_dict, layout = convert_state_dict(
        extract_state_dict(read_checkpoint(args.src), use_ema=args.ema))
    arch, version = guess_arch(state_dict)
    arch, version = args.arch or arch, args.version or version
    if arch.startswith('custom'):
        sys.exit(f'{args.src}: the arch is not a published one ({arch}); pass --arch')
    state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    # Verify before writing: the converted weights must load strictly into the model.
    report = load_converted(ConvNeXt(arch, version=version), state_dict, source=args.src,
                            layout=layout)
    os.makedirs(os.path.dirname(os.path.abspath(args.dst)), exist_ok=True)
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file(state_dict, args.dst, metadata={'format': 'pt', 'source_layout': layout})
    else:
        torch.save({'state_dict': state_dict}, args.dst)
    print(report)
    print(f'Wrote {args.dst}: ConvNeXt {version} {arch}, converted from the {layout} layout')
    return 0


if __name__ == '__main__':
    sys.exit(main())

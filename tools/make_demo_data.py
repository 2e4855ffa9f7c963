"""Generate the built-in demo datasets (deterministic for a given seed).

    python tools/make_demo_data.py coco [--root data/coco_shapes] [--num-train 300] ...
    python tools/make_demo_data.py ade  [--root data/ade_shapes] ...
"""
import argparse

from convnext_backbone.data.demo import make_ade_shapes, make_coco_shapes

DEFAULT_ROOTS = {'coco': 'data/coco_shapes', 'ade': 'data/ade_shapes'}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('kind', choices=sorted(DEFAULT_ROOTS))
    parser.add_argument('--root', help='output folder (default: data/<kind>_shapes)')
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--size', type=int, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val,
                                    size=args.size, seed=args.seed).items() if v is not None}
    root = args.root or DEFAULT_ROOTS[args.kind]
    make = make_coco_shapes if args.kind == 'coco' else make_ade_shapes
    make(root, **kwargs)
    print(f'Wrote the {args.kind} demo dataset to {root}')


if __name__ == '__main__':
    main()

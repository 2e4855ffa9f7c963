"""Evaluate a detection or segmentation checkpoint (stack picked by the config).

    python tools/test.py CONFIG CHECKPOINT [--tta] [--work-dir DIR] [--cfg-options ...]
        [--launcher none|pytorch|slurm|mpi]
    python tools/test.py CONFIG FILE.onnx [--data DIR] [--backend onnxruntime|openvino]
        [--precision f32|bf16]                                 # an exported model (fp32, int8)

CHECKPOINT may be this package's, an official ConvNeXt release, an MMDetection 3 /
MMSegmentation 1 model-zoo file or a Hugging Face UperNet-ConvNeXt folder (or an http(s) URL).
It must fit the config's model exactly; if it does not, nothing is evaluated and the tool says
what does not fit (exit status 1). A FILE.onnx of tools/export_onnx.py (or its INT8 form from
tools/quantize.py) is run by onnxruntime or OpenVINO (convnext_backbone.deploy) and evaluated
with the config's metric; one made for another config or other classes is refused
(docs/deploy.md).
"""
import argparse
import sys

from convnext_backbone.cli import (add_backend_arguments, add_runner_arguments, check_mmcv_ops,
                                   keep_freed_memory, prepare_config, refuse_backend_arguments,
                                   run_device, run_tool, setup_cpu_distributed)
from convnext_backbone.data import check_dataset
from convnext_backbone.engine import CheckpointCheckingRunner


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file, Hugging Face folder, URL, or an '
                        '.onnx file of tools/export_onnx.py')
    parser.add_argument('--work-dir', help='where the evaluation log goes')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_model and tta_pipeline")
    add_runner_arguments(parser)
    add_backend_arguments(parser)
    return parser.parse_args(argv)


def test_onnx(cfg, args):
    """The config's metric of an exported file, run by onnxruntime (no mmcv ops needed)."""
    from convnext_backbone.deploy.evaluate import evaluate_onnx
    from convnext_backbone.errors import DeployError
    if args.tta or args.launcher != 'none':
        raise DeployError(f'{args.checkpoint} is an exported single-scale model: it is '
                          'evaluated on one process, without --tta; drop --tta / --launcher')
    check_dataset(cfg, phases=('test', ))
    return evaluate_onnx(cfg, args.checkpoint, args.config, backend=args.backend or
                         'onnxruntime', precision=args.precision or 'f32')


def main(argv=None):
    args = parse_args(argv)
    cfg = prepare_config(args.config, args.work_dir, args.cfg_options, args.launcher,
                         data=args.data, data_splits=args.data_split)
    if args.checkpoint.endswith('.onnx'):
        return test_onnx(cfg, args)
    refuse_backend_arguments(args)
    check_mmcv_ops(cfg, run_device())  # before anything is built
    if run_device() == 'cpu':  # CPU inference near its matmul floor (docs/speed.md)
        keep_freed_memory()
        # An EMAHook (RTMDet) would swap the averaged copy's weights with the optimized
        # model's, whose layers differ; both hold the checkpoint's weights after loading, so
        # the swap changes nothing and is left out.
        hooks = [h for h in cfg.get('custom_hooks', []) if h.get('type') != 'EMAHook']
        cfg.custom_hooks = [*hooks, dict(type='OptimizeForInferenceHook')]
    check_dataset(cfg, phases=('test', ))
    cfg.load_from = args.checkpoint
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError(f'{args.config} defines no tta_model / tta_pipeline for --tta')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    setup_cpu_distributed(args.launcher)
    return CheckpointCheckingRunner.from_cfg(cfg).test()


if __name__ == '__main__':
    sys.exit(run_tool(main))

"""What the command-line tools (``tools/*.py``) share: config preparation for either stack
(mmdet or mmseg, and ``--data``), the device check, error reporting and CPU-friendly distributed
set-up. Imported by the tools only: the top of the layering (see docs/architecture.md).

Needs mmengine only; mmdet / mmseg are imported by the Runner when the config is built.
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from .data import find_layout, fit_config_to_data, parse_split_overrides
from .engine.memory import keep_freed_memory
from .errors import CheckpointError, DataError, DeployError, DeviceError

STACKS = ('mmdet', 'mmseg')


def stack_of(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``: the config's ``default_scope`` (set by the upstream bases)."""
    scope = cfg.get('default_scope')
    if scope not in STACKS:
        raise ValueError(f'Config has default_scope={scope!r}; expected one of {STACKS} '
                         '(inherit mmdet::_base_/default_runtime.py or mmseg::...)')
    return scope


def prepare_config(config: str, work_dir: Optional[str] = None,
                   cfg_options: Optional[dict] = None, launcher: str = 'none',
                   data: Optional[str] = None,
                   data_splits: Optional[List[str]] = None) -> Config:
    """Load a config and fit it to the command line (``data``: a dataset folder whose splits
    and classes the config takes, see ``convnext_backbone.data``; ``cfg_options`` come last and
    win) and to this machine."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'Config file not found: {config}')
    cfg = Config.fromfile(config)
    stack = stack_of(cfg)
    if data:
        layout = find_layout(data, stack, parse_split_overrides(data_splits))
        changed = fit_config_to_data(cfg, layout)
        print_log(f'--data: {layout.describe()}\n  set: {", ".join(changed)}',
                  logger='current')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('train_dataloader'):
        # A training image that fails to load is logged and skipped, not the end of the run.
        from .data.loading import skip_unreadable_training_images  # needs mmcv
        skip_unreadable_training_images(cfg)
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config))[0])
    if launcher != 'none' and not torch.cuda.is_available():
        cfg.env_cfg = cfg.get('env_cfg', {})
        cfg.env_cfg['dist_cfg'] = dict(backend='gloo')
        # DDP of a CPU module takes no device ids.
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None,
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                    False))
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [dict(type='NonFiniteLossHook')]
    return cfg



def fit_optim_wrapper(cfg: Config, amp: bool) -> None:
    """A training run's optimizer wrapper for this machine: ``amp`` asks for mixed precision
    (mmengine's ``AmpOptimWrapper``, dynamic loss scale), which needs a GPU; on CPU a config's
    ``AmpOptimWrapper`` trains in fp32 rather than fail, and says so."""
    optim_wrapper = cfg.get('optim_wrapper')
    if optim_wrapper is None:
        return
    if amp:
        optim_wrapper.type = 'AmpOptimWrapper'
        optim_wrapper.setdefault('loss_scale', 'dynamic')
    if optim_wrapper.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        print_log('No CUDA device: training in fp32 (AmpOptimWrapper -> OptimWrapper)',
                  logger='current')
        optim_wrapper.type = 'OptimWrapper'
        optim_wrapper.pop('loss_scale', None)

def run_device(requested: Optional[str] = None) -> str:
    """The device a run uses: the one asked for, else CUDA where torch sees a GPU (as
    mmengine's Runner decides), else the CPU."""
    return requested or ('cuda' if torch.cuda.is_available() else 'cpu')


def check_mmcv_ops(cfg: Config, device: str) -> None:
    """Fail at start, not at the first step: detection configs run mmcv's compiled ops (NMS,
    RoIAlign) on the run's device, and Mask2Former's pixel decoder imports mmcv's ops and runs
    its multi-scale deformable attention on CUDA; so mmcv must be installed with ops that load
    with this torch and, for a CUDA run, were compiled with CUDA. UPerNet and DeepLabV3+ need
    none of them."""
    ops = _compiled_ops(cfg)
    if not ops:
        return
    fix = 'Run tools/setup_env.sh on this machine (README "Two commands")'
    try:
        import mmcv
        from mmcv.ops import get_compiling_cuda_version
        get_compiling_cuda_version()  # loads the compiled extension
    except ImportError as exc:
        raise DeviceError(f'{ops[0]} configs need mmcv with its compiled ops ({ops[1]}), '
                          f'which do not load here ({exc}). {fix}: it builds mmcv 2.1.0 for '
                          'this torch.') from None
    compiled = get_compiling_cuda_version()
    if str(device).startswith('cuda') and compiled in ('not available', '', None):
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'a GPU'
        raise DeviceError(
            f'This run uses CUDA ({name}), but mmcv {mmcv.__version__} was compiled without it '
            f'(mmcv.ops.get_compiling_cuda_version(): {compiled!r}): the {ops[2]} would fail '
            f'at its first step. {fix}: on a machine with a GPU it builds mmcv with CUDA ops '
            f'for it (it needs a CUDA toolkit {torch.version.cuda}). Or run on the CPU: '
            'CUDA_VISIBLE_DEVICES= (empty).')


def _compiled_ops(cfg: Config) -> Optional[Tuple[str, str, str]]:
    """(configs, ops, what fails on CUDA) where the model needs mmcv's compiled ops."""
    if stack_of(cfg) == 'mmdet':
        if cfg.model.get('type') in ('DINO', 'DeformableDETR'):
            return ('DINO', 'multi-scale deformable attention',
                    "transformer's multi-scale deformable attention")
        return 'Detection', 'NMS, RoIAlign', "detector's RoIAlign and NMS"
    heads = cfg.model.get('decode_head') or []
    # (a list for mmseg's CascadeEncoderDecoder; 'mmdet.Mask2FormerHead' names its scope)
    types = [h.get('type', '') for h in (heads if isinstance(heads, list) else [heads])]
    if any(t.split('.')[-1] == 'Mask2FormerHead' for t in types):
        return ('Mask2Former', 'multi-scale deformable attention',
                "pixel decoder's multi-scale deformable attention")
    return None


DATA_HELP = ('a dataset folder (COCO-format for detection configs; images/ + annotations/ + '
             'classes.txt, or ADE20K, for segmentation): the config takes its splits and classes')


def add_data_arguments(parser, data_help: str = DATA_HELP) -> None:
    """``--data DIR`` and ``--data-split``: a dataset of one's own (``convnext_backbone.data``);
    ``data_help`` for a tool that also takes something else as ``--data``."""
    parser.add_argument('--data', metavar='DIR', help=data_help)
    parser.add_argument('--data-split', nargs='+', metavar='SPLIT=PATH[:PATH]',
                        help='with --data: a split\'s annotation file and image folder (COCO), '
                        'or image and label-map folders, relative to DIR, e.g. '
                        'train=annotations/mine.json:images')


def run_tool(main, argv=None) -> int:
    """Run a tool's ``main``: a checkpoint or data that cannot be used ends it with its message
    and exit status 1, not with a traceback."""
    try:
        main(argv)
    except (CheckpointError, DataError, DeployError, DeviceError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    return 0


def add_runner_arguments(parser) -> None:
    """The options that tools/train.py and tools/test.py share."""
    add_data_arguments(parser)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_epochs=12')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def add_backend_arguments(parser) -> None:
    """``--backend`` and ``--precision``: the runtime of an exported ``.onnx`` file."""
    parser.add_argument('--backend', choices=['onnxruntime', 'openvino'],
                        help='the runtime of an .onnx file (default: onnxruntime)')
    parser.add_argument('--precision', choices=['f32', 'bf16'],
                        help="OpenVINO's inference precision of the file's float parts "
                        '(default f32; bf16 on CPUs with AVX512_BF16 or AMX)')


def refuse_backend_arguments(args) -> None:
    """``--backend`` / ``--precision`` are for exported files; refuse them for a checkpoint."""
    if args.backend or args.precision:
        raise DeployError(f'--backend and --precision choose the runtime of an exported .onnx '
                          f'file; {args.checkpoint} is a checkpoint, run by PyTorch: drop them')


def setup_cpu_distributed(launcher: str) -> None:
    """Start the gloo process group for ``--launcher pytorch`` on a machine without CUDA.

    mmengine's own start-up calls ``torch.cuda.set_device``, which fails there; once the group
    exists, the Runner uses it as it is.
    """
    import torch.distributed as dist
    if launcher == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
        dist.init_process_group(backend='gloo')

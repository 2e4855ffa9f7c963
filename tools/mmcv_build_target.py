"""Which mmcv build this machine needs, for tools/setup_env.sh (run with the venv's python).

    python tools/mmcv_build_target.py key             # e.g. "torch2.14.1-cpu -"
                                                      #   or "torch2.14.1-cu130-sm90 9.0"
    python tools/mmcv_build_target.py toolkit         # the checked CUDA_HOME, or a refusal
    python tools/mmcv_build_target.py built-for WHEEL # "cpu" or "cuda"
    python tools/mmcv_build_target.py installed-from WHEEL  # "same", "other" or "none"
    python tools/mmcv_build_target.py check-install ARCHS WHEEL_DIR  # the final check

mmcv's compiled ops (NMS, RoIAlign, ... of the Mask R-CNN / Cascade configs) run only on the
devices they were compiled for: a CPU-only build cannot run them on CUDA tensors. So where torch
sees a GPU, mmcv is built with its CUDA ops, for the visible GPUs' compute capabilities, with a
CUDA toolkit of torch's own CUDA version; elsewhere (or with ``MMCV_CPU_ONLY=1``) with its CPU
ops. The key names what a wheel was built for, so that the wheel cache never hands a CPU build to
a GPU machine or the reverse.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from typing import Mapping, Optional, Sequence, Tuple

CPU_ONLY_VARIABLE = 'MMCV_CPU_ONLY'
NO_ARCHS = '-'  # the arch list field of a CPU build


class SetupError(RuntimeError):
    """A machine that the set-up cannot build mmcv for, with what to install or set."""


def cpu_only_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user forces the CPU build (e.g. for a GPU machine without a CUDA toolkit)."""
    return environ.get(CPU_ONLY_VARIABLE, '').strip().lower() in ('1', 'true', 'yes', 'on')


def cuda_arch_list(capabilities: Sequence[Tuple[int, int]]) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for the given (major, minor) compute capabilities: '8.0;9.0'."""
    return ';'.join(f'{major}.{minor}' for major, minor in sorted(set(capabilities)))


def build_key(torch_version: str, cuda_version: Optional[str],
              capabilities: Sequence[Tuple[int, int]] = ()) -> str:
    """What a wheel is built for: 'torch2.14.1-cpu' or 'torch2.14.1-cu130-sm80+sm90'.

    ``cuda_version`` None (or no capabilities) means a CPU build. The local part of torch's
    version ('+cu130') is dropped: the CPU ops link against torch's CPU library alone, which is
    the same in torch's CPU and CUDA wheels of one release.
    """
    torch_release = torch_version.split('+')[0]
    if cuda_version is None or not capabilities:
        return f'torch{torch_release}-cpu'
    cuda = ''.join(cuda_version.split('.')[:2])
    archs = '+'.join(f'sm{major}{minor}' for major, minor in sorted(set(capabilities)))
    return f'torch{torch_release}-cu{cuda}-{archs}'


def nvcc_release(nvcc: str) -> Optional[str]:
    """The 'X.Y' release that ``nvcc --version`` reports, or None where nvcc does not run."""
    try:
        text = subprocess.run([nvcc, '--version'], capture_output=True, text=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'release (\d+)\.(\d+)', text)
    return f'{match[1]}.{match[2]}' if match else None


def check_toolkit(cuda_home: Optional[str], torch_cuda: str) -> str:
    """Return ``cuda_home`` where it holds a CUDA toolkit (nvcc and headers) of torch's CUDA
    major.minor version; raise SetupError saying what to install otherwise.

    ``cuda_home`` is the folder that torch's extension builder will use (it reads $CUDA_HOME,
    else the parent of the nvcc on PATH, else /usr/local/cuda), so the check is of the
    toolkit that the build would really run.
    """
    wanted = '.'.join(torch_cuda.split('.')[:2])
    remedy = (f'Install a CUDA toolkit {wanted} and set CUDA_HOME to its root (the folder with '
              f'bin/nvcc and include/cuda_runtime.h) or put its bin/nvcc on PATH; or set '
              f'{CPU_ONLY_VARIABLE}=1 to build mmcv with its CPU ops only (then the detection '
              "configs' NMS and RoIAlign cannot run on the GPU).")
    intro = (f'torch sees a GPU and was built with CUDA {torch_cuda}, so mmcv must be built with '
             f'its CUDA ops by a CUDA toolkit {wanted} (nvcc)')
    if not cuda_home:
        raise SetupError(f'{intro}, but no CUDA toolkit was found (no $CUDA_HOME, no nvcc on PATH,'
                         f' no /usr/local/cuda). {remedy}')
    nvcc = os.path.join(cuda_home, 'bin', 'nvcc')
    found = nvcc_release(nvcc) if os.path.isfile(nvcc) else None
    if found is None:
        raise SetupError(f'{intro}, but the toolkit folder {cuda_home} has no working bin/nvcc. '
                         f'{remedy}')
    if found != wanted:
        raise SetupError(f'{intro}, but {nvcc} is CUDA {found}. {remedy}')
    header = os.path.join(cuda_home, 'include', 'cuda_runtime.h')
    if not os.path.isfile(header):
        raise SetupError(f'{intro}; {nvcc} is CUDA {found}, but {header} is missing (is {nvcc} '
                         f'a wrapper outside the toolkit?). {remedy}')
    return cuda_home


def wheel_built_for(wheel: str) -> str:
    """'cuda' if the wheel's compiled ops link CUDA libraries, 'cpu' if they do not.

    A CUDA build of ``mmcv._ext`` names ``libc10_cuda.so`` among its needed libraries (torch's
    CUDAExtension links it); a CPU build links torch's CPU libraries only.
    """
    with zipfile.ZipFile(wheel) as archive:
        ext = [n for n in archive.namelist() if re.fullmatch(r'mmcv/_ext[^/]*\.so', n)]
        if not ext:
            raise SetupError(f'{wheel} has no compiled ops (mmcv/_ext*.so): not a build of '
                             'mmcv with MMCV_WITH_OPS=1')
        return 'cuda' if b'libc10_cuda.so' in archive.read(ext[0]) else 'cpu'


def installed_from(wheel: str) -> str:
    """'same' if this environment's mmcv was installed from ``wheel`` (a file of the same
    sha256, as pip records in direct_url.json), 'other' if from anything else, 'none' if absent.

    pip keeps an installed mmcv when asked to install another wheel of the same version (say
    the CUDA build after the CPU one), so the set-up replaces an mmcv that is 'other'.
    """
    from importlib import metadata
    try:
        record = metadata.distribution('mmcv').read_text('direct_url.json')
    except metadata.PackageNotFoundError:
        return 'none'
    recorded = json.loads(record or '{}').get('archive_info', {}).get('hashes', {})
    if 'sha256' not in recorded:
        return 'other'
    digest = hashlib.sha256()
    with open(wheel, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return 'same' if digest.hexdigest() == recorded['sha256'] else 'other'


def machine_key(environ: Mapping[str, str] = os.environ) -> Tuple[str, str]:
    """The build key and ``TORCH_CUDA_ARCH_LIST`` (``NO_ARCHS`` for CPU) for this machine."""
    import torch
    if cpu_only_requested(environ) or not torch.cuda.is_available():
        return build_key(torch.__version__, None), NO_ARCHS
    if torch.version.cuda is None:  # a ROCm build of torch
        raise SetupError(f'torch {torch.__version__} sees a GPU through ROCm; this set-up builds '
                         f'mmcv for CUDA or for CPU only. Set {CPU_ONLY_VARIABLE}=1 for the CPU '
                         'build.')
    capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    return (build_key(torch.__version__, torch.version.cuda, capabilities),
            cuda_arch_list(capabilities))


def check_install(archs: str, wheel_dir: str) -> str:
    """The set-up's final check: everything imports, mmcv's compiled ops load against this
    torch, and on a GPU machine (``archs`` not ``-``) they were compiled for torch's CUDA and run
    a kernel (NMS) on the GPU. Returns the versions in one line; ``SetupError`` says the fix."""
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    import pkg_resources  # noqa: F401  mmengine needs it for 'mmdet::' config paths
    import timm
    import torch
    from mmcv.ops import RoIAlign  # noqa: F401  the compiled ops load against this torch

    import convnext_backbone  # noqa: F401
    versions = (f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, '
                f'mmseg {mmseg.__version__}, mmengine {mmengine.__version__}, '
                f'timm {timm.__version__}')
    if archs == NO_ARCHS:
        return versions
    from mmcv.ops import get_compiling_cuda_version, nms
    built = get_compiling_cuda_version()  # 'not available' for a CPU build
    if built.split('.')[:2] != (torch.version.cuda or '').split('.')[:2]:
        problem = ('were compiled without CUDA' if built == 'not available' else
                   f'were compiled for CUDA {built}, torch runs CUDA {torch.version.cuda}')
        raise SetupError(f'mmcv {mmcv.__version__} ops {problem}, but torch sees a GPU: delete '
                         f'{wheel_dir} and rerun (or set {CPU_ONLY_VARIABLE}=1)')
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]], device='cuda')
    nms(boxes, torch.tensor([0.9, 0.8], device='cuda'), 0.5)  # a kernel for this GPU's arch
    return f'mmcv CUDA ops: CUDA {built}, run on {torch.cuda.get_device_name()}\n{versions}'


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ['key']:
            print(*machine_key())
        elif args == ['toolkit']:
            import torch
            from torch.utils.cpp_extension import CUDA_HOME
            print(check_toolkit(CUDA_HOME, torch.version.cuda or ''))
        elif len(args) == 2 and args[0] == 'installed-from':
            print(installed_from(args[1]))
        elif len(args) == 2 and args[0] == 'built-for':
            print(wheel_built_for(args[1]))
        elif len(args) == 3 and args[0] == 'check-install':
            print(check_install(args[1], args[2]))
        else:
            print(__doc__.split('\n\n')[1], file=sys.stderr)
            return 2
    except SetupError as error:
        print(f'\n!!! [setup] {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

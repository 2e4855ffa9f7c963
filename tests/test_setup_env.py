"""tools/setup_env.sh builds (and caches) the mmcv that the machine needs: CPU ops, or CUDA ops
for the visible GPUs with a CUDA toolkit of torch's version; it never reuses a wheel built for the
other kind of machine.

No GPU and no real build here: the build-target helper's decisions are tested as functions, and
the script itself runs against a stand-in venv whose ``python`` logs what pip would do (and fakes
the sdist and the built wheel), so the cache logic and the build environment are checked in
seconds without installing anything.
"""
import os
import os.path as osp
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from .helpers import ROOT, load_tool

target = load_tool('mmcv_build_target')

MMCV_WHEEL = 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
TORCH_RELEASE = torch.__version__.split('+')[0]
needs_cuda_torch = pytest.mark.skipif(torch.version.cuda is None,
                                      reason='the GPU branch checks against torch.version.cuda')


# ------------------------------------------------------------------------- the helper's parts
def test_build_keys_name_what_the_wheel_was_built_for():
    assert target.build_key('2.14.1+cu130', None) == 'torch2.14.1-cpu'
    assert target.build_key('2.14.1+cu130', '13.0', [(9, 0)]) == 'torch2.14.1-cu130-sm90'
    assert target.build_key('2.14.1', '12.8.1', [(9, 0), (8, 0), (9, 0)]) == \
        'torch2.14.1-cu128-sm80+sm90'
    assert target.cuda_arch_list([(9, 0), (8, 6), (9, 0)]) == '8.6;9.0'


def test_cpu_only_is_forced_by_the_environment_variable():
    assert target.cpu_only_requested({'MMCV_CPU_ONLY': '1'})
    assert not target.cpu_only_requested({'MMCV_CPU_ONLY': '0'})
    assert not target.cpu_only_requested({})


@pytest.mark.skipif(torch.cuda.is_available(), reason='a machine without a GPU')
def test_machine_without_gpu_gets_the_cpu_key():
    assert target.machine_key({}) == (f'torch{TORCH_RELEASE}-cpu', target.NO_ARCHS)


def fake_toolkit(folder, release, header=True):
    """A CUDA toolkit folder whose bin/nvcc reports ``release`` (as the real one words it)."""
    os.makedirs(osp.join(folder, 'bin'))
    nvcc = osp.join(folder, 'bin', 'nvcc')
    with open(nvcc, 'w') as f:
        f.write(textwrap.dedent(f"""\
            #!/bin/sh
            echo "nvcc: NVIDIA (R) Cuda compiler driver"
            echo "Cuda compilation tools, release {release}, V{release}.88"
            """))
    os.chmod(nvcc, os.stat(nvcc).st_mode | stat.S_IEXEC)
    if header:
        os.makedirs(osp.join(folder, 'include'))
        open(osp.join(folder, 'include', 'cuda_runtime.h'), 'w').close()
    return str(folder)


def test_toolkit_of_torchs_cuda_version_is_accepted(tmp_path):
    home = fake_toolkit(tmp_path / 'cuda', '13.0')
    assert target.check_toolkit(home, '13.0') == home
    assert target.nvcc_release(osp.join(home, 'bin', 'nvcc')) == '13.0'


@pytest.mark.parametrize('case', ['other release', 'no nvcc', 'no toolkit', 'no headers'])
def test_missing_or_mismatched_toolkit_is_refused_with_what_to_install(tmp_path, case):
    home = {
        'other release': lambda: fake_toolkit(tmp_path / 'cuda', '12.4'),
        'no nvcc': lambda: str(tmp_path),
        'no toolkit': lambda: None,
        'no headers': lambda: fake_toolkit(tmp_path / 'cuda', '13.0', header=False),
    }[case]()
    with pytest.raises(target.SetupError) as error:
        target.check_toolkit(home, '13.0')
    message = str(error.value)
    assert 'Install a CUDA toolkit 13.0 and set CUDA_HOME' in message
    assert 'MMCV_CPU_ONLY=1' in message
    if case == 'other release':
        assert 'is CUDA 12.4' in message


def fake_mmcv_wheel(path, cuda: bool):
    """A wheel whose compiled ops name the libraries a CPU or a CUDA build links."""
    needed = b'libc10.so\0libtorch_cpu.so\0' + (b'libc10_cuda.so\0libcudart.so.13\0' if cuda
                                                else b'')
    with zipfile.ZipFile(path, 'w') as wheel:
        wheel.writestr('mmcv/__init__.py', '')
        wheel.writestr('mmcv/_ext.cpython-311-x86_64-linux-gnu.so', b'\x7fELF' + needed)
    return str(path)


def test_wheel_built_for_reads_the_linked_libraries(tmp_path):
    assert target.wheel_built_for(fake_mmcv_wheel(tmp_path / 'a.whl', cuda=False)) == 'cpu'
    assert target.wheel_built_for(fake_mmcv_wheel(tmp_path / 'b.whl', cuda=True)) == 'cuda'
    with zipfile.ZipFile(tmp_path / 'c.whl', 'w') as wheel:
        wheel.writestr('mmcv/__init__.py', '')
    with pytest.raises(target.SetupError, match='no compiled ops'):
        target.wheel_built_for(str(tmp_path / 'c.whl'))


def test_installed_from_compares_the_recorded_wheel_hash(tmp_path, monkeypatch):
    import hashlib
    import json
    from importlib import metadata
    wheel = fake_mmcv_wheel(tmp_path / 'a.whl', cuda=True)
    digest = hashlib.sha256(open(wheel, 'rb').read()).hexdigest()

    class Installed:
        def __init__(self, record):
            self.record = record

        def read_text(self, name):
            assert name == 'direct_url.json'
            return self.record

    def installed(record):
        monkeypatch.setattr(metadata, 'distribution', lambda name: Installed(record))

    installed(json.dumps({'url': 'file:///old/place.whl',
                          'archive_info': {'hashes': {'sha256': digest}}}))
    assert target.installed_from(wheel) == 'same'  # moved, but the same file
    installed(json.dumps({'archive_info': {'hashes': {'sha256': '0' * 64}}}))
    assert target.installed_from(wheel) == 'other'
    installed(None)  # installed from an index: no direct_url.json
    assert target.installed_from(wheel) == 'other'

    def absent(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, 'distribution', absent)
    assert target.installed_from(wheel) == 'none'


# ----------------------------------------------------------------------- the final check
def test_final_check_imports_everything_and_names_the_versions():
    line = target.check_install('-', '/nowhere')  # this CPU machine: the real installation
    assert line.startswith(f'torch {torch.__version__}, mmcv 2.1.0, mmdet 3.3.0, mmseg 1.2.2')


@pytest.mark.parametrize('built,problem', [
    ('not available', 'were compiled without CUDA'),
    ('11.8', 'were compiled for CUDA 11.8, torch runs CUDA')])
def test_final_check_on_a_gpu_machine_refuses_mmcv_ops_without_its_cuda(monkeypatch, built,
                                                                       problem):
    import mmcv.ops
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: built)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    with pytest.raises(target.SetupError, match=f'mmcv 2.1.0 ops {problem}.*torch sees a GPU: '
                       'delete /cache/wheels/x and rerun'):
        target.check_install('9.0', '/cache/wheels/x')


# ---------------------------------------------------------------- the script, pip stood in for
STAND_IN_PYTHON = r'''#!/usr/bin/env bash
# The venv's python for tests of setup_env.sh: pip only logs (download and wheel fake an sdist
# and a wheel, and log the build's environment); the build-target helper runs for real, except
# "key" with $FAKE_KEY (a GPU machine), "installed-from" and the final "check-install" (tested
# as Python below).
printf 'python %s\n' "$*" >> "$STUB_LOG"
if [ "$1 $2" = "-m pip" ]; then
  prev=
  for arg in "$@"; do
    if [ "$prev" = -d ]; then  # pip download -d DIR: an sdist with mmcv's C++17 flag
      mkdir -p "$arg/src/mmcv-2.1.0"
      echo "extra_compile_args = ['-std=c++17']" > "$arg/src/mmcv-2.1.0/setup.py"
      tar -czf "$arg/mmcv-2.1.0.tar.gz" -C "$arg/src" mmcv-2.1.0
    elif [ "$prev" = -w ]; then  # pip wheel -w DIR: the built wheel
      line="build env: FORCE_CUDA=${FORCE_CUDA-unset}"
      line+=" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST-unset} CUDA_HOME=${CUDA_HOME-unset}"
      line+=" CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset} MMCV_WITH_OPS=${MMCV_WITH_OPS-unset}"
      echo "$line" >> "$STUB_LOG"
      grep -q -- '-std=c++20' setup.py || echo "build error: C++17 left" >> "$STUB_LOG"
      : > "$arg/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl"
    fi
    prev="$arg"
  done
  exit 0
fi
case "$1" in
  */mmcv_build_target.py)
    if [ "$2" = key ] && [ -n "${FAKE_KEY:-}" ]; then echo "$FAKE_KEY"; exit 0; fi
    if [ "$2" = installed-from ]; then echo "${FAKE_INSTALLED:-none}"; exit 0; fi
    if [ "$2" = check-install ]; then echo "check-install $3" >> "$STUB_LOG"; exit 0; fi
    exec "$REAL_PYTHON" "$@";;
esac
echo "unexpected python call: $*" >&2
exit 1
'''


def run_setup(tmp_path, **env):
    venv = tmp_path / 'venv'
    if not venv.exists():
        (venv / 'bin').mkdir(parents=True)
        python = venv / 'bin' / 'python'
        python.write_text(STAND_IN_PYTHON)
        python.chmod(0o755)
    log = tmp_path / 'log.txt'
    log.write_text('')
    environ = {k: v for k, v in os.environ.items()
               if k not in ('CUDA_HOME', 'CUDA_PATH', 'CUDA_VISIBLE_DEVICES', 'FORCE_CUDA',
                             'TORCH_CUDA_ARCH_LIST', 'MMCV_CPU_ONLY', 'MAX_JOBS')}
    environ.update(VENV=str(venv), CONVNEXT_CACHE=str(tmp_path / 'cache'), STUB_LOG=str(log),
                   REAL_PYTHON=sys.executable, **env)
    run = subprocess.run(['bash', osp.join(ROOT, 'tools', 'setup_env.sh')], env=environ,
                         capture_output=True, text=True, timeout=300)
    return run, log.read_text()


def builds(log):
    return [line for line in log.splitlines() if line.startswith('build env:')]


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU key of a machine without a GPU')
def test_cpu_machine_adopts_the_wheel_of_a_cache_from_before_the_keyed_folders(tmp_path):
    wheels = tmp_path / 'cache' / 'wheels'
    wheels.mkdir(parents=True)
    fake_mmcv_wheel(wheels / MMCV_WHEEL, cuda=False)
    run, log = run_setup(tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    keyed = wheels / f'mmcv-2.1.0-torch{TORCH_RELEASE}-cpu' / MMCV_WHEEL
    assert keyed.exists() and not (wheels / MMCV_WHEEL).exists()
    assert builds(log) == []  # reused, not rebuilt
    assert f'reuse the cached mmcv wheel {keyed}' in run.stdout
    assert f'install -q {keyed} torch==' in log
    run, log = run_setup(tmp_path)  # idempotent
    assert run.returncode == 0 and builds(log) == [] and keyed.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU key of a machine without a GPU')
def test_cpu_machine_builds_cpu_ops_into_the_cpu_folder(tmp_path):
    run, log = run_setup(tmp_path, FAKE_INSTALLED='other')
    assert run.returncode == 0, run.stderr[-3000:]
    keyed = tmp_path / 'cache' / 'wheels' / f'mmcv-2.1.0-torch{TORCH_RELEASE}-cpu' / MMCV_WHEEL
    assert keyed.exists()
    assert builds(log) == ['build env: FORCE_CUDA=0 TORCH_CUDA_ARCH_LIST=unset CUDA_HOME=unset '
                           'CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1']
    # an mmcv installed from another wheel (say a CUDA build) is replaced: pip would keep it
    assert f'install -q --force-reinstall --no-deps {keyed}' in log


@needs_cuda_torch
def test_gpu_machine_builds_cuda_ops_and_never_takes_the_cpu_wheel(tmp_path):
    wheels = tmp_path / 'cache' / 'wheels'
    wheels.mkdir(parents=True)
    fake_mmcv_wheel(wheels / MMCV_WHEEL, cuda=False)  # an old CPU wheel: not for this machine
    cuda = '.'.join(torch.version.cuda.split('.')[:2])
    home = fake_toolkit(tmp_path / 'cuda', cuda)
    key = f'torch{TORCH_RELEASE}-cu{cuda.replace(".", "")}-sm90'
    run, log = run_setup(tmp_path, FAKE_KEY=f'{key} 9.0', CUDA_HOME=home)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (wheels / MMCV_WHEEL).exists()  # left alone
    assert (wheels / f'mmcv-2.1.0-{key}' / MMCV_WHEEL).exists()
    assert builds(log) == [f'build env: FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 CUDA_HOME={home} '
                           'CUDA_VISIBLE_DEVICES=unset MMCV_WITH_OPS=1']
    assert 'build error' not in log


@needs_cuda_torch
def test_gpu_machine_without_a_matching_toolkit_stops_before_building(tmp_path):
    cuda = '.'.join(torch.version.cuda.split('.')[:2])
    home = fake_toolkit(tmp_path / 'cuda', '11.8')
    run, log = run_setup(tmp_path, FAKE_KEY=f'torch{TORCH_RELEASE}-cu130-sm90 9.0',
                         CUDA_HOME=home)
    assert run.returncode != 0
    assert f'Install a CUDA toolkit {cuda} and set CUDA_HOME' in run.stderr
    assert 'is CUDA 11.8' in run.stderr
    assert "failed at step: check the CUDA toolkit for mmcv's CUDA ops" in run.stderr
    assert builds(log) == [] and 'download' not in log

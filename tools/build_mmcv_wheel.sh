#!/usr/bin/env bash
# Build a wheel of mmcv from its sdist, patched for this project's torch; used by
# tools/setup_env.sh and tools/gpu_check.sh. The caller sets the build's environment
# (FORCE_CUDA, TORCH_CUDA_ARCH_LIST, CUDA_HOME, MAX_JOBS) and puts setuptools < 70 (mmcv's
# setup.py imports pkg_resources) and torch where $PYTHON finds them.
#   bash tools/build_mmcv_wheel.sh SDIST.tar.gz WHEEL_DIR
set -euo pipefail
SDIST="$1"
WHEEL_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
PY="${PYTHON:-python3}"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
tar -xzf "$SDIST" -C "$build"
src="$(ls -d "$build"/mmcv-*)"
# torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++17 (for the C++ and nvcc flags).
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q -- '-std=c++20' "$src/setup.py" \
  || { echo "mmcv setup.py has no -std flag to raise" >&2; exit 1; }
# setup.py imports pkg_resources (setuptools < 70) and torch, so no build isolation.
(cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
   "$PY" -m pip --disable-pip-version-check wheel --no-build-isolation --no-deps -w "$WHEEL_DIR" .)

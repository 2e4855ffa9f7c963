#!/usr/bin/env bash
# Set up a virtual environment in the checkout (.venv, git-ignored) with pinned versions of
# everything the package, its configs, tools and tests need. Idempotent: a second run on the same
# machine reuses the venv and the cached mmcv wheel and takes a minute or two.
#
# mmcv 2.1.0 (the newest that mmdet 3.3 / mmseg 1.2 accept) has no wheel on PyPI, so it is built
# from its sdist once (about 26 minutes on 2 cores) and the wheel is cached outside the checkout,
# in $CONVNEXT_CACHE (default ~/.cache/convnext_backbone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${CONVNEXT_CACHE:-$HOME/.cache/convnext_backbone}"
WHEELS="$CACHE/wheels"
PY="${PYTHON:-python3}"

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMENGINE_VERSION=0.10.7
MMCV_VERSION=2.1.0
MMDET_VERSION=3.3.0
MMSEG_VERSION=1.2.2

step() { printf '\n==> [setup] %s\n' "$*"; }
trap 'rc=$?; [ $rc -ne 0 ] && printf "\n!!! [setup] failed at step: %s (exit %d)\n" "$CURRENT" "$rc" >&2' EXIT
CURRENT=start

CURRENT="create the virtual environment $VENV"; step "$CURRENT"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# setuptools 77..81: torch 2.14 needs >= 77.0.3, mmengine imports pkg_resources (gone in 82).
SETUPTOOLS='setuptools>=77.0.3,<82'
"${PIP[@]}" install -q --upgrade pip "$SETUPTOOLS" wheel ninja

CURRENT="install torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"; step "$CURRENT"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

CURRENT="install mmengine $MMENGINE_VERSION and build tools"; step "$CURRENT"
"${PIP[@]}" install -q "mmengine==$MMENGINE_VERSION" 'numpy<2.5' opencv-python-headless

mmcv_wheel() { ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }
if [ -z "$(mmcv_wheel)" ]; then
  CURRENT="build the mmcv $MMCV_VERSION wheel (about 26 minutes on 2 cores; cached in $WHEELS)"; step "$CURRENT"
  mkdir -p "$WHEELS"
  build="$(mktemp -d)"
  # mmcv's setup.py is known to build with setuptools < 70 (restored after the build).
  "${PIP[@]}" install -q 'setuptools<70'
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: -d "$build" "mmcv==$MMCV_VERSION"
  tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
  src="$build/mmcv-$MMCV_VERSION"
  # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++17.
  sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py" || { echo "mmcv setup.py has no -std flag to raise" >&2; exit 1; }
  # setup.py imports pkg_resources (setuptools < 70) and torch, so no build isolation.
  (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
     "${PIP[@]}" wheel --no-build-isolation --no-deps -w "$WHEELS" .)
  rm -rf "$build"
  "${PIP[@]}" install -q "$SETUPTOOLS"
else
  step "reuse the cached mmcv wheel $(mmcv_wheel)"
fi

CURRENT="install mmcv, mmdet $MMDET_VERSION and mmsegmentation $MMSEG_VERSION"; step "$CURRENT"
"${PIP[@]}" install -q "$(mmcv_wheel)" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
"${PIP[@]}" install -q "mmdet==$MMDET_VERSION" "mmsegmentation==$MMSEG_VERSION" \
  'numpy<2.5' ftfy regex

CURRENT="install convnext_backbone (editable) with its det, seg and dev (test peers) extras"; step "$CURRENT"
# Pinning torch here too keeps the resolver from swapping it for a release that the cached
# mmcv wheel was not built against.
"${PIP[@]}" install -q -e "$ROOT[det,seg,dev]" "torch==$TORCH_VERSION" \
  "torchvision==$TORCHVISION_VERSION" "$SETUPTOOLS"

CURRENT="check the imports"; step "$CURRENT"
"$VENV/bin/python" - <<'PY'
import torch, mmcv, mmdet, mmseg, mmengine, timm, pkg_resources
from mmcv.ops import RoIAlign  # compiled ops load against this torch
import convnext_backbone
print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, "
      f"mmseg {mmseg.__version__}, mmengine {mmengine.__version__}, timm {timm.__version__}")
PY
CURRENT=done
step "environment ready: $VENV"

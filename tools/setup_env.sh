#!/usr/bin/env bash
# Set up a virtual environment in the checkout (.venv, git-ignored) with pinned versions of
# everything the package, its configs, tools and tests need. Idempotent: a second run on the same
# machine reuses the venv and the cached mmcv wheel and takes a minute or two.
#
# mmcv 2.1.0 (the newest that mmdet 3.3 / mmseg 1.2 accept) has no wheel on PyPI, so it is built
# from its sdist once (about 26 minutes on 2 cores) and the wheel is cached outside the checkout,
# in $CONVNEXT_CACHE (default ~/.cache/convnext_backbone), in a folder named for what it was built
# for (wheels/mmcv-2.1.0-torch2.14.1-cpu/, wheels/mmcv-2.1.0-torch2.14.1-cu130-sm90/, ...).
#
# GPU machines: where torch sees a GPU, mmcv is built with its CUDA ops (the detection configs run
# NMS and RoIAlign on CUDA tensors, which CPU ops cannot), for the visible GPUs' compute
# capabilities. That needs a CUDA toolkit (nvcc and headers) of torch's CUDA version, found
# through $CUDA_HOME or the nvcc on PATH; without one the script stops and says which to install.
# MMCV_CPU_ONLY=1 builds (or reuses) the CPU-ops wheel on a GPU machine instead.
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

# Which build this machine needs: "torch2.14.1-cpu -" or e.g. "torch2.14.1-cu130-sm90 9.0"
# (key of the wheel's cache folder, and TORCH_CUDA_ARCH_LIST; "-" for the CPU ops).
CURRENT="decide which mmcv build this machine needs"
TARGET=("$VENV/bin/python" "$ROOT/tools/mmcv_build_target.py")
target="$("${TARGET[@]}" key)"
read -r MMCV_KEY MMCV_ARCHS <<<"$target"
[ -n "$MMCV_ARCHS" ] || { echo "mmcv_build_target.py key: expected 'KEY ARCHS', got '$target'" >&2; exit 1; }
MMCV_WHEELS="$WHEELS/mmcv-$MMCV_VERSION-$MMCV_KEY"
mmcv_wheel() { ls "$MMCV_WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1; }
# Caches from before the keyed folders hold one wheel directly in $WHEELS, built by this script
# for torch $TORCH_VERSION: adopt it for the CPU key when its ops are CPU ops (saves the build).
legacy="$(ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
if [ -z "$(mmcv_wheel)" ] && [ -n "$legacy" ] && [ "$MMCV_ARCHS" = - ] \
    && [ "$("${TARGET[@]}" built-for "$legacy")" = cpu ]; then
  mkdir -p "$MMCV_WHEELS" && mv "$legacy" "$MMCV_WHEELS/"
fi

if [ -z "$(mmcv_wheel)" ]; then
  if [ "$MMCV_ARCHS" = - ]; then
    CURRENT="build the mmcv $MMCV_VERSION wheel with CPU ops (about 26 minutes on 2 cores)"
    # mmcv's setup.py compiles CUDA ops whenever torch sees a GPU: hide it for a forced CPU build.
    build_env=(CUDA_VISIBLE_DEVICES= FORCE_CUDA=0)
  else
    CURRENT="check the CUDA toolkit for mmcv's CUDA ops"
    cuda_home="$("${TARGET[@]}" toolkit)"
    CURRENT="build the mmcv $MMCV_VERSION wheel with CUDA ops for compute capability $MMCV_ARCHS"
    CURRENT+=" (longer than the CPU build: the CUDA kernels too)"
    build_env=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=$MMCV_ARCHS" "CUDA_HOME=$cuda_home")
  fi
  step "$CURRENT; cached in $MMCV_WHEELS"
  mkdir -p "$MMCV_WHEELS"
  build="$(mktemp -d)"
  # mmcv's setup.py is known to build with setuptools < 70 (restored after the build).
  "${PIP[@]}" install -q 'setuptools<70'
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: -d "$build" "mmcv==$MMCV_VERSION"
  env "${build_env[@]}" PYTHON="$VENV/bin/python" \
    bash "$ROOT/tools/build_mmcv_wheel.sh" "$build"/mmcv-"$MMCV_VERSION".tar.gz "$MMCV_WHEELS"
  rm -rf "$build"
  "${PIP[@]}" install -q "$SETUPTOOLS"
else
  step "reuse the cached mmcv wheel $(mmcv_wheel)"
fi

CURRENT="install mmcv, mmdet $MMDET_VERSION and mmsegmentation $MMSEG_VERSION"; step "$CURRENT"
# pip keeps an installed mmcv 2.1.0 when given another wheel of that version (the CUDA build
# after the CPU one, or the reverse), so one installed from another wheel is replaced.
if [ "$("${TARGET[@]}" installed-from "$(mmcv_wheel)")" = other ]; then
  "${PIP[@]}" install -q --force-reinstall --no-deps "$(mmcv_wheel)"
fi
"${PIP[@]}" install -q "$(mmcv_wheel)" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
"${PIP[@]}" install -q "mmdet==$MMDET_VERSION" "mmsegmentation==$MMSEG_VERSION" \
  'numpy<2.5' ftfy regex

CURRENT="install convnext_backbone (editable) with its det, seg, dev (test peers) and deploy (ONNX, OpenVINO) extras"
step "$CURRENT"
# Pinning torch here too keeps the resolver from swapping it for a release that the cached
# mmcv wheel was not built against. deploy: onnx, onnxruntime and openvino (pyproject.toml).
"${PIP[@]}" install -q -e "$ROOT[det,seg,dev,deploy]" "torch==$TORCH_VERSION" \
  "torchvision==$TORCHVISION_VERSION" "$SETUPTOOLS"

CURRENT="check the imports"; step "$CURRENT"
"${TARGET[@]}" check-install "$MMCV_ARCHS" "$MMCV_WHEELS"
CURRENT=done
step "environment ready: $VENV"

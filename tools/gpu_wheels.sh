#!/usr/bin/env bash
# Download into .whl/ (git-ignored) every wheel that tools/gpu_check.sh installs on the lent GPU
# machine (Python 3.12, manylinux x86_64; it has torch, timm, numpy, Pillow, PyYAML, tqdm,
# packaging, onnx, onnxruntime and OpenCV, and no network), and mmcv 2.1.0's sdist, which is
# built there with its CUDA ops. The folder travels with the device tool's `carry` (64 MiB in
# all, the working tree included), so the script stops when the folder passes $LIMIT_MIB
# (scipy, 35 MiB, and matplotlib with fonttools, 15 MiB, leave little room: both are imported
# with mmdet.models).
#   bash tools/gpu_wheels.sh            # then see docs/setup.md, "Firing the GPU check"
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
LIMIT_MIB="${LIMIT_MIB:-62}"
PIP=("${PYTHON:-.venv/bin/python}" -m pip --disable-pip-version-check)

# What each wheel is for (read from the Requires-Dist of mmengine, mmcv, mmdet, mmseg and of
# each wheel below, less what the GPU machine has). Versions: those of tools/setup_env.sh.
WHEELS=(
  mmengine==0.10.7      # the Runner, configs, registries
  mmdet==3.3.0          # the detection configs and tools
  mmsegmentation==1.2.2 # the segmentation configs and tools
  addict                # mmengine's and mmcv's Config
  yapf platformdirs     # mmengine's Config.pretty_text (yapf needs platformdirs)
  termcolor             # mmengine's logger
  rich markdown-it-py mdurl pygments  # mmengine's progress bars (rich and what it needs)
  'setuptools<70'       # pkg_resources: mmengine's 'mmdet::' paths and mmcv's setup.py
  ninja                 # torch's extension builder: parallel (MAX_JOBS) builds of mmcv's ops
  wheel                 # pip wheel of mmcv's sdist without build isolation
  scipy                 # imported by mmdet.models, mmdet.evaluation, mmseg.models / datasets
  matplotlib contourpy cycler fonttools kiwisolver pyparsing python-dateutil six
                        # mmdet's and mmseg's visualizers (matplotlib and what it needs)
  pycocotools           # mmdet's COCO dataset and metric
  terminaltables        # mmdet's metric tables
  shapely               # mmdet's structures (imported with the models)
  prettytable wcwidth==0.2.13  # mmseg's metric table (the pure-Python wcwidth: smaller)
  ftfy regex            # mmseg's text-model modules, imported with mmseg.models
)

mkdir -p "$DEST"
echo "==> wheels for Python 3.12, manylinux x86_64, into $DEST"
"${PIP[@]}" download -q -d "$DEST" --only-binary=:all: --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --no-deps "${WHEELS[@]}"
echo "==> mmcv 2.1.0 sdist (built on the GPU machine by tools/build_mmcv_wheel.sh)"
"${PIP[@]}" download -q -d "$DEST" --no-binary=:all: --no-deps --no-build-isolation mmcv==2.1.0
ls -l "$DEST"
size_mib=$(( $(du -sb "$DEST" | cut -f1) / 1048576 ))
echo "total: $size_mib MiB in $DEST (limit $LIMIT_MIB MiB; 64 MiB travel in all)"
[ "$size_mib" -le "$LIMIT_MIB" ] || { echo "$DEST is over $LIMIT_MIB MiB" >&2; exit 1; }

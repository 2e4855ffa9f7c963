#!/usr/bin/env bash
# The built-in demo, end to end on CPU: set up (if needed), generate the data, train on it as on
# one's own data (--data: splits and classes read from the folder), evaluate with tools/test.py
# (prints AP / mIoU) and draw the ground truth beside the prediction on a validation image.
#   bash tools/run_demo.sh [coco|ade]     (default: coco, Mask R-CNN on generated shapes)
set -euo pipefail
cd "$(dirname "$0")/.."
KIND="${1:-coco}"
case "$KIND" in
  coco) CONFIG=configs/demo/mask_rcnn_convnext_shapes_demo.py
        DATA=data/coco_shapes
        IMAGE=$DATA/val2017/000001.jpg
        METRIC=bbox_mAP ;;
  ade)  CONFIG=configs/demo/upernet_convnext_shapes_demo.py
        DATA=data/ade_shapes
        IMAGE=$DATA/ADEChallengeData2016/images/validation/ADE_valid_00000000.jpg
        METRIC=mIoU ;;
  *)    echo "usage: bash tools/run_demo.sh [coco|ade]" >&2; exit 2 ;;
esac
WORK_DIR="work_dirs/demo_$KIND"
PY=.venv/bin/python

[ -x "$PY" ] && "$PY" -c 'import mmdet, mmseg, convnext_backbone' 2>/dev/null || bash tools/setup_env.sh
echo "==> [demo] generate the $KIND demo data"
"$PY" tools/make_demo_data.py "$KIND"
echo "==> [demo] train $CONFIG (CPU; progress every 10 iterations)"
"$PY" tools/train.py "$CONFIG" --data "$DATA" --work-dir "$WORK_DIR"
CKPT="$WORK_DIR/$(cat "$WORK_DIR/last_checkpoint" | xargs basename)"
echo "==> [demo] evaluate $CKPT"
"$PY" tools/test.py "$CONFIG" "$CKPT" --data "$DATA" --work-dir "$WORK_DIR/test"
echo "==> [demo] draw predictions"
"$PY" tools/infer.py "$CONFIG" "$CKPT" "$IMAGE" --data "$DATA" --show-gt --out-dir "$WORK_DIR/vis" \
  --score-thr 0.5
echo "==> [demo] draw the training curves"
"$PY" tools/plot_curves.py "$WORK_DIR" --keys loss "$METRIC" --legend "demo_$KIND" \
  --out "$WORK_DIR/vis/curves.png"

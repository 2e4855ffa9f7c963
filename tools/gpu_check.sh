#!/usr/bin/env bash
# The GPU run as one prepared command (docs/setup.md, "Firing the GPU check"): on the lent GPU
# machine (torch, timm, onnxruntime; no mm* packages, no network) it installs the wheels carried
# in .whl/ (tools/gpu_wheels.sh), builds mmcv's CUDA ops in the background, benchmarks the
# backbone on CUDA, then trains and evaluates the COCO demo with --amp, runs its ONNX export
# and times the whole detectors and segmentor (tools/benchmark_detector.py).
# Every step has a time budget (stopped when over, and said), writes its results under $OUT
# (default ./gpu_results) before the next starts, and the end prints the summary table.
#   bash tools/gpu_check.sh                       # about 9 minutes on an H100 / H200
#   GPU_CHECK_REHEARSE=1 bash tools/gpu_check.sh  # (or no CUDA) every step that needs no GPU,
#                                                 # on tiny sizes, with the reasons for the rest
# Exit status 1 when a step that ran failed or was stopped.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-$(command -v python3)}"
DEADLINE=$((SECONDS + ${GPU_CHECK_TOTAL_S:-540}))
WORK="$(mktemp -d)"  # installed wheels, demo data, checkpoints: not results, not carried back
SUMMARY="$OUT/summary.tsv"
: > "$SUMMARY"
FAILED=0
if [ "${GPU_CHECK_REHEARSE:-0}" = 1 ] \
    || ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  REHEARSE=1
  echo "==> [gpu_check] rehearsal (GPU_CHECK_REHEARSE=1 or no CUDA): tiny sizes on CPU"
else
  REHEARSE=0
fi

record() {  # NAME STATUS SECONDS RESULTS
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SUMMARY"
  printf '==> [gpu_check] %s: %s (%ss) -> %s\n' "$1" "$2" "$3" "$4"
}
skip() { record "$1" "skipped: $2" 0 -; }

# step NAME BUDGET_S CMD...: run CMD (output in $OUT/NAME.log) for at most its budget and what is
# left of the total, and record how it ended.
step() {
  local name="$1" budget="$2" log="$OUT/$1.log" start=$SECONDS rc
  shift 2
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$budget" ] && budget=$left
  if [ "$budget" -le 5 ]; then skip "$name" "no time left of the total"; FAILED=1; return 1; fi
  printf '\n==> [gpu_check] %s (budget %ss): %s\n' "$name" "$budget" "$*"
  timeout --kill-after=10 "$budget" "$@" > "$log" 2>&1
  rc=$?
  tail -n 5 "$log"
  case $rc in
    0) record "$name" ok $((SECONDS - start)) "$log" ;;
    124|137) record "$name" "stopped at its budget (${budget}s)" $((SECONDS - start)) "$log"
             FAILED=1 ;;
    *) record "$name" "failed (exit $rc)" $((SECONDS - start)) "$log"; FAILED=1 ;;
  esac
  return $rc
}

# ------------------------------------------------------------------ a. the wheels, mmcv's build
SITE="$WORK/site"
if ! ls .whl/*.whl > /dev/null 2>&1; then
  skip install "no .whl/ here (run bash tools/gpu_wheels.sh first)"
elif [ "$REHEARSE" = 1 ]; then
  # The carried wheels are for Python 3.12: install them as for that machine, import the
  # pure-Python mmengine from there with this Python.
  step install 120 bash -c "'$PY' -m pip --disable-pip-version-check install -q --no-index \
    --no-deps --target '$SITE' --python-version 3.12 --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 .whl/*.whl \
    && PYTHONPATH='$SITE' '$PY' -c 'import mmengine as m; print(m.__version__, m.__file__)' \
    | tee /dev/stderr | grep -q '^0.10.7 $SITE/'"
else
  step install 120 "$PY" -m pip --disable-pip-version-check install -q --no-index --no-deps \
    --target "$SITE" .whl/*.whl
fi
if [ "$REHEARSE" = 0 ]; then
  export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this machine's mm* stand in
fi

BUILD_PID=
MMCV_WHEELS="$WORK/mmcv_wheels"
if [ "$REHEARSE" = 1 ]; then
  skip mmcv_build "needs CUDA (the CPU build takes 26 minutes on 2 cores): this Python's mmcv \
stands in"
else
  read -r _ MMCV_ARCHS <<<"$("$PY" tools/mmcv_build_target.py key)"
  if CUDA_HOME_FOUND="$("$PY" tools/mmcv_build_target.py toolkit 2> "$OUT/mmcv_build.log")"; then
    echo "==> [gpu_check] mmcv_build: CUDA ops for $MMCV_ARCHS, in the background"
    BUILD_START=$SECONDS
    ( time env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$MMCV_ARCHS" CUDA_HOME="$CUDA_HOME_FOUND" \
        MAX_JOBS=16 PYTHON="$PY" bash tools/build_mmcv_wheel.sh .whl/mmcv-2.1.0.tar.gz \
        "$MMCV_WHEELS" && "$PY" -m pip install -q --no-index --no-deps --target "$SITE" \
        "$MMCV_WHEELS"/mmcv-*.whl ) >> "$OUT/mmcv_build.log" 2>&1 &
    BUILD_PID=$!
  else
    record mmcv_build "failed: no CUDA toolkit" 0 "$OUT/mmcv_build.log"; FAILED=1
  fi
fi

# ------------------------------------------------------------- b. the backbone benchmark on CUDA
if [ "$REHEARSE" = 1 ]; then
  TINY=(--device cpu --archs atto --sizes 64x64 --batches 1 --repeats 1 --warmup 0)
  step benchmark_tiny 120 "$PY" tools/benchmark.py "${TINY[@]}" --out "$OUT/benchmark_tiny"
  skip benchmark_base "ConvNeXt-B: the same command as benchmark_tiny (rehearsed there)"
  skip benchmark_compiled "torch.compile takes minutes per peer on 2 CPU cores"
  step benchmark_memory 120 "$PY" tools/benchmark.py "${TINY[@]}" --modes train \
    --peers convnext_backbone --memory --out "$OUT/benchmark_memory"
else
  # Precisions (fp32, bf16, fp16) and memory formats: every one, the CUDA default.
  FULL=(--sizes 512x512 800x1216 --batches 1 8 --modes eval train --repeats 5 --warmup 2)
  step benchmark_tiny 100 "$PY" tools/benchmark.py --archs tiny "${FULL[@]}" \
    --out "$OUT/benchmark_tiny"
  step benchmark_base 100 "$PY" tools/benchmark.py --archs base "${FULL[@]}" \
    --out "$OUT/benchmark_base"
  step benchmark_compiled 100 "$PY" tools/benchmark.py --archs tiny --sizes 800x1216 \
    --batches 1 --precisions fp32 bf16 --memory-formats channels_last --compile \
    --out "$OUT/benchmark_compiled"
  step benchmark_memory 60 "$PY" tools/benchmark.py --archs tiny base --sizes 800x1216 \
    --batches 2 --modes train --precisions fp32 --memory-formats contiguous --repeats 1 \
    --warmup 1 --memory --out "$OUT/benchmark_memory"
fi

# --------------------------------------------- c. once mmcv is built: start-up check, AMP demo
MMCV_READY=1
if [ -n "$BUILD_PID" ]; then
  while kill -0 "$BUILD_PID" 2> /dev/null && [ $((DEADLINE - SECONDS)) -gt 150 ]; do sleep 5; done
  if kill -0 "$BUILD_PID" 2> /dev/null; then
    kill -- "$BUILD_PID"; MMCV_READY=0; FAILED=1
    record mmcv_build "stopped: not built with 150 s of the total left" \
      $((SECONDS - BUILD_START)) "$OUT/mmcv_build.log"
  elif wait "$BUILD_PID"; then
    record mmcv_build ok $((SECONDS - BUILD_START)) "$OUT/mmcv_build.log"
  else
    record mmcv_build failed $((SECONDS - BUILD_START)) "$OUT/mmcv_build.log"
    MMCV_READY=0; FAILED=1
  fi
elif [ "$REHEARSE" = 0 ]; then
  MMCV_READY=0
fi

# The figures of a test.py log's last test line, as JSON: {"bbox_mAP_50": 0.43, ...}.
metrics() {
  "$PY" -c 'import json, re, sys
lines = [l for l in open(sys.argv[1]) if "(test) [" in l]
found = re.findall(r"\bcoco/(\w+): (-?\d+(?:\.\d+)?)\b", lines[-1] if lines else "")
print(json.dumps({k: float(v) for k, v in found}))' "$1"
}
# Whether the demo learnt (AP50 >= 0.5, as tests/test_end_to_end.py asserts on CPU), and the
# ONNX file evaluates within 0.005 of the checkpoint (the same test's bound).
check_metrics() {  # TORCH_JSON [ONNX_JSON]
  "$PY" -c 'import json, sys
torch = json.loads(sys.argv[1])
if len(sys.argv) > 2:
    onnx = json.loads(sys.argv[2])
    far = {k: (torch[k], onnx[k]) for k in ("bbox_mAP", "segm_mAP")
           if abs(torch[k] - onnx[k]) > 0.005}
    sys.exit(f"ONNX AP differs from the checkpoint: {far}" if far else 0)
low = {k: torch.get(k) for k in ("bbox_mAP_50", "segm_mAP_50") if not torch.get(k, 0) >= 0.5}
sys.exit(f"the demo did not learn (AP50 below 0.5): {low}" if low else 0)' "$@"
}

DEMO="$WORK/demo" DATA="$WORK/coco" CONFIG=configs/demo/mask_rcnn_convnext_shapes_demo.py
if [ "$MMCV_READY" = 0 ]; then
  for s in startup_check demo_amp onnx; do skip "$s" "needs mmcv's CUDA ops (mmcv_build)"; done
else
  if [ "$REHEARSE" = 1 ]; then
    step startup_check 60 "$PY" tools/mmcv_build_target.py check-install - "$MMCV_WHEELS"
    DEMO_DATA=(--num-train 8 --num-val 4 --size 64 --seed 1)
    SCHEDULE=(train_cfg.max_epochs=1 train_cfg.val_interval=1)
    LEARN="not asserted on the rehearsal's 8 images"
  else
    step startup_check 60 "$PY" tools/mmcv_build_target.py check-install "$MMCV_ARCHS" \
      "$MMCV_WHEELS"
    DEMO_DATA=(--num-train 300 --num-val 60 --size 192 --seed 0)  # run_demo.sh's
    SCHEDULE=(train_cfg.max_epochs=8)
    LEARN=asserted
  fi
  step demo_amp 180 bash -c "set -e
    '$PY' tools/make_demo_data.py coco --root '$DATA' ${DEMO_DATA[*]}
    '$PY' tools/train.py $CONFIG --data '$DATA' --work-dir '$DEMO' --amp \
      --cfg-options ${SCHEDULE[*]}
    '$PY' tools/test.py $CONFIG \"\$(cat '$DEMO/last_checkpoint')\" --data '$DATA' \
      --work-dir '$DEMO/test' > '$OUT/demo_amp_test.log' 2>&1 \
      || { cat '$OUT/demo_amp_test.log'; exit 1; }"
  if [ -f "$OUT/demo_amp_test.log" ]; then
    TORCH_AP="$(metrics "$OUT/demo_amp_test.log")"
    echo "$TORCH_AP" > "$OUT/demo_amp_metrics.json"
    echo "demo AP (learning $LEARN): $TORCH_AP"
    if [ "$LEARN" = asserted ] && ! check_metrics "$TORCH_AP"; then
      record demo_learns failed 0 "$OUT/demo_amp_metrics.json"; FAILED=1
    fi
    # ------------------------------------------ d. the demo's ONNX file in onnxruntime, matched
    step onnx 120 bash -c "set -e
      '$PY' tools/export_onnx.py $CONFIG \"\$(cat '$DEMO/last_checkpoint')\" --data '$DATA' \
        --out '$WORK/demo.onnx'
      '$PY' tools/test.py $CONFIG '$WORK/demo.onnx' --data '$DATA' --work-dir '$DEMO/test_onnx' \
        > '$OUT/onnx_test.log' 2>&1 || { cat '$OUT/onnx_test.log'; exit 1; }"
    if [ -f "$OUT/onnx_test.log" ]; then
      ONNX_AP="$(metrics "$OUT/onnx_test.log")"
      echo "$ONNX_AP" > "$OUT/onnx_metrics.json"
      if ! check_metrics "$TORCH_AP" "$ONNX_AP"; then
        record onnx_matches failed 0 "$OUT/onnx_metrics.json"; FAILED=1
      fi
    fi
  else
    skip onnx "no trained demo checkpoint (demo_amp)"
  fi
fi
# ------------------ c. whole-model speed: the paper's A100 25.6 / 13.5 frames/s (Mask R-CNN /
# Cascade T, 1280x800), MMSegmentation's 50.25 ms (UPerNet T, 512x512, V100, fp16)
if [ "$MMCV_READY" = 0 ]; then
  skip detector_speed "needs mmcv's CUDA ops (mmcv_build)"
elif [ "$REHEARSE" = 1 ]; then
  step detector_speed 90 "$PY" tools/benchmark_detector.py configs/mask_rcnn_convnext_t.py \
    configs/upernet_convnext_t.py --device cpu --size 64 64 --precisions fp32 --runs 1 --warmup 0
else
  step detector_speed 90 "$PY" tools/benchmark_detector.py configs/mask_rcnn_convnext_t.py \
    configs/cascade_mask_rcnn_convnext_t.py --size 800 1280 --precisions fp32 fp16
  step segmentor_speed 45 "$PY" tools/benchmark_detector.py configs/upernet_convnext_t.py \
    --size 512 512 --precisions fp32 fp16
fi

# ---------------------------------------------------------------------------- the summary table
{
  echo '| step | status | seconds | results |'
  echo '|---|---|---|---|'
  while IFS=$'\t' read -r name status secs results; do
    echo "| $name | $status | $secs | ${results#"$OUT/"} |"
  done < "$SUMMARY"
} > "$OUT/summary.md"
printf '\n'; cat "$OUT/summary.md"
rm -rf "$WORK"
exit $FAILED

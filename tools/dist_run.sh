#!/usr/bin/env bash
# torchrun of one of this folder's tools: tools/dist_run.sh TOOL.py NPROC [tool arguments]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host PORT=29500 on each node.
set -euo pipefail
TOOL=$1
NPROC=$2
shift 2
exec python -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
  --nproc_per_node="$NPROC" "$(dirname "$0")/$TOOL" "$@" --launcher pytorch

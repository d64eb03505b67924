#!/usr/bin/env bash
# The launcher behind dist_train.sh and dist_test.sh: torchrun with the
# toolboxes' variables (NNODES, NODE_RANK, MASTER_ADDR, PORT), with the Python
# that tools/python.sh chooses.
#   bash tools/torchrun.sh NPROC SCRIPT [arguments]
set -euo pipefail
NPROC=$1
shift
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" \
    --nproc_per_node="$NPROC" \
    "$@"

#!/usr/bin/env bash
# Train on NPROC processes per node, as the toolboxes' dist_train.sh does
# (NNODES, NODE_RANK, MASTER_ADDR, PORT are honoured). Without GPUs the
# processes use gloo on the CPU.
#   bash tools/dist_train.sh CONFIG NPROC [toolbox train.py arguments]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash tools/dist_train.sh CONFIG NPROC [train.py arguments]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1 NPROC=$2
shift 2
exec bash "$here/torchrun.sh" "$NPROC" "$here/train.py" "$CONFIG" --launcher pytorch "$@"

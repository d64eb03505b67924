#!/usr/bin/env bash
# Test on NPROC processes per node, as the toolboxes' dist_test.sh does
# (NNODES, NODE_RANK, MASTER_ADDR, PORT are honoured). Without GPUs the
# processes use gloo on the CPU.
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [toolbox test.py arguments]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py arguments]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONFIG=$1 CHECKPOINT=$2 NPROC=$3
shift 3
exec bash "$here/torchrun.sh" "$NPROC" "$here/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"

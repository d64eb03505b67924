#!/usr/bin/env bash
# The launcher behind slurm_train.sh and slurm_test.sh: srun with the
# toolboxes' variables (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS).
# GPUS_PER_NODE=0 runs GPUS processes on CPU-only nodes (gloo). The Python is
# the one tools/python.sh chooses.
#   bash tools/slurm_run.sh PARTITION JOB_NAME SCRIPT [arguments]
set -euo pipefail
PARTITION=$1 JOB_NAME=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
gres=()
[ "$GPUS_PER_NODE" -gt 0 ] && gres=(--gres="gpu:$GPUS_PER_NODE")
tasks_per_node=$([ "$GPUS_PER_NODE" -gt 0 ] && echo "$GPUS_PER_NODE" || echo "$GPUS")

# shellcheck disable=SC2086  # SRUN_ARGS is a list of words by design
exec srun -p "$PARTITION" --job-name="$JOB_NAME" "${gres[@]}" \
    --ntasks="$GPUS" --ntasks-per-node="$tasks_per_node" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PYTHON" -u "$@" --launcher=slurm

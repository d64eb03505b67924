#!/usr/bin/env bash
# A one-machine Slurm cluster for the tests of tools/slurm_*.sh.
#   bash tests/slurm_cluster.sh start DIR   prints SLURM_CONF=DIR/slurm.conf
#   bash tests/slurm_cluster.sh stop DIR
# start installs Debian's slurm-wlm and munge if they are missing (as root),
# then runs munged, slurmctld and slurmd with everything (config, key, socket,
# state, logs, ports) inside DIR, so nothing of the machine's own set-up is
# used or changed; stop ends those daemons.
set -euo pipefail
action=$1 dir=$(mkdir -p "$2" && cd "$2" && pwd)

stop() {
    for pid in "$dir"/*.pid; do
        [ -e "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
}

if [ "$action" = stop ]; then
    stop
    exit 0
fi
[ "$action" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "error: Slurm is not installed and installing it needs root: apt-get install slurm-wlm munge" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >"$dir/apt.log" 2>&1
    apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$dir/apt.log" 2>&1 ||
        { tail -n 20 "$dir/apt.log" >&2; exit 1; }
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
user=$(id -un)
mkdir -p "$dir/state" "$dir/spool"

# munge's key must be private to the user running munged.
head -c 1024 /dev/urandom >"$dir/munge.key"
chmod 400 "$dir/munge.key"
munged --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" \
    --seed-file="$dir/munged.seed" --force

cat >"$dir/slurm.conf" <<EOF
ClusterName=wsmm
SlurmctldHost=$node(127.0.0.1)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
EOF
export SLURM_CONF=$dir/slurm.conf
slurmctld -i
slurmd -N "$node"

# Ready when the node takes jobs.
for _ in $(seq 60); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case $state in idle*|mixed*|allocated*) echo "SLURM_CONF=$SLURM_CONF"; exit 0 ;; esac
    sleep 1
done
echo "error: the Slurm node did not come up (state: '${state:-none}'); logs in $dir" >&2
stop
exit 1

#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the Slurm tests (tests/slurm_cluster.py) and for
# trying `--launcher slurm` without a cluster. Idempotent: what runs already is left running.
#
#   tools/slurm_local.sh          start munged, slurmctld and slurmd (installing slurm-wlm and munge
#                                 with apt-get when missing); prints the partition name
#   tools/slurm_local.sh stop     stop slurmd and slurmctld (munged keeps running)
#
# Needs root (Slurm's daemons run as SlurmUser=root here) and Debian's packages. The config is a
# minimal one: one node named by `hostname -s` with all its CPUs, one default partition, job
# requeueing allowed, and short KillWait / MinJobAge so stops and requeues take seconds.
set -euo pipefail

PARTITION="${SLURM_LOCAL_PARTITION:-local}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARK="# written by tools/slurm_local.sh"

die() { echo "slurm_local: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (Slurm's daemons run as root here)"

stop() {
  for daemon in slurmd slurmctld; do
    pid_file="/run/$daemon.pid"
    if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      kill "$(cat "$pid_file")"
    fi
  done
}

if [ "${1:-start}" = stop ]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and apt-get is not available"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null \
    || die "apt-get install slurm-wlm munge failed"
fi

NODE="$(hostname -s)"
CPUS="$(nproc)"

write_conf() {
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat > "$CONF.tmp" <<CONF
$MARK
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits the credential lifetime before it starts again (120 s by default).
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Jobs start as soon as they are submitted, not at the next periodic scheduling pass.
# A requeued job starts at the next pass once eligible: passes every 2 s, not every 60 s.
SchedulerParameters=sched_min_interval=0,sched_interval=2,bf_interval=5
MpiDefault=none
JobRequeue=1
ReturnToService=2
# A stopped or timed-out job gets SIGTERM, then SIGKILL after KillWait seconds: enough for the
# trainer to save its interrupt checkpoint. No grace past the time limit.
KillWait=20
OverTimeLimit=0
# Finished jobs stay visible to squeue / scontrol this long (there is no accounting database).
MinJobAge=3600
InactiveLimit=0
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
  if cmp -s "$CONF.tmp" "$CONF"; then rm -f "$CONF.tmp"; return 1; fi
  mv "$CONF.tmp" "$CONF"
}

# A config another tool wrote is not ours to replace.
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script; leaving it alone"
fi
CHANGED=0
write_conf && CHANGED=1

running() { pgrep -x "$1" >/dev/null; }

if ! running munged; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
fi
if [ "$CHANGED" = 1 ] && running slurmctld; then
  # A changed config (another version of this script): restart the daemons to read it.
  stop
  for _ in $(seq 1 50); do running slurmctld || running slurmd || break; sleep 0.2; done
fi
running slurmctld || /usr/sbin/slurmctld
running slurmd || /usr/sbin/slurmd

# Ready when the node accepts jobs.
for _ in $(seq 1 60); do
  state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)"
  case "$state" in
    idle*|mix*|alloc*) echo "$PARTITION"; exit 0 ;;
    down*|drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
die "the node $NODE did not become ready (see /var/log/slurm/slurmctld.log and slurmd.log)"

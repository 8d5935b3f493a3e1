#!/usr/bin/env bash
# A private, single-node Slurm cluster on this host, for the tests in tests/slurm/.
#
#   tests/slurm/cluster.sh start    munged + slurmctld + slurmd, waits until the node is idle,
#                                   prints `export SLURM_CONF=...` (eval it to use the cluster)
#   tests/slurm/cluster.sh status   sinfo/squeue of the cluster; exit 0 when it is up
#   tests/slurm/cluster.sh stop     kills the daemons it started (by pid) and removes its dir
#
# Everything lives in ALICE_SLURM_DIR (default ${TMPDIR:-/tmp}/alice-slurm-$UID): slurm.conf,
# its own munge key and socket (the host's munged, if any, is left alone), state, spool, logs.
# Ports are picked free at start, so two clusters on one host (two engineers' test runs) do
# not collide. The node is CPU-only with the cores and memory `slurmd -C` reports; no
# cgroups (proctrack/linuxproc), because containers rarely delegate them.
#
# Exit status: 0 ok; 77 when the Slurm or munge packages are missing (install: make deps);
# 1 when a daemon does not come up (its log is printed).
set -euo pipefail

DIR=${ALICE_SLURM_DIR:-${TMPDIR:-/tmp}/alice-slurm-$(id -u)}
MARK=$DIR/.alice-slurm-cluster     # only a dir holding this file is ever removed by `stop`
SBIN_SLURMCTLD=$(command -v slurmctld || echo /usr/sbin/slurmctld)
SBIN_SLURMD=$(command -v slurmd || echo /usr/sbin/slurmd)
SBIN_MUNGED=$(command -v munged || echo /usr/sbin/munged)
PLUGIN_DIR=${ALICE_SLURM_PLUGIN_DIR:-/usr/lib/x86_64-linux-gnu/slurm-wlm}
START_TIMEOUT=${ALICE_SLURM_START_TIMEOUT:-60}

die() { echo "cluster.sh: $*" >&2; exit 1; }

have_packages() {
  [ -x "$SBIN_SLURMCTLD" ] && [ -x "$SBIN_SLURMD" ] && [ -x "$SBIN_MUNGED" ] &&
    command -v sbatch >/dev/null && command -v sinfo >/dev/null
}

free_port() {
  # Asks the kernel for an unused TCP port (bind to port 0), then releases it for Slurm.
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

kill_pidfile() {
  local f=$1 pid
  [ -s "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

show_log() { echo "---- $1 (last lines)" >&2; tail -n 30 "$1" >&2 2>/dev/null || true; }

start_munge() {
  # Our own key and socket: no dependence on (or change to) the host's /etc/munge.
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
  chmod 0400 "$DIR/munge/munge.key"
  "$SBIN_MUNGED" --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" >>"$DIR/log/munged.log" 2>&1 ||
    { show_log "$DIR/log/munged.log"; die "munged did not start"; }
  for _ in $(seq 1 50); do [ -S "$DIR/munge/munge.socket" ] && return 0; sleep 0.1; done
  show_log "$DIR/log/munged.log"; die "munged socket $DIR/munge/munge.socket did not appear"
}

write_conf() {
  local node cpus_line mem mpi task ctld_port slurmd_port
  node=$(hostname -s)
  # `slurmd -C` reports this host's real topology; declaring exactly that keeps slurmd from
  # draining the node for a mismatch. Leave 5% of memory to the OS so the node is never
  # "Low RealMemory".
  cpus_line=$("$SBIN_SLURMD" -C | head -n1 | sed -e 's/^NodeName=[^ ]* //' -e 's/RealMemory=[0-9]*//')
  mem=$("$SBIN_SLURMD" -C | head -n1 | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$((mem * 95 / 100))
  mpi=none; [ -e "$PLUGIN_DIR/mpi_pmix.so" ] && mpi=pmix
  # task/affinity binds CPUs without cgroups (so --cpu-bind=cores is exercised for real);
  # task/none where the plugin is absent.
  task=task/none; [ -e "$PLUGIN_DIR/task_affinity.so" ] && task=task/affinity
  ctld_port=$(free_port); slurmd_port=$(free_port)
  while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
  cat >"$DIR/slurm.conf" <<EOF
# Written by tests/slurm/cluster.sh for a private test cluster; removed on stop.
ClusterName=alicetest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's restart (default 120 s); short for the tests.
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=$task
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=$mpi
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2,sched_min_interval=100000
# Short timers: tests wait on these. KillWait is the SIGTERM->SIGKILL grace on cancel/timeout.
KillWait=10
MinJobAge=600
MessageTimeout=20
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 $cpus_line RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

wait_idle() {
  local t0=$SECONDS state
  while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
    state=$(SLURM_CONF=$DIR/slurm.conf sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)
    case $state in
      idle|mix|alloc) return 0 ;;
      drain*|down*|inval*)
        SLURM_CONF=$DIR/slurm.conf scontrol update nodename="$(hostname -s)" state=resume \
          >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  SLURM_CONF=$DIR/slurm.conf sinfo -N -l >&2 || true
  show_log "$DIR/log/slurmctld.log"; show_log "$DIR/log/slurmd.log"
  die "node did not become idle within ${START_TIMEOUT}s (state '${state:-none}')"
}

cmd_start() {
  have_packages || { echo "cluster.sh: skip: slurmctld/slurmd/munged not installed (make deps)"; exit 77; }
  if [ -e "$MARK" ] && cmd_status >/dev/null 2>&1; then
    echo "export SLURM_CONF=$DIR/slurm.conf"; return 0
  fi
  [ -e "$MARK" ] && cmd_stop >/dev/null 2>&1
  mkdir -p "$DIR"
  touch "$MARK"
  mkdir -p "$DIR"/{state,spool,run,log,munge}
  chmod 0700 "$DIR/munge"
  start_munge
  write_conf
  export SLURM_CONF=$DIR/slurm.conf
  # -c: a clean start (no state from an earlier cluster in this dir).
  "$SBIN_SLURMCTLD" -c -f "$SLURM_CONF" >>"$DIR/log/slurmctld.log" 2>&1 ||
    { show_log "$DIR/log/slurmctld.log"; die "slurmctld did not start"; }
  for _ in $(seq 1 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
  scontrol ping 2>/dev/null | grep -q UP || { show_log "$DIR/log/slurmctld.log"; die "slurmctld not answering"; }
  "$SBIN_SLURMD" -f "$SLURM_CONF" -N "$(hostname -s)" >>"$DIR/log/slurmd.log" 2>&1 ||
    { show_log "$DIR/log/slurmd.log"; die "slurmd did not start"; }
  wait_idle
  echo "export SLURM_CONF=$DIR/slurm.conf"
}

cmd_status() {
  [ -e "$MARK" ] || { echo "cluster.sh: no cluster in $DIR"; return 1; }
  export SLURM_CONF=$DIR/slurm.conf
  scontrol ping || return 1
  sinfo -N -l
  squeue
}

cmd_stop() {
  [ -d "$DIR" ] || return 0
  [ -e "$MARK" ] || die "$DIR is not a cluster dir made by cluster.sh (no $MARK); not touching it"
  # Jobs first, so no slurmstepd outlives the daemons.
  if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$DIR/slurm.conf scancel --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 1 30); do
      [ -z "$(SLURM_CONF=$DIR/slurm.conf squeue -h -t R,CG 2>/dev/null)" ] && break; sleep 0.5
    done
  fi
  kill_pidfile "$DIR/run/slurmd.pid"
  kill_pidfile "$DIR/run/slurmctld.pid"
  kill_pidfile "$DIR/munge/munged.pid"
  rm -rf "$DIR"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status   (cluster dir: \$ALICE_SLURM_DIR, now $DIR)" >&2; exit 2 ;;
esac

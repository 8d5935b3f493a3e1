# shellcheck shell=bash
# Shared by every slurm/*.sbatch script (sourced, not run). One place for: finding the alice
# binary, launching one MPI task per GPU (srun --mpi=pmix, or mpirun), forwarding the
# preemption signal to the ranks, and requeueing a run that stopped with ALICE_EXIT_REQUEUE.
#
# Environment (all optional; chain.sh sets the first two):
#   ALICE_HOME       repository root holding bin/alice and slurm/   (default: the submit dir)
#   ALICE_BIN        the alice binary                                (default: $ALICE_HOME/bin/alice)
#   ALICE_LAUNCHER   srun (default) | mpirun. mpirun is the fallback for sites whose Slurm has
#                    no PMIx plugin (`srun --mpi=list` lacks pmix) or whose MPI was built
#                    without Slurm/PMIx support: Open MPI's mpirun reads the allocation itself.
#   ALICE_SRUN_MPI   the --mpi plugin for srun (default pmix; `srun --mpi=list` shows yours)
#   ALICE_CPU_BIND   srun --cpu-bind value (default cores; `none` where binding is unwanted)
#   ALICE_REQUEUE    1 (default): requeue the job when alice stops with status 3 on the
#                    time-limit warning (SIGUSR1, --signal=B:USR1@T); 0: just exit 3
#   ALICE_REQUEUE_ON_TERM  0 (default): a stop on SIGTERM exits 3 without requeueing. SIGTERM
#                    is what scancel sends (requeueing would bring a cancelled job back) and
#                    what preemption sends, where PreemptMode=REQUEUE requeues the job itself.
#                    1: requeue after SIGTERM too (sites whose preemption cancels jobs;
#                    srun only: mpirun kills the ranks 1 s after a SIGTERM and exits 1).
#
# Exit status of alice that the scripts act on (src/core/preempt.h):
#   0 done; 3 = ALICE_EXIT_REQUEUE: stopped on SIGUSR1/SIGTERM after writing a checkpoint;
#   anything else: an error, reported and passed on so `afterok` dependents do not start.
#
# Written for bash 4.2 and later (RHEL/CentOS 7 login and compute nodes): an array that may
# be empty is expanded as ${a[@]+"${a[@]}"}, since "${a[@]}" of an empty array is an unbound
# variable under `set -u` before bash 4.4 (tests/slurm/test_bash_compat.sh checks it).

ALICE_EXIT_REQUEUE=3

# shellcheck source=slurm/overlays.sh
source "$(dirname "${BASH_SOURCE[0]}")/overlays.sh"

ALICE_HOME=${ALICE_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}
ALICE_BIN=${ALICE_BIN:-$ALICE_HOME/bin/alice}
ALICE_LAUNCHER=${ALICE_LAUNCHER:-srun}
export ALICE_HOME ALICE_BIN

alice_log() { echo "[$(date '+%F %T')] ${SLURM_JOB_NAME:-alice}: $*"; }

alice_fail() { echo "[$(date '+%F %T')] ${SLURM_JOB_NAME:-alice}: error: $*" >&2; exit 2; }

# Prints what this job is and checks the binary; every script calls it first.
alice_job_header() {
  [ -x "$ALICE_BIN" ] || alice_fail "alice binary '$ALICE_BIN' not found or not executable; build it" \
    "(make) or point ALICE_BIN/ALICE_HOME at it"
  alice_log "job ${SLURM_JOB_ID:-none}${SLURM_ARRAY_TASK_ID:+ (array task $SLURM_ARRAY_TASK_ID)}" \
    "on ${SLURM_JOB_NODELIST:-$(hostname -s)}: ${SLURM_NTASKS:-1} tasks," \
    "${SLURM_CPUS_PER_TASK:-1} cpus/task, launcher $ALICE_LAUNCHER," \
    "restart ${SLURM_RESTART_COUNT:-0}"
  # OpenMP threads per rank = the cores Slurm gave each task; alice also gets threads=.
  export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}
  export OMP_PROC_BIND=${OMP_PROC_BIND:-close} OMP_PLACES=${OMP_PLACES:-cores}
  # Open MPI refuses to start as root unless told; harmless for ordinary users.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
}

# The launcher prefix: one MPI task per GPU (per Slurm task), bound to its cores.
alice_launcher_cmd() {
  case $ALICE_LAUNCHER in
    srun)
      # --kill-on-bad-exit: one rank dying ends the step instead of leaving the others
      # blocked in a collective (rank-failure handling, see docs/OPERATIONS.md).
      # --cpus-per-task again: since Slurm 22.05 srun no longer inherits the job's value, and
      # with --cpu-bind=cores each rank would be bound to ONE core while running
      # OMP_NUM_THREADS threads, the loader's threads and NCCL's.
      echo srun --mpi="${ALICE_SRUN_MPI:-pmix}" --cpu-bind="${ALICE_CPU_BIND:-cores}" \
        --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --kill-on-bad-exit=1 ;;
    mpirun)
      # Open MPI reads the Slurm allocation: its slots per node are the tasks Slurm placed
      # there (whatever --ntasks/--nodes/--ntasks-per-node said), filled in order; PE= gives
      # each rank its --cpus-per-task cores. Open MPI ends the whole job when one rank exits
      # non-zero (its default).
      # On several nodes Open MPI starts its daemons with srun, which would read sbatch's
      # SLURM_GPUS_PER_TASK / SLURM_TRES_PER_TASK as that step's request: one GPU per daemon,
      # so all ranks of a node would share one GPU. Without them the step gets the job's GPUs.
      # On SIGTERM (scancel, the time limit without --signal, preemption) mpirun kills its
      # ranks after odls_base_sigkill_timeout, 1 s: too short for a checkpoint. Raising it is
      # no cure: mpirun sleeps that long whenever it ends a job a rank left non-zero, the
      # status-3 stop of the SIGUSR1 path included (docs/OPERATIONS.md, section 6).
      echo env -u SLURM_GPUS_PER_TASK -u SLURM_TRES_PER_TASK mpirun -np "${SLURM_NTASKS:-1}" \
        --map-by "slot:PE=${SLURM_CPUS_PER_TASK:-1}" \
        --bind-to core -x OMP_NUM_THREADS -x OMP_PROC_BIND -x OMP_PLACES ;;
    *) alice_fail "ALICE_LAUNCHER='$ALICE_LAUNCHER' is not srun or mpirun" ;;
  esac
}

_alice_child=""
_alice_command=""   # alice's subcommand (pretrain, pack, ...): what a stop signal means to it
_alice_trapped=0
_alice_signals=""   # the signals this batch shell got while alice ran, e.g. " USR1 TERM"
_alice_forward_signal() {
  # Slurm's --signal=B:USR1@T signals this batch shell only; pass it on to the ranks. Both
  # srun and Open MPI's mpirun forward SIGUSR1 to every task, and alice treats SIGUSR1 and
  # SIGTERM alike, so SIGUSR1 is what the ranks get whichever signal arrived here.
  _alice_trapped=1
  _alice_signals="$_alice_signals $1"
  case $_alice_command in
    pretrain|finetune)
      alice_log "received SIG$1: asking the ranks to checkpoint and stop" \
        "(SIGUSR1 to pid $_alice_child)" ;;
    *)  # pack, infer, eval: nothing to checkpoint; a requeued job starts the command over
      alice_log "received SIG$1: stopping alice $_alice_command (SIGUSR1 to pid $_alice_child);" \
        "it keeps no checkpoint: a requeued job runs it again from the start" ;;
  esac
  [ -n "$_alice_child" ] && kill -USR1 "$_alice_child" 2>/dev/null || true
}

# Whether a stop with status 3 is requeued: after the time-limit warning (SIGUSR1), yes; after
# SIGTERM alone (scancel, or preemption, which requeues by itself under PreemptMode=REQUEUE)
# only with ALICE_REQUEUE_ON_TERM=1. Prints why not when it says no.
_alice_requeue_wanted() {
  [ "${ALICE_REQUEUE:-1}" = 1 ] || { echo "ALICE_REQUEUE=0"; return 1; }
  [ -n "${SLURM_JOB_ID:-}" ] || { echo "not a Slurm job"; return 1; }
  case " $_alice_signals " in
    *" USR1 "*) return 0 ;;
    *" TERM "*)
      [ "${ALICE_REQUEUE_ON_TERM:-0}" = 1 ] && return 0
      echo "stopped on SIGTERM (scancel, preemption or the time limit itself; preemption" \
        "under PreemptMode=REQUEUE requeues the job by itself; ALICE_REQUEUE_ON_TERM=1" \
        "requeues after SIGTERM too)"
      return 1 ;;
  esac
  return 0   # the ranks were signalled directly (not through this shell)
}

# alice_run ARGS...: launches "$ALICE_BIN" ARGS... on every task with signal forwarding, waits,
# and on ALICE_EXIT_REQUEUE requeues this job (the requeued job resumes from the checkpoint).
# Returns alice's exit status (0 after a successful requeue).
alice_run() {
  local launcher rc
  launcher=$(alice_launcher_cmd) || exit 2
  alice_log "running: $launcher $ALICE_BIN $*"
  _alice_command=$1
  _alice_signals=""
  trap '_alice_forward_signal USR1' USR1
  trap '_alice_forward_signal TERM' TERM
  # In the background so the traps run while it works (bash defers traps during a
  # foreground child until that child exits).
  $launcher "$ALICE_BIN" "$@" &
  _alice_child=$!
  # A trapped signal interrupts `wait` (status 128 + its number) while the launcher runs on:
  # wait again then. Each status is collected by exactly one `wait`: in POSIX mode
  # (POSIXLY_CORRECT in the job's environment) bash forgets it once returned, and a second
  # wait would answer 127.
  while :; do
    _alice_trapped=0
    wait "$_alice_child"; rc=$?
    [ "$_alice_trapped" = 1 ] && [ "$rc" -gt 128 ] || break
  done
  trap - USR1 TERM
  _alice_child=""
  if [ "$rc" -eq "$ALICE_EXIT_REQUEUE" ]; then
    local why_not
    if why_not=$(_alice_requeue_wanted); then
      # An array task's SLURM_JOB_ID of its first task is the array's id, which scontrol
      # reads as every task of the array (finished folds started again, running ones
      # cancelled): name the task itself.
      local requeue_id=$SLURM_JOB_ID
      [ -z "${SLURM_ARRAY_TASK_ID:-}" ] ||
        requeue_id=${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID
      alice_log "alice checkpointed and stopped (status $rc): requeueing job $requeue_id;" \
        "it resumes from the latest checkpoint"
      if scontrol requeue "$requeue_id"; then return 0; fi
      alice_log "scontrol requeue failed (job not requeueable? submit with --requeue);" \
        "resubmit this script to resume"
    else
      alice_log "alice checkpointed and stopped (status $rc); not requeued: $why_not;" \
        "resubmit to resume"
    fi
  elif [ "$rc" -ne 0 ] && [ "$ALICE_LAUNCHER" = srun ] && [ -z "${SLURM_JOB_ID:-}" ]; then
    # srun itself fails outside an allocation ("Could not establish a configuration source"
    # or a new allocation refused): alice may never have started
    alice_log "alice failed with status $rc (see the messages above); outside a Slurm job" \
      "(SLURM_JOB_ID is unset) srun itself may have failed instead: then submit the script" \
      "with sbatch, or run it here with ALICE_LAUNCHER=mpirun"
  elif [ "$rc" -ne 0 ]; then
    alice_log "alice failed with status $rc (see the messages above)"
  fi
  return "$rc"
}

# The array task id as the fold, with a clear error outside an array job.
# alice_refuse_owned_keys SCRIPT "KEY ..." ARGS...: ends the job when ARGS set a key the
# script sets itself (alice_owned_word).
alice_refuse_owned_keys() {
  local script=$1 keys=$2 word
  shift 2
  word=$(alice_owned_word "$keys" "$@") || return 0
  local key=${word#--}
  alice_fail "$script sets ${key%%=*} itself (the run directory from its RUN_DIR or" \
    "RUN_BASE argument, the fold from the array task); remove '$word'"
}

alice_array_fold() {
  [ -n "${SLURM_ARRAY_TASK_ID:-}" ] ||
    alice_fail "this script is a job array over folds: submit with --array=0-4 (one task per fold)"
  echo "$SLURM_ARRAY_TASK_ID"
}

# The highest-numbered complete checkpoint DIR/ckpt_<step>.h5 (checkpoints are written under a
# temporary name and renamed, so every file matching the pattern is complete).
alice_latest_ckpt() {
  local best="" best_step=-1 f step
  for f in "$1"/ckpt_*.h5; do
    step=${f##*/ckpt_}; step=${step%.h5}
    [[ $step =~ ^[0-9]+$ ]] || continue
    if [ "$((10#$step))" -gt "$best_step" ]; then best_step=$((10#$step)); best=$f; fi
  done
  [ -n "$best" ] || return 1
  echo "$best"
}

# alice_run_dir_free RUN_DIR: ends the job (status 2) when another alice job holds RUN_DIR's
# lock (src/train/run_lock.h), before this start overwrites the job file snapshot that the
# other job's requeue would read (alice itself refuses the second job only after that). Without
# util-linux's flock command, or on a file system without flock (flock fails otherwise than
# "held": alice then warns and runs unlocked), the check is left to alice.
alice_run_dir_free() {
  local lock=$1/.alice.lock rc=0
  [ -e "$lock" ] && command -v flock > /dev/null 2>&1 || return 0
  flock -n -E 75 "$lock" true 2> /dev/null || rc=$?
  [ "$rc" = 75 ] &&
    alice_fail "run_dir '$1' is in use by another alice job ($(head -1 "$lock" 2> /dev/null)):" \
      "wait for it to end, or give this job another run_dir"
  [ "$rc" = 0 ] || echo "$(date '+%F %T') warning: cannot test the lock of '$1' (flock status" \
    "$rc): left to alice" >&2
  return 0
}

# alice_config_snapshot CONFIG RUN_DIR [NAME]: prints the job file this start should use. The
# first start copies CONFIG to RUN_DIR/NAME (default slurm_job.cfg); a requeued start
# (SLURM_RESTART_COUNT > 0)
# uses that copy, so editing the job file while a run waits in the queue cannot change the
# model under its checkpoints (alice would refuse the checkpoint, and the run would fail),
# and deleting it does not fail the requeued start.
alice_require_config() {
  [ -r "$1" ] || alice_fail "job config '$1' not found (paths are relative to the submit dir $PWD)"
}
alice_config_snapshot() {
  local config=$1 run_dir=$2 snapshot=$2/${3:-slurm_job.cfg}
  if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ] && [ -r "$snapshot" ]; then
    echo "$snapshot"; return 0
  fi
  alice_require_config "$config"   # after the requeue case: that start needs only its copy
  cp "$config" "$snapshot.tmp.$$" && mv "$snapshot.tmp.$$" "$snapshot" ||
    alice_fail "cannot copy the job file '$config' into '$run_dir'"
  echo "$snapshot"
}

# alice_snapshot_overlays RUN_DIR ARG...: sets the array alice_args to the ARGs with every
# further job file (`--config FILE` or `--config=FILE` among the key=value arguments: an
# ablation overlay) replaced by its copy RUN_DIR/slurm_job_overlay<k>.cfg, made at the first
# start and used by a requeued one, as alice_config_snapshot does for the job file itself.
_alice_overlay_run_dir=""
_alice_snapshot_overlay() {
  alice_config_snapshot "$1" "$_alice_overlay_run_dir" "slurm_job_overlay$2.cfg"
}
alice_snapshot_overlays() {
  _alice_overlay_run_dir=$1
  shift
  local rc=0
  alice_map_overlays _alice_snapshot_overlay "$@" || rc=$?
  [ "$rc" != 3 ] || alice_fail "--config needs a job file after it"
  [ "$rc" = 0 ] || alice_fail "the job files among the arguments could not be copied (see above)"
}

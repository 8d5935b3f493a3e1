#!/usr/bin/env bash
# slurm/common.sh's job-file snapshots without a cluster: the first start copies the job file
# (alice_config_snapshot) and every overlay given among the arguments (alice_snapshot_overlays:
# `--config FILE`, `--config=FILE`, an ablation) into the run directory and points the
# arguments at the copies; a requeued start (SLURM_RESTART_COUNT > 0) uses those copies, so an
# overlay edited or deleted while the run waits in the queue changes nothing (it used to be
# read live). Other arguments pass through as they are, spaces included.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$T/run dir" "$T/jobs"
echo "steps = 10" > "$T/jobs/base.cfg"
echo "use_dv = 0" > "$T/jobs/overlay one.cfg"
echo "use_casa = 0" > "$T/jobs/overlay2.cfg"
# snapshot RESTART_COUNT ARG...: prints the resolved arguments, one per line
snapshot() {
  local restarts=$1; shift
  SLURM_RESTART_COUNT=$restarts bash -c 'source "$1/slurm/common.sh"; shift
    alice_snapshot_overlays "$@" || exit 2; printf "%s\n" "${alice_args[@]}"' _ "$ROOT" "$@"
}
args=("$T/run dir" data="a b.h5" --config "$T/jobs/overlay one.cfg" lr=1e-4
      "--config=$T/jobs/overlay2.cfg")
first=$(snapshot 0 "${args[@]}") || fail "the first start's snapshot failed"
want=$(printf '%s\n' data="a b.h5" --config "$T/run dir/slurm_job_overlay0.cfg" lr=1e-4 \
  "--config=$T/run dir/slurm_job_overlay1.cfg")
[ "$first" = "$want" ] || fail "arguments: got
$first
want
$want"
cmp -s "$T/jobs/overlay one.cfg" "$T/run dir/slurm_job_overlay0.cfg" &&
  cmp -s "$T/jobs/overlay2.cfg" "$T/run dir/slurm_job_overlay1.cfg" ||
  fail "the copies differ from the overlays"
# the overlays edited and one deleted while the job waits: the requeued start keeps the copies
echo "use_dv = 1" > "$T/jobs/overlay one.cfg"
rm "$T/jobs/overlay2.cfg"
again=$(snapshot 1 "${args[@]}") || fail "the requeued start's snapshot failed"
[ "$again" = "$want" ] || fail "requeued arguments: $again"
grep -q "use_dv = 0" "$T/run dir/slurm_job_overlay0.cfg" ||
  fail "the requeue re-copied the edited overlay"
# a first start with a missing overlay fails naming it, creating nothing
rc=0; out=$(snapshot 0 "$T/fresh" --config "$T/jobs/missing.cfg" 2>&1) || rc=$?
[ "$rc" != 0 ] && echo "$out" | grep -q "missing.cfg" || fail "a missing overlay: rc $rc, $out"
# the sbatch scripts pass the copies on (the stand-in alice prints its arguments)
mkdir -p "$T/bin"
printf '#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"\n' > "$T/bin/srun"
printf '#!/usr/bin/env bash\necho "ARGS: $*"\n' > "$T/alice"
chmod +x "$T/alice" "$T/bin/srun"
out=$(cd "$T" && PATH="$T/bin:$PATH" ALICE_BIN="$T/alice" ALICE_HOME="$ROOT" SLURM_JOB_ID=7 \
  bash "$ROOT/slurm/pretrain.sbatch" "$T/jobs/base.cfg" "$T/run2" \
  --config "$T/jobs/overlay one.cfg" 2>&1) || fail "pretrain.sbatch: $out"
echo "$out" |
  grep -q -- "--config $T/run2/slurm_job.cfg .*--config $T/run2/slurm_job_overlay0.cfg" ||
  fail "pretrain.sbatch did not pass the overlay's copy: $out"
echo "ok: job file and overlays snapshotted at the first start, the copies used when requeued"
# A run_dir another alice job holds (its lock, src/train/run_lock.h): a second start is refused
# before it overwrites the snapshot the first job's requeue reads (it had been refused by alice
# only after the copy, and the first job's requeue resumed with the second's lr). Free again,
# the start goes on.
if command -v flock > /dev/null 2>&1; then
  mkdir -p "$T/held"
  echo "pid 1 on host elsewhere, since then" > "$T/held/.alice.lock"
  echo "lr = 0.1" > "$T/held/slurm_job.cfg"
  (exec 9>> "$T/held/.alice.lock"; flock 9; exec sleep 30) &   # the lock dies with it
  holder=$!
  for _ in $(seq 50); do flock -n "$T/held/.alice.lock" true 2> /dev/null || break; sleep 0.1; done
  rc=0
  out=$(bash -c 'source "$1/slurm/common.sh"; alice_run_dir_free "$2"; echo free' _ "$ROOT" \
    "$T/held" 2>&1) || rc=$?
  kill $holder 2> /dev/null; wait $holder 2> /dev/null || true
  [ "$rc" = 2 ] &&
    echo "$out" | grep -q "run_dir '$T/held' is in use by another alice job (pid 1" ||
    fail "a held run_dir not refused (status $rc): $out"
  grep -q "lr = 0.1" "$T/held/slurm_job.cfg" || fail "the held run_dir's snapshot changed"
  out=$(bash -c 'source "$1/slurm/common.sh"; alice_run_dir_free "$2"; echo free' _ "$ROOT" \
    "$T/held" 2>&1) || fail "a free run_dir refused: $out"
  echo "ok: a run_dir another job holds is refused before its snapshot is touched; free, it goes on"
  # a file system without flock (flock fails otherwise than "held"): a warning, the start goes
  # on and alice itself decides (it warns and runs unlocked); it had been refused as "in use"
  mkdir -p "$T/bin"
  printf '#!/bin/sh\necho "flock: failed to get lock: No locks available" >&2\nexit 1\n' \
    > "$T/bin/flock"
  chmod +x "$T/bin/flock"
  out=$(PATH="$T/bin:$PATH" bash -c 'source "$1/slurm/common.sh"; alice_run_dir_free "$2"
    echo free' _ "$ROOT" "$T/held" 2>&1) || fail "a run_dir without flock support refused: $out"
  echo "$out" | grep -q "warning: cannot test the lock" && echo "$out" | grep -q "^free$" ||
    fail "no warning, or the start did not go on: $out"
  echo "ok: without flock support the start goes on with a warning"
else
  echo "flock (util-linux) not installed: the run_dir check before the snapshot not tested here"
fi

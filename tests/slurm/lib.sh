# shellcheck shell=bash
# Helpers for the tests in tests/slurm/ (sourced). A test calls slurm_test_cluster_up first:
# it starts a private cluster (tests/slurm/cluster.sh) in a fresh temp dir, stops it and removes
# the dir on exit, and skips the test (exit 77) when the Slurm packages are missing.

SLURM_TEST_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

slurm_test_cleanup() {
  local rc=$?
  if [ -n "${ALICE_SLURM_DIR:-}" ] && [ "${SLURM_TEST_KEEP:-0}" != 1 ]; then
    bash "$SLURM_TEST_REPO/tests/slurm/cluster.sh" stop >/dev/null 2>&1 || true
  fi
  [ -n "${SLURM_TEST_TMP:-}" ] && [ "${SLURM_TEST_KEEP:-0}" != 1 ] && rm -rf "$SLURM_TEST_TMP"
  exit "$rc"
}

# Work dir for the test's files (removed on exit unless SLURM_TEST_KEEP=1).
slurm_test_tmp() {
  SLURM_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/alice-slurm-test.XXXXXX")
  trap slurm_test_cleanup EXIT
  trap 'exit 130' INT TERM
}

slurm_test_cluster_up() {
  [ -n "${SLURM_TEST_TMP:-}" ] || slurm_test_tmp
  export ALICE_SLURM_DIR=$SLURM_TEST_TMP/cluster
  local out rc=0
  out=$(bash "$SLURM_TEST_REPO/tests/slurm/cluster.sh" start) || rc=$?
  if [ "$rc" = 77 ]; then echo "$out"; echo "skip: Slurm packages missing (make deps)"; exit 77; fi
  [ "$rc" = 0 ] || { echo "$out"; echo "FAIL: the local Slurm cluster did not start"; exit 1; }
  eval "$out"
  export SLURM_CONF
  echo "cluster up: $(sinfo -h -N -o '%N %t cpus=%c mem=%m')"
}

# slurm_wait_job ID TIMEOUT_S: waits until job ID (and every task of an array) has left the
# queue; prints its final state(s). Fails the test on timeout.
slurm_wait_job() {
  local id=$1 limit=$2 t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    if [ -z "$(squeue -h -j "$id" 2>/dev/null)" ]; then
      slurm_job_states "$id"; return 0
    fi
    sleep 1
  done
  echo "FAIL: job $id still in the queue after ${limit}s:" >&2
  squeue >&2; scontrol show job "$id" >&2
  return 1
}

# Final state of a job (one line per array task): "<id> <state> <exit code> <restarts>".
slurm_job_states() {
  scontrol -o show job "$1" 2>/dev/null | while read -r line; do
    local jid state code restarts
    jid=$(sed -n 's/.*JobId=\([0-9]*\).*/\1/p' <<<"$line")
    state=$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$line")
    code=$(sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p' <<<"$line")
    restarts=$(sed -n 's/.* Restarts=\([0-9]*\).*/\1/p' <<<"$line")
    echo "$jid $state $code $restarts"
  done
}

# Waits until FILE has at least N lines (a run is that far along); fails after TIMEOUT_S.
wait_lines() {
  local file=$1 n=$2 limit=$3 t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$limit" ]; do
    [ -f "$file" ] && [ "$(wc -l <"$file")" -ge "$n" ] && return 0
    sleep 0.2
  done
  echo "FAIL: $file did not reach $n lines within ${limit}s" >&2
  return 1
}

# Fails the test unless `alice CMD --help` answers: every command the Slurm tests use exists,
# so a crash or an error here is a broken binary, never a reason to skip.
require_alice_command() {
  local cmd=$1 out
  [ -x "${ALICE:-}" ] || { echo "FAIL: ALICE='${ALICE:-}' is not an executable (run via tests/run.sh)"; exit 1; }
  if ! out=$("$ALICE" "$cmd" --help 2>&1); then
    echo "FAIL: alice $cmd --help failed ($(head -n1 <<<"$out" | cut -c1-80))"
    exit 1
  fi
}

# Python with numpy and h5py (Debian's), as tests/run.sh exports it.
PYTHON=${PYTHON:-/usr/bin/python3}

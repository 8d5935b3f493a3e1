#!/usr/bin/env bash
# Every MPI call is checked by CHECK_MPI, which names the call and its file and line and runs
# the error cleanups; with MPI's default error handler (errors are fatal inside the call) it
# never got control. tests/tools/mpi_error_check makes one call fail (a negative count) after
# alice_mpi_init: the message must be alice's, on 1 rank and on 2.
set -uo pipefail
BUILD=${BUILD:-build}
TOOL=$BUILD/tools/mpi_error_check
[ -x "$TOOL" ] || { echo "skip: $TOOL is not built (make tests-build)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
for n in 1 2; do
  rc=0
  mpirun --oversubscribe -np "$n" "$TOOL" > "$T/out.txt" 2>&1 || rc=$?
  [ "$rc" != 0 ] || { cat "$T/out.txt"; echo "FAIL: $n rank(s): the failing call went unnoticed"; exit 1; }
  grep -q "alice: error: tests/tools/mpi_error_check.c:[0-9]*: MPI call failed (.*): MPI_Allreduce" \
    "$T/out.txt" || { cat "$T/out.txt"; echo "FAIL: $n rank(s): no CHECK_MPI message"; exit 1; }
  echo "ok: $n rank(s): $(grep -m1 'alice: error' "$T/out.txt" | cut -c1-120)"
done

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
# Ranks that read different configurations (here steps, through MPMD launch lines; in a job, a
# job file on node-local storage or one edited while the job started) are refused at the
# start, naming the key: another steps had hung in a collective, another lr trained apart in
# silence. Another threads (per rank by design) is allowed.
ALICE=${ALICE:-bin/alice}
MICRO=$(dirname "$0")/../train/micro.cfg
if [ -x "$ALICE" ]; then
  rc=0
  timeout 120 mpirun --oversubscribe -np 1 "$ALICE" pretrain --config "$MICRO" \
    run_dir="$T/mm" steps=3 : -np 1 "$ALICE" pretrain --config "$MICRO" run_dir="$T/mm" steps=4 \
    > "$T/mm.log" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "rank 1's configuration differs from rank 0's: 'steps = 4' here, \
'steps = 3' on rank 0" "$T/mm.log" ||
    { cat "$T/mm.log"; echo "FAIL: ranks of different steps (exit $rc)"; exit 1; }
  timeout 120 mpirun --oversubscribe -np 1 "$ALICE" pretrain --config "$MICRO" \
    run_dir="$T/th" steps=1 threads=1 : -np 1 "$ALICE" pretrain --config "$MICRO" \
    run_dir="$T/th" steps=1 threads=2 > "$T/th.log" 2>&1 ||
    { cat "$T/th.log"; echo "FAIL: ranks of different threads refused"; exit 1; }
  echo "ok: ranks of different configurations refused naming the key; threads may differ"
else
  echo "$ALICE not built: the ranks' configuration check not run here"
fi

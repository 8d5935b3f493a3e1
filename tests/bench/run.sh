#!/usr/bin/env bash
# Runs every benchmark: C benchmarks ($BUILD/tests/bench_*) and scripts tests/bench/bench_*.sh|py.
# Each prints its figures as ratios against a reference measured in the same run.
# BENCH=<pattern> selects benchmarks by name.
set -u
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
PYTHON=${PYTHON:-/usr/bin/python3}
# BUILD and BIN may be absolute (make test BUILD=/scratch/build) or relative to the root.
case $BIN in /*) ALICE=$BIN/alice ;; *) ALICE=$PWD/$BIN/alice ;; esac
export BUILD BIN PYTHON ALICE OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
pattern=${BENCH:-}
status=0
for b in "$BUILD"/tests/bench_* tests/bench/bench_*.sh tests/bench/bench_*.py; do
  [ -e "$b" ] || continue
  name=$(basename "$b"); name=${name%.*}
  [ -n "$pattern" ] && [[ "$name" != *$pattern* ]] && continue
  echo "== $name"
  case $b in
    *.sh) bash "$b" ;;
    *.py) "$PYTHON" "$b" ;;
    *) "$b" ;;
  esac || { echo "benchmark $name failed"; status=1; }
done
exit $status

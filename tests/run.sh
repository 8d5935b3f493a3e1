#!/usr/bin/env bash
# Runs every test: C test binaries ($BUILD/tests/test_*), then script tests
# (tests/*/test_*.sh and tests/*/test_*.py). Exit status 0 passes, 77 skips, anything else
# fails. The last line is "N passed, N failed, N skipped".
# TESTS=<pattern> runs only the tests whose name contains the pattern; a pattern ending in $
# names one test exactly (TESTS='test_finetune$' runs test_finetune, not test_finetune_resume).
set -u
BUILD=${BUILD:-build}
BIN=${BIN:-bin}
PYTHON=${PYTHON:-/usr/bin/python3}
# BUILD and BIN may be absolute (make test BUILD=/scratch/build) or relative to the root.
case $BIN in /*) ALICE=$BIN/alice ;; *) ALICE=$PWD/$BIN/alice ;; esac
export BUILD BIN PYTHON ALICE OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Tests run 2-rank jobs on 2 cores: spinning OpenMP workers then starve the other rank
# (a 0.07 s step took 3.5-5 s at load 10-15). Passive waiting changes no result.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
pattern=${TESTS:-}
logdir=${TEST_LOGS:-$BUILD/test-logs}
mkdir -p "$logdir"
pass=0; fail=0; skip=0; failed=()

run_one() {
  local name=$1; shift
  case $pattern in
    '') ;;
    *\$) [[ "$name" == "${pattern%\$}" ]] || return ;;
    *) [[ "$name" == *$pattern* ]] || return ;;
  esac
  local log="$logdir/$name.log" t0=$SECONDS rc
  timeout "${TEST_TIMEOUT:-900}" "$@" >"$log" 2>&1; rc=$?
  local dt=$((SECONDS - t0))
  case $rc in
    0) pass=$((pass + 1)); printf 'PASS %-40s %4ds\n' "$name" "$dt" ;;
    77) skip=$((skip + 1)); printf 'SKIP %-40s %4ds  %s\n' "$name" "$dt" "$(grep -m1 -i 'skip' "$log" | cut -c1-100)" ;;
    *) fail=$((fail + 1)); failed+=("$name"); printf 'FAIL %-40s %4ds  (exit %d, log %s)\n' "$name" "$dt" "$rc" "$log"
       tail -n 25 "$log" | sed 's/^/    | /' ;;
  esac
}

# Every C test the sources define: one missing from the build fails (not built, or the build
# stopped) instead of silently leaving the run shorter.
for src in tests/unit/test_*.c; do
  name=$(basename "$src" .c)
  if [ -x "$BUILD/tests/$name" ]; then
    run_one "$name" "$BUILD/tests/$name"
  else
    run_one "$name" sh -c "echo '$BUILD/tests/$name is not built (make tests-build)'; exit 1"
  fi
done
for t in $(ls tests/*/test_*.sh tests/*/test_*.py 2>/dev/null | sort); do
  case $t in
    *.sh) run_one "$(basename "$t" .sh)" bash "$t" ;;
    *.py) run_one "$(basename "$t" .py)" "$PYTHON" "$t" ;;
  esac
done
[ $fail -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]

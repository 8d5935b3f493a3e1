#!/usr/bin/env bash
# scripts/kernel_profile.sh and the CUPTI injection library, where no GPU is needed:
#   1. a missing library: exit 2 and one line saying how to build it;
#   2. with a stand-in library: the command runs with CUDA_INJECTION64_PATH and
#      ALICE_KERNEL_PROFILE_OUT set to absolute paths, its exit status comes back, a stale
#      summary is removed first, and a run that writes none is reported;
#   3. when $BUILD/lib/libalice_kernel_profile.so was built (make USE_CUDA=1 tests-build with
#      CUPTI): it exports InitializeInjection, and loading it the driver's way returns 1 and
#      lets the program exit 0 -- without a GPU CUPTI cannot record, which must be one clear
#      line, not a crash. (The summary itself: tests/unit/test_kernel_summary.c; on a GPU:
#      the "kernel profile alice bf16" row of tests/gpu/run.sh.)
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
fails=0
check() {  # check DESCRIPTION command...
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi
}

# ---- 1. no library ----
BUILD="$W/nobuild" bash scripts/kernel_profile.sh "$W/p.txt" true > "$W/missing.log" 2>&1
check "missing library: exit 2" test $? = 2
check "missing library: says how to build it" grep -q "libalice_kernel_profile.so not found: build it with 'make USE_CUDA=1 BUILD=$W/nobuild kernel-profile'" "$W/missing.log"

# ---- 2. a stand-in library ----
mkdir -p "$W/fake/lib" && : > "$W/fake/lib/libalice_kernel_profile.so"
echo stale > "$W/out.txt"
(cd "$W" && BUILD="$W/fake" bash "$OLDPWD/scripts/kernel_profile.sh" out.txt \
   sh -c 'echo "inj=$CUDA_INJECTION64_PATH out=$ALICE_KERNEL_PROFILE_OUT"; exit 3') > "$W/run.log" 2>&1
check "the command's exit status comes back" test $? = 3
check "CUDA_INJECTION64_PATH is the absolute library path" grep -q "^inj=$W/fake/lib/libalice_kernel_profile.so " "$W/run.log"
check "ALICE_KERNEL_PROFILE_OUT is absolute (relative OUT taken from the caller's folder)" grep -q " out=$W/out.txt$" "$W/run.log"
check "a stale summary is removed first" test ! -e "$W/out.txt"
check "no summary written: reported" grep -q "kernel_profile.sh: no summary written to $W/out.txt" "$W/run.log"
KERNEL_PROFILE_SO="$W/fake/lib/libalice_kernel_profile.so" bash scripts/kernel_profile.sh "$W/o2.txt" \
  sh -c 'printf "kernel_profile kernels=1\n" > "$ALICE_KERNEL_PROFILE_OUT"' > "$W/run2.log" 2>&1
check "KERNEL_PROFILE_SO overrides BUILD; exit 0" test $? = 0
check "a written summary is not reported missing" bash -c "! grep -q 'no summary' '$W/run2.log'"

# ---- 3. the real library, when built ----
SO=$BUILD/lib/libalice_kernel_profile.so
if [ -f "$SO" ]; then
  check "the library exports InitializeInjection" bash -c "nm -D --defined-only '$SO' | grep -qw InitializeInjection"
  check "the library names libcupti" bash -c "readelf -d '$SO' | grep -q 'NEEDED.*libcupti'"
  if [ -x "$BUILD/tools/injection_load" ]; then
    ALICE_KERNEL_PROFILE_OUT="$W/real.txt" "$BUILD/tools/injection_load" "$SO" > "$W/load.log" 2>&1
    rc=$?
    check "loaded the driver's way: the program exits 0" test $rc = 0
    check "InitializeInjection returns 1" grep -q '^InitializeInjection returned 1$' "$W/load.log"
    # Without a GPU CUPTI refuses to record (here: cuptiActivityEnable fails): one line saying
    # the program runs unprofiled. Where it can record, an (empty) summary comes at exit.
    check "one clear line: unprofiled, or recording with a summary at exit" bash -c \
      "grep -q '^alice kernel profile: .*the program runs unprofiled' '$W/load.log' ||
       { grep -q '^alice kernel profile: recording' '$W/load.log' && grep -q '^kernel_profile kernels=' '$W/load.log'; }"
    ALICE_KERNEL_PROFILE_SKIP=bogus "$BUILD/tools/injection_load" "$SO" > "$W/bad.log" 2>&1
    check "a bad ALICE_KERNEL_PROFILE_SKIP is reported, not fatal" \
      bash -c "grep -q 'ALICE_KERNEL_PROFILE_SKIP=bogus is not understood' '$W/bad.log' && grep -q 'returned 1' '$W/bad.log'"
  else
    echo "note: $BUILD/tools/injection_load not built: the library was not loaded"
  fi
else
  echo "note: $SO not built (USE_CUDA=1 with CUPTI builds it): its exports were not checked"
fi

if [ $fails -gt 0 ]; then
  for f in "$W"/*.log; do echo "--- $f"; cat "$f"; done
  exit 1
fi
echo "all checks passed"

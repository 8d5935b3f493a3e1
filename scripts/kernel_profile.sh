#!/usr/bin/env bash
# Kernel-level profile of one command on the GPU (where does the step time go?), with CUPTI
# and without nsys:
#   scripts/kernel_profile.sh OUT.txt CMD ARGS...
# runs CMD with the injection library $BUILD/lib/libalice_kernel_profile.so (make
# USE_CUDA=1 kernel-profile) loaded by the CUDA driver, which at the command's exit prints the
# summary to stderr and writes it to OUT.txt: kernels, GPU kernel time, busy time (union of
# kernel/memcpy/memset intervals), span and busy %, memcpys by kind, and the kernels by total
# time (calls, ms, mean us, %, cumulative %), the top 40 and an "other" row.
#
# Environment:
#   BUILD                      build folder holding lib/libalice_kernel_profile.so (default build)
#   KERNEL_PROFILE_SO          the library itself (overrides BUILD)
#   ALICE_KERNEL_PROFILE_SKIP  N: leave out the first N kernel launches (warm-up); last:R: keep
#                              only the last R repeats of the launch sequence (e.g. last:5 for
#                              the 5 timed steps of `alice pretrain ... --bench-steps 5`)
# Exit status: the command's. The command's own stdout/stderr pass through.
set -u
if [ $# -lt 2 ]; then
  echo "usage: scripts/kernel_profile.sh OUT.txt CMD ARGS..." >&2
  exit 2
fi
out=$1; shift
case $out in /*) ;; *) out=$PWD/$out ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
so=${KERNEL_PROFILE_SO:-${BUILD:-build}/lib/libalice_kernel_profile.so}
case $so in /*) ;; *) so=$repo/$so ;; esac
if [ ! -f "$so" ]; then
  echo "kernel_profile.sh: $so not found: build it with" \
       "'make USE_CUDA=1 BUILD=${BUILD:-build} kernel-profile' (needs CUPTI: CUPTI_HOME=<dir with include/cupti.h>)" >&2
  exit 2
fi
if ! mkdir -p "$(dirname "$out")"; then
  echo "kernel_profile.sh: cannot create the folder of $out" >&2
  exit 2
fi
rm -f "$out"   # a stale summary must not pass for this run's
CUDA_INJECTION64_PATH=$so ALICE_KERNEL_PROFILE_OUT=$out "$@"
rc=$?
[ -s "$out" ] || echo "kernel_profile.sh: no summary written to $out (the command did not reach a normal" \
                      "exit, never initialised CUDA, or CUPTI failed: see the 'alice kernel profile' lines above)" >&2
exit $rc

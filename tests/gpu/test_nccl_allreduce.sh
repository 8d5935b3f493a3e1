#!/usr/bin/env bash
# GPU all-reduce (NCCL, or the MPI fallback when ranks share a GPU) over 2 ranks against
# values computed by the tool itself. Skips (77) without a GPU.
set -u
BUILD=${BUILD:-build}
tool="$BUILD/tools/nccl_allreduce_check"
[ -x "$tool" ] || { echo "skip: $tool not built (make tests-build)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun -np 2 --oversubscribe "$tool"

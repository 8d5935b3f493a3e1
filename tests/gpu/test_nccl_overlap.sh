#!/usr/bin/env bash
# The overlapped GPU all-reduce (nccl_allreduce_mean_async on a communication stream, then
# nccl_allreduce_wait) against values computed by the tool itself: one rank (a 1-rank NCCL
# communicator, so the asynchronous path runs on a one-GPU machine) and two ranks (NCCL with
# two GPUs, the synchronous MPI-staged transport when they share one). Skips (77) without a GPU.
set -u
BUILD=${BUILD:-build}
tool="$BUILD/tools/nccl_overlap_check"
[ -x "$tool" ] || { echo "skip: $tool not built (make tests-build)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
status=0
for np in 1 2; do
  mpirun -np "$np" --oversubscribe "$tool"
  rc=$?
  [ $rc -eq 77 ] && exit 77
  [ $rc -ne 0 ] && status=1
done
exit $status

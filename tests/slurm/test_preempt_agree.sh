#!/usr/bin/env bash
# Two ranks, only the last one signalled (SIGUSR1): both must agree to stop at the same step
# (preempt_agreed is an MPI_Allreduce MAX). Runs the unit test binary (tests/unit/test_preempt_flag.c) under mpirun -np 2.
set -euo pipefail
BUILD=${BUILD:-build}
bin=$BUILD/tests/test_preempt_flag
[ -x "$bin" ] || { echo "test_preempt_agree: $bin not built (make tests-build)"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
timeout 60 mpirun -np 2 --oversubscribe "$bin"

#!/usr/bin/env bash
# The CUDA backend's watched host waits with a live NCCL communicator (one rank, so one GPU is
# enough): a stalled compute stream is waited out when it resumes within nccl_timeout_s
# (slow), and ends the job with the timeout error, naming the rank, the key and the aborted
# communicator, well before the stall would have ended (hang); and the communicator's set-up,
# which a rank that never joins would block forever, ends the job after nccl_timeout_s (setup).
# Skips (77) without a GPU.
# The decisions themselves (polling, backoff, async error, timeout) are unit-tested on the CPU
# by tests/unit/test_watched_wait.c; this checks the CUDA/NCCL plumbing around them.
set -u
BUILD=${BUILD:-build}
tool="$BUILD/tools/nccl_watchdog_check"
[ -x "$tool" ] || { echo "skip: $tool not built (make tests-build)"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT

mpirun -np 1 "$tool" slow 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 77 ] && exit 77
if [ "$rc" -ne 0 ] || ! grep -q '^ok: watched wait' "$log"; then
  echo "FAIL: slow: a 0.5 s stall under nccl_timeout_s = 20 must be waited out (exit $rc)"
  exit 1
fi

start_ns=$(date +%s%N)
timeout 60 mpirun -np 1 "$tool" hang >"$log" 2>&1
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
cat "$log"
status=0
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
  echo "FAIL: hang: exit status $rc, expected the timeout error (124: the wait hung)"; status=1
fi
for want in 'rank 0: the GPU work this rank waited for did not finish' \
            'nccl_timeout_s = 1)' 'NCCL communicator was aborted' 'last checkpoint'; do
  grep -qF "$want" "$log" || { echo "FAIL: hang: the error lacks \"$want\""; status=1; }
done
# The wait must give up before the 8 s stall ended (the stall's own line, if the process lived
# that long, follows): its warning, printed just before ncclCommAbort, comes first. (The abort
# cannot stop the test's host-function stall the way it stops NCCL's kernels, so the error
# itself may follow the stall's end if the abort waits for the device.)
err_line=$(grep -n 'giving up on the GPU wait' "$log" | head -1 | cut -d: -f1)
[ -n "$err_line" ] || { echo "FAIL: hang: no 'giving up on the GPU wait' warning"; status=1; }
end_line=$(grep -n 'gpu_fault: stall of 8 s ended' "$log" | head -1 | cut -d: -f1)
if [ -n "$err_line" ] && [ -n "$end_line" ] && [ "$end_line" -lt "$err_line" ]; then
  echo "FAIL: hang: the wait returned only after the stall ended"; status=1
fi
[ "$status" -eq 0 ] && echo "ok: hang: timeout error, process gone after ${elapsed_ms} ms (stall 8 s, nccl_timeout_s 1)"

# The communicator's set-up: 2 ranks of which only this process joins, so NCCL's bootstrap
# waits for a peer that never comes (as for a rank that died after the id's broadcast, or a
# wrong NCCL_SOCKET_IFNAME); under nccl_timeout_s = 2 the job must end with the set-up error.
setup_status=0
start_ns=$(date +%s%N)
timeout 60 mpirun -np 1 "$tool" setup >"$log" 2>&1
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
cat "$log"
# status 1: the fatal error's own (a crash after the message would give another)
if [ "$rc" -ne 1 ]; then
  echo "FAIL: setup: exit status $rc, expected 1, the set-up timeout error's (124: the set-up hung)"
  setup_status=1
fi
for want in 'rank 0: the NCCL communicator over 2 ranks was not set up within 2 s' \
            'nccl_timeout_s = 2)' 'NCCL_SOCKET_IFNAME' 'resubmit'; do
  grep -qF "$want" "$log" || { echo "FAIL: setup: the error lacks \"$want\""; setup_status=1; }
done
# 2 s of limit plus MPI and CUDA start-up and the abort; 30 s would mean the limit did not act
if [ "$elapsed_ms" -ge 30000 ]; then
  echo "FAIL: setup: the process ended only after ${elapsed_ms} ms"; setup_status=1
fi
[ "$setup_status" -eq 0 ] && echo "ok: setup: set-up timeout error, process gone after ${elapsed_ms} ms (nccl_timeout_s 2)"
[ "$setup_status" -eq 0 ] || status=1
exit $status

#!/usr/bin/env bash
# `device = cuda` where it cannot run (no GPU visible, or a build without CUDA) must be a clear
# user error (exit 2, naming the problem and the fix: device = cpu), not a crash or a silent
# CPU run. Skipped where a GPU is visible (then device = cuda is valid).
set -u
ALICE=${ALICE:-bin/alice}
if nvidia-smi -L >/dev/null 2>&1; then echo "skip: a GPU is visible here"; exit 77; fi
[ -x "$ALICE" ] || { echo "skip: $ALICE not built"; exit 77; }
out=$(timeout 60 "$ALICE" pretrain --config jobs/pretrain_tiny.cfg device=cuda --bench-steps 1 2>&1)
rc=$?
msg=$(echo "$out" | grep 'alice: error:')
echo "exit $rc: $msg"
[ $rc -eq 2 ] || { echo "FAIL: expected exit status 2"; exit 1; }
echo "$msg" | grep -q 'device = cuda' || { echo "FAIL: message does not name device = cuda"; exit 1; }
echo "$msg" | grep -q 'device = cpu' || { echo "FAIL: message does not name the fix"; exit 1; }
echo ok

#!/usr/bin/env bash
# `device = cuda` where it cannot run (no GPU visible, or a build without CUDA) must be a clear
# user error (exit 2, naming the problem and the fix: device = cpu), not a crash or a silent
# CPU run -- for every command that runs the model: pretrain, finetune and infer (the latter
# with a checkpoint whose stored configuration says device = cpu, overridden on the command
# line). Any GPU is hidden (CUDA_VISIBLE_DEVICES=""), so on a GPU machine with a CUDA build
# this checks the "no CUDA device is visible" path, elsewhere whichever path the build has.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE not built"; exit 77; }
export CUDA_VISIBLE_DEVICES=""
T=$(mktemp -d /tmp/alice_cuda_unavailable.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0

# expect_device_error WHAT cmd...: exit status 2 and an error line naming device = cuda and
# the fix (device = cpu).
expect_device_error() {
  local what=$1 out rc msg; shift
  out=$(timeout 60 "$@" 2>&1)
  rc=$?
  msg=$(echo "$out" | grep 'alice: error:')
  echo "$what: exit $rc: $msg"
  if [ $rc -ne 2 ]; then echo "FAIL: $what: expected exit status 2"; echo "$out" | tail -5; fails=$((fails + 1)); return; fi
  echo "$msg" | grep -q 'device = cuda' || { echo "FAIL: $what: message does not name device = cuda"; fails=$((fails + 1)); }
  echo "$msg" | grep -q 'device = cpu' || { echo "FAIL: $what: message does not name the fix"; fails=$((fails + 1)); }
}

expect_device_error pretrain "$ALICE" pretrain --config "$ROOT/jobs/pretrain_tiny.cfg" device=cuda \
  --bench-steps 1
expect_device_error finetune "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" device=cuda \
  run_dir="$T/ft" steps=1

# infer reads its configuration from the checkpoint: a one-step cpu pre-training of the micro
# model gives one (infer stops at the device before it reads the model or the data), marked as
# a fine-tuning checkpoint, the kind infer accepts.
if ! "$ALICE" pretrain --config "$ROOT/tests/train/micro.cfg" run_dir="$T/pt" steps=1 ckpt_every=1 \
     > "$T/pt.log" 2>&1 || [ ! -f "$T/pt/ckpt_1.h5" ]; then
  tail -5 "$T/pt.log"; echo "FAIL: the cpu pre-training that makes a checkpoint for infer failed"; exit 1
fi
PYTHON=${PYTHON:-/usr/bin/python3}
"$PYTHON" -c "import h5py, sys; h5py.File(sys.argv[1], 'a').attrs['kind'] = b'finetune'" \
  "$T/pt/ckpt_1.h5" || { echo "FAIL: could not mark the checkpoint (h5py)"; exit 1; }
expect_device_error infer "$ALICE" infer --checkpoint "$T/pt/ckpt_1.h5" --data "$T/none.h5" \
  --out "$T/pred" device=cuda

[ $fails -eq 0 ] || exit 1
echo ok

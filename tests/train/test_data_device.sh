#!/usr/bin/env bash
# data_device (crops on the host or on the GPU) and label checks of the loader: bad settings
# end with a clear error (exit 2) naming the problem and the fix, before any step is computed.
#  - data_device = gpu with device = cpu: GPU crops need the CUDA backend;
#  - fine-tuning labels beyond num_classes: caught when the case is read (whatever the device),
#    because GPU crops never pass through host memory where a per-voxel check could look; also
#    when read by 4 read-ahead threads at once, two of which may fail together (the error ends
#    the process from a non-main thread: one message, status 2, every time).
source "$(dirname "$0")/lib.sh"
FT="$ROOT/jobs/finetune_tiny.cfg"
SMALL="embed_dim=24 depth=4 heads=2 mlp_dim=48 feature_size=2 steps=2 val_every=100 prefetch=0 threads=1"
expect_error() {  # command, expected-message-regex, args...
  local cmd=$1 want=$2; shift 2
  set +e; timeout 120 "$ALICE" "$cmd" "$@" > "$WORK/out.log" 2>&1; local rc=$?; set -e
  [ $rc -eq 2 ] || { cat "$WORK/out.log"; fail "expected exit status 2, got $rc for: $cmd $*"; }
  grep -Eq "$want" "$WORK/out.log" || { cat "$WORK/out.log"; fail "message '$want' missing for: $cmd $*"; }
  grep -Eq "^ *step |\| *[0-9]+ *\|" "$WORK/out.log" && { cat "$WORK/out.log"; fail "compute started for: $cmd $*"; } || true
  echo "ok: $cmd $* -> $(grep -m1 'error' "$WORK/out.log")"
}
expect_error pretrain "data_device = gpu makes crops with a CUDA kernel, but device = cpu: set device = cuda.*or data_device = cpu" \
  --config "$MICRO" run_dir="$WORK/a" data_device=gpu
expect_error finetune "data_device = gpu makes crops with a CUDA kernel, but device = cpu: set device = cuda.*or data_device = cpu" \
  --config "$FT" run_dir="$WORK/b" data_device=gpu $SMALL
expect_error pretrain "data_device = 'tpu' is not valid" --config "$MICRO" run_dir="$WORK/c" data_device=tpu
# Phantoms carry 13 organs: with num_classes = 3 their labels reach past 0..2.
expect_error finetune "case '.*': label 1[0-3] is outside 0..2; set num_classes" \
  --config "$FT" run_dir="$WORK/d" num_classes=3 $SMALL
for i in 1 2 3; do
  expect_error finetune "case '.*': label 1[0-3] is outside 0..2; set num_classes" \
    --config "$FT" run_dir="$WORK/e$i" num_classes=3 $SMALL prefetch=4 cache_mb=0
  n=$(grep -c "alice: error" "$WORK/out.log")
  [ "$n" = 1 ] || { cat "$WORK/out.log"; fail "$n error messages from one failing run, not 1"; }
done
echo "ok: data_device and label checks"

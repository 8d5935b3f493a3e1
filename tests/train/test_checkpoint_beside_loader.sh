#!/usr/bin/env bash
# Checkpoints written while the loader's read-ahead threads read the data set: the HDF5 build is
# not thread-safe, so both go through one process-wide lock (io/h5util.h h5_lock). Before it,
# this run (a checkpoint every step, no volume cache so every batch is read from the file, 4
# batches read ahead) crashed in HDF5 within a few steps (segmentation fault or abort, leaving
# a ckpt_<step>.h5.tmp) three times out of three. Asserted: the run completes, leaves no .tmp,
# its last checkpoint opens, and keep_ckpts = 2 leaves exactly the two newest ckpt_<step>.h5.
source "$(dirname "$0")/lib.sh"
"$ALICE" phantom --out "$WORK/ph" --cases 4 --size small --seed 2 > /dev/null
"$ALICE" pack --input "$WORK/ph" --out "$WORK/ds.h5" > /dev/null
"$ALICE" pretrain --config "$MICRO" data="$WORK/ds.h5" steps=30 ckpt_every=1 keep_ckpts=2 \
    cache_mb=0 prefetch=4 run_dir="$WORK/run" > "$WORK/run.log" 2>&1 ||
    { tail -5 "$WORK/run.log"; fail "pre-training with a checkpoint every step beside the loader"; }
left=$(cd "$WORK/run" && ls)
echo "$left" | grep -q '\.tmp' && fail "a .tmp file was left: $left"
ckpts=$(cd "$WORK/run" && ls ckpt_*.h5 | sort -V | tr '\n' ' ')
[ "$ckpts" = "ckpt_29.h5 ckpt_30.h5 " ] || fail "keep_ckpts = 2 left: $ckpts"
"$ALICE" info "$WORK/run/ckpt_30.h5" | grep -q "step" || fail "ckpt_30.h5 does not read back"
echo "ok: 30 checkpoints written beside the loader's reads; ckpt_29.h5 and ckpt_30.h5 kept"

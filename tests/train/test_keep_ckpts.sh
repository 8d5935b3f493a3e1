#!/usr/bin/env bash
# keep_ckpts keeps the newest N PERIODIC checkpoints (docs/CONFIG.md, FORMAT.md): one written
# off schedule (a stop, a preemption, the end of a run) is kept while it is the newest, to
# resume from, and removed once a newer checkpoint is written. It had been counted among the N:
# a requeued run's stop checkpoints pushed its periodic history out (keep_ckpts = 2: after two
# stops no periodic checkpoint was left). Micro pre-training, ckpt_every = 3, keep_ckpts = 2,
# stopped and resumed (--stop-after is the same save as a preemption's, train_step_boundary):
#  - stop at 7: ckpt_3, ckpt_6 (periodic) and ckpt_7 (attribute periodic = 0);
#  - resume, stop at 8: ckpt_7 superseded, removed; ckpt_3, ckpt_6, ckpt_8;
#  - resume, steps 9 (periodic) and 10 (stop): ckpt_6, ckpt_9, ckpt_10;
#  - resume with ckpt_every = 4 to the end (12, periodic): ckpt_9 stays, periodic by the cadence
#    it was written under, ckpt_10 goes;
#  - a checkpoint without the attribute (an older alice's) counts as periodic, one marked 0
#    does not: ckpt_12's attribute removed, ckpt_9's set to 0, run to 14 (off schedule):
#    ckpt_12 and ckpt_14 left.
source "$(dirname "$0")/lib.sh"
R=$WORK/run
left() { (cd "$R" && ls ckpt_*.h5 | sort -V | tr '\n' ' '); }
run() {  # expected checkpoints after it, then the run's arguments
  local want=$1; shift
  "$ALICE" pretrain --config "$MICRO" run_dir="$R" keep_ckpts=2 "$@" > "$WORK/run.log" 2>&1 ||
    { tail -5 "$WORK/run.log"; fail "pretrain $*"; }
  [ "$(left)" = "$want" ] || fail "after pretrain $*: left $(left), expected $want"
  echo "ok: pretrain $*: $want"
}
attr() {  # file, expected value of its periodic attribute
  "$PYTHON" -c 'import sys, h5py; print(h5py.File(sys.argv[1], "r").attrs["periodic"])' "$R/$1" |
    grep -qx "$2" || fail "$1: periodic attribute not $2"
}
run "ckpt_3.h5 ckpt_6.h5 ckpt_7.h5 " steps=12 ckpt_every=3 --stop-after 7
attr ckpt_6.h5 1
attr ckpt_7.h5 0
run "ckpt_3.h5 ckpt_6.h5 ckpt_8.h5 " steps=12 ckpt_every=3 --stop-after 1
run "ckpt_6.h5 ckpt_9.h5 ckpt_10.h5 " steps=12 ckpt_every=3 --stop-after 2
run "ckpt_9.h5 ckpt_12.h5 " steps=12 ckpt_every=4
"$PYTHON" - "$R" <<'PY' || fail "editing the periodic attributes"
import sys, h5py
with h5py.File(sys.argv[1] + "/ckpt_12.h5", "r+") as f:
    del f.attrs["periodic"]
with h5py.File(sys.argv[1] + "/ckpt_9.h5", "r+") as f:
    f.attrs["periodic"] = 0
PY
run "ckpt_12.h5 ckpt_14.h5 " steps=14 ckpt_every=4
# a newer checkpoint than the run writes, damaged and impossible to set aside (a folder holds
# its .damaged name): the resume goes on from ckpt_3.h5, and pruning leaves that newer file
# out of the count, so the run's own ckpt_3.h5 stays beside ckpt_6.h5
rm -rf "$R"
run "ckpt_3.h5 " steps=12 ckpt_every=3 --stop-after 3
head -c 3000 /dev/urandom > "$R/ckpt_9.h5"
mkdir -p "$R/ckpt_9.h5.damaged/x"
run "ckpt_3.h5 ckpt_6.h5 ckpt_9.h5 " steps=12 ckpt_every=3 --stop-after 3
grep -q "cannot set .*ckpt_9.h5 aside" "$WORK/run.log" || fail "no warning about ckpt_9.h5"
echo "ok: keep_ckpts keeps the periodic checkpoints, and an off-schedule one until superseded"

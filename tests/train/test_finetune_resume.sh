#!/usr/bin/env bash
# A fine-tuning run preempted and resumed (no flag), and one split into chunks with
# --stop-after, reproduce the uninterrupted run exactly:
# the same losses in metrics.csv (bit for bit as printed, %.9g), the same validations in
# val.csv and the same final checkpoint (every tensor, AdamW moments included) and best
# checkpoint (val.csv exact), and a ckpt_best.h5 of discarded steps is set aside on resume.
# The preemption is deterministic: alice starts with SIGUSR1 blocked and pending
# (as test_finetune_preempt.sh), so the first run checkpoints after step 1 and exits 3.
# test_pretrain_resume.sh checks the same for pre-training.
source "$(dirname "$0")/lib.sh"
cfg=$ROOT/jobs/finetune_tiny.cfg
args=(steps=5 warmup=1 val_every=2 ckpt_every=100 log_every=1 threads=1)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/full" "${args[@]}" > "$WORK/full.log" 2>&1 ||
  { tail "$WORK/full.log"; fail "the uninterrupted run failed"; }
rc=0
alice_signalled finetune --config "$cfg" run_dir="$WORK/split" "${args[@]}" > "$WORK/a.log" 2>&1 ||
  rc=$?
[ "$rc" = 3 ] || { tail "$WORK/a.log"; fail "the preempted run exited with $rc, expected 3"; }
[ -f "$WORK/split/ckpt_1.h5" ] || fail "the preempted run left no ckpt_1.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/split" "${args[@]}" > "$WORK/b.log" 2>&1 ||
  { tail "$WORK/b.log"; fail "the resumed run failed"; }
grep -q "resumed from .*ckpt_1.h5 at step 1" "$WORK/b.log" ||
  fail "the second run did not resume at step 1"
# --stop-after 3 (a chunk ending after step 3's validation-free boundary), then the rest
"$ALICE" finetune --config "$cfg" run_dir="$WORK/chunk" "${args[@]}" --stop-after 3 \
  > "$WORK/c1.log" 2>&1 ||
  { tail "$WORK/c1.log"; fail "the first chunk failed"; }
grep -q "stopped after 3 steps of this run (--stop-after); the next run resumes at step 3" \
  "$WORK/c1.log" || { tail "$WORK/c1.log"; fail "the first chunk did not stop after 3 steps"; }
[ -f "$WORK/chunk/ckpt_3.h5" ] || fail "the first chunk left no ckpt_3.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/chunk" "${args[@]}" --stop-after 3 \
  > "$WORK/c2.log" 2>&1 ||
  { tail "$WORK/c2.log"; fail "the second chunk failed"; }
grep -q "fine-tuning done" "$WORK/c2.log" || fail "the second chunk did not finish the run"
# Losses: the columns before the timings.
for f in full split chunk; do cut -d, -f1-6 "$WORK/$f/metrics.csv" > "$WORK/$f.csv"; done
for f in split chunk; do
  diff "$WORK/full.csv" "$WORK/$f.csv" || fail "$f: losses differ from the uninterrupted run"
  diff "$WORK/full/val.csv" "$WORK/$f/val.csv" || fail "$f: validations differ"
done
"$PYTHON" - "$WORK/full" "$WORK/split" "$WORK/chunk" <<'PY' || fail "the checkpoints differ"
import sys, h5py, numpy as np
for name, other in [(n, o) for n in ("ckpt_5.h5", "ckpt_best.h5") for o in sys.argv[2:]]:
    a, b = h5py.File(f"{sys.argv[1]}/{name}", "r"), h5py.File(f"{other}/{name}", "r")
    names = []
    a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
    assert len(names) > 50 and any(n.startswith("adam_v/") for n in names), names[:5]
    assert int(a.attrs["step"]) == int(b.attrs["step"]), (name, a.attrs["step"], b.attrs["step"])
    for n in names:
        assert np.array_equal(a[n][()], b[n][()]), f"{name}: {n} differs after resume"
    print(f"{other}/{name}: step {int(a.attrs['step'])}, {len(names)} tensors identical")
PY
# val.csv holds every digit of each Dice: a resumed run's best (read back from it) is the
# uninterrupted run's double, so both decide "new best" alike; ckpt_best.h5's metric (the
# double itself) reads back from its row exactly
"$PYTHON" - "$WORK/full" <<'PY' || fail "val.csv does not hold ckpt_best.h5's Dice exactly"
import sys, h5py
rows = dict(l.strip().split(",") for l in open(f"{sys.argv[1]}/val.csv").readlines()[1:])
with h5py.File(f"{sys.argv[1]}/ckpt_best.h5", "r") as f:
    step, metric = int(f.attrs["step"]), float(f.attrs["metric"])
assert float(rows[str(step)]) == metric, (rows, step, metric)
print(f"ckpt_best.h5: step {step}, Dice {metric!r} = its val.csv row")
PY
# A ckpt_best.h5 written by steps a resume discards (the job killed between checkpoints: here
# ckpt_8.h5 removed, so the run resumes from ckpt_4.h5 while ckpt_best.h5 is of step 6 or 8)
# is set aside, not kept as the run's best: the final ckpt_best.h5 is the best validation of
# the resumed steps, its Dice that of a kept val.csv row.
dargs=(steps=10 warmup=1 val_every=2 ckpt_every=4 keep_ckpts=0 log_every=5 threads=1)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/disc" "${dargs[@]}" --stop-after 8 \
  > "$WORK/d1.log" 2>&1 || { tail "$WORK/d1.log"; fail "the discarded-best run failed"; }
rm "$WORK/disc/ckpt_8.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/disc" "${dargs[@]}" lr=0 min_lr=0 \
  > "$WORK/d2.log" 2>&1 || { tail "$WORK/d2.log"; fail "the resumed discarded-best run failed"; }
"$PYTHON" - "$WORK/disc" "$WORK/d2.log" <<'PY' || fail "the discarded segment's ckpt_best.h5"
import glob, os, sys, h5py
run, log = sys.argv[1], open(sys.argv[2]).read()
aside = glob.glob(f"{run}/discarded_best_step*.h5")
assert len(aside) == 1, f"expected one discarded_best_step*.h5: {os.listdir(run)}"
with h5py.File(aside[0], "r") as f:
    old_step = int(f.attrs["step"])
assert old_step > 4 and f"discarded_best_step{old_step}.h5" in aside[0], aside
assert "after step 4 this run resumes from" in log, "no warning naming the set-aside file"
rows = [l.strip().split(",") for l in open(f"{run}/val.csv").readlines()[1:]]
resumed = [(int(s), float(d)) for s, d in rows if int(s) > 4]
assert [s for s, _ in resumed] == [6, 8, 10], rows
best_step, best = max(resumed, key=lambda r: (r[1], -r[0]))
with h5py.File(f"{run}/ckpt_best.h5", "r") as f:
    got = (int(f.attrs["step"]), float(f.attrs["metric"]))
assert got == (best_step, best), (got, resumed)
print(f"set aside {aside[0]} (step {old_step}); ckpt_best.h5 = step {got[0]}, Dice {got[1]!r}")
PY
# Set-asides pile up one per crash: only the discarded best of the highest Dice stays. Two
# more beside the first (copies with their Dice edited: 0.9 and 0), then the run resumed from
# ckpt_4.h5 again sets its ckpt_best.h5 aside: the 0.9 one alone is left, the rest removed.
"$PYTHON" - "$WORK/disc" <<'PY' || fail "could not plant discarded bests"
import shutil, sys, h5py
run = sys.argv[1]
for step, dice in ((100, 0.9), (101, 0.0)):
    path = f"{run}/discarded_best_step{step}.h5"
    shutil.copy(f"{run}/ckpt_best.h5", path)
    with h5py.File(path, "r+") as f:
        f.attrs["metric"] = dice
PY
rm "$WORK/disc/ckpt_8.h5" "$WORK/disc/ckpt_10.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/disc" "${dargs[@]}" lr=0 min_lr=0 \
  > "$WORK/d3.log" 2>&1 || { tail "$WORK/d3.log"; fail "the second discarded-best resume"; }
left=$(cd "$WORK/disc" && ls discarded_best_step*)
[ "$left" = discarded_best_step100.h5 ] ||
  { grep -i discarded "$WORK/d3.log"; fail "discarded bests left: $left (want step100 alone)"; }
grep -q 'removed .*discarded_best_step101.h5' "$WORK/d3.log" || fail "no line names a removal"
echo "discarded bests: only the highest Dice kept ($left)"
# A damaged ckpt_best.h5 (a crash while it was written) does not stop the resume, which never
# reads it: set aside as ckpt_best.h5.damaged, and the next validation writes a new one
rm -rf "$WORK/disc" && mkdir -p "$WORK/disc"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/disc" "${dargs[@]}" --stop-after 4 \
  > "$WORK/e1.log" 2>&1 || { tail "$WORK/e1.log"; fail "the damaged-best run failed"; }
truncate -s 3000 "$WORK/disc/ckpt_best.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/disc" "${dargs[@]}" --stop-after 2 \
  > "$WORK/e2.log" 2>&1 ||
  { tail "$WORK/e2.log"; fail "a damaged ckpt_best.h5 stopped the resume"; }
grep -q "ckpt_best.h5 is damaged (truncated or unreadable.*set aside as .*ckpt_best.h5.damaged" \
  "$WORK/e2.log" || { cat "$WORK/e2.log"; fail "no warning about the damaged ckpt_best.h5"; }
"$PYTHON" -c 'import sys, h5py; assert h5py.File(sys.argv[1], "r").attrs["step"] == 6' \
  "$WORK/disc/ckpt_best.h5" || fail "no new ckpt_best.h5 from the validation after step 6"

# val.csv rows lost (a node crash before they reached the disk; emptied here): the resumed run
# goes on from the best its checkpoint recorded, with a warning, so a later, worse validation
# does not replace ckpt_best.h5 (it had: the best restarted from the surviving rows). A micro
# UNETR whose validations after steps 2 and 4 beat the one after step 6 (checked first).
same_best() {  # run_dir A, run_dir B: their ckpt_best.h5 of the same step and Dice
  "$PYTHON" - "$1/ckpt_best.h5" "$2/ckpt_best.h5" <<'PY'
import sys, h5py
a, b = (h5py.File(p, "r").attrs for p in sys.argv[1:3])
assert (a["step"], a["metric"]) == (b["step"], b["metric"]), \
    ((a["step"], a["metric"]), (b["step"], b["metric"]))
PY
}
largs=(synthetic_cases=4 crop=32,32,32 embed_dim=24 heads=2 mlp_dim=48 feature_size=4 lr=4e-3
       seed=3 steps=6 warmup=3 val_every=2 ckpt_every=3 log_every=1 threads=1)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/lfull" "${largs[@]}" > "$WORK/lf.log" 2>&1 ||
  { tail "$WORK/lf.log"; fail "the uninterrupted micro run failed"; }
"$PYTHON" - "$WORK/lfull/val.csv" <<'PY' ||
import csv, sys
rows = {int(r["step"]): float(r["mean_dice"]) for r in csv.DictReader(open(sys.argv[1]))}
assert sorted(rows) == [2, 4, 6] and rows[6] < max(rows[2], rows[4]), rows
PY
  fail "the micro run no longer validates worse after step 6 than before (the case this checks)"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/lost" "${largs[@]}" --stop-after 5 \
  > "$WORK/l1.log" 2>&1 || { tail "$WORK/l1.log"; fail "the micro run to step 5 failed"; }
printf 'step,mean_dice\n' > "$WORK/lost/val.csv"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/lost" "${largs[@]}" > "$WORK/l2.log" 2>&1 ||
  { tail "$WORK/l2.log"; fail "the resume after val.csv lost its rows failed"; }
grep -q "val.csv holds no validation as good as the best Dice .* that .*ckpt_5.h5 recorded" \
  "$WORK/l2.log" || { cat "$WORK/l2.log"; fail "no warning about val.csv's lost rows"; }
same_best "$WORK/lfull" "$WORK/lost" ||
  fail "after val.csv lost its rows, a worse validation replaced ckpt_best.h5"
echo "ok: val.csv's rows lost: the checkpoint's recorded best kept ckpt_best.h5"
# --resume from another run_dir into an empty one: no ckpt_best.h5 holds the recorded best
# there, so the first validation writes one (taking the other run's best as the bar had left
# the run without any ckpt_best.h5)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/other" "${largs[@]}" \
  --resume "$WORK/lost/ckpt_3.h5" > "$WORK/o.log" 2>&1 ||
  { tail "$WORK/o.log"; fail "the resume from another run_dir failed"; }
"$PYTHON" - "$WORK/other" <<'PY' || fail "the run resumed from another run_dir"
import csv, sys, h5py
rows = {int(r["step"]): float(r["mean_dice"])
        for r in csv.DictReader(open(sys.argv[1] + "/val.csv"))}
best = max(rows, key=lambda s: rows[s])
with h5py.File(sys.argv[1] + "/ckpt_best.h5", "r") as f:
    assert (f.attrs["step"], f.attrs["metric"]) == (best, rows[best]), (dict(f.attrs), rows)
PY
echo "ok: --resume into an empty run_dir writes its own ckpt_best.h5"
# after a set-aside (ckpt_best.h5 of a discarded step 7) the best restarts; a second resume
# must not bring back val.csv's older best, which has no weights on disk: two chunks of one
# step choose ckpt_best.h5 as one resume of two steps does
sargs=("${largs[@]}" steps=12 val_every=1 ckpt_every=100)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/sa" "${sargs[@]}" --stop-after 5 \
  > "$WORK/sa.log" 2>&1 || { tail "$WORK/sa.log"; fail "the run to step 5 failed"; }
"$PYTHON" -c 'import sys, h5py; h5py.File(sys.argv[1], "r+").attrs["step"] = 7' \
  "$WORK/sa/ckpt_best.h5"
cp -r "$WORK/sa" "$WORK/sa1"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/sa1" "${sargs[@]}" --stop-after 2 \
  > "$WORK/sa1.log" 2>&1 || { tail "$WORK/sa1.log"; fail "one resume of two steps failed"; }
for chunk in 1 2; do
  "$ALICE" finetune --config "$cfg" run_dir="$WORK/sa" "${sargs[@]}" --stop-after 1 \
    > "$WORK/sa.c$chunk.log" 2>&1 || { tail "$WORK/sa.c$chunk.log"; fail "chunk $chunk failed"; }
done
same_best "$WORK/sa1" "$WORK/sa" ||
  fail "after a set-aside, two chunks chose another ckpt_best.h5 than one resume"
echo "ok: after a set-aside, chunked resumes choose ckpt_best.h5 as one resume does"
# the validation a preempted run skipped (after step 2), given by the next start, which then
# crashed before its next checkpoint: the run resumed again from ckpt_2.h5 (whose recorded
# best lacks that validation, val.csv has its row) must still know it, or a later, worse
# validation replaces the ckpt_best.h5 it wrote
oargs=("${largs[@]}" steps=9 val_every=1 ckpt_every=100)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/ou" "${oargs[@]}" > "$WORK/ou.log" 2>&1 ||
  { tail "$WORK/ou.log"; fail "the uninterrupted run to step 9 failed"; }
"$PYTHON" - "$WORK/ou/val.csv" <<'PY' ||
import csv, sys
rows = {int(r["step"]): float(r["mean_dice"]) for r in csv.DictReader(open(sys.argv[1]))}
assert rows[2] > rows[1] and rows[2] > max(rows[s] for s in range(3, 10)), rows
PY
  fail "the micro run's best validation is no longer the one after step 2 (the case this checks)"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/ow" "${oargs[@]}" --stop-after 1 \
  > "$WORK/ow1.log" 2>&1 || { tail "$WORK/ow1.log"; fail "the run to step 1 failed"; }
rc=0
alice_signalled finetune --config "$cfg" run_dir="$WORK/ow" "${oargs[@]}" > "$WORK/ow2.log" 2>&1 ||
  rc=$?
[ "$rc" = 3 ] && grep -q "validation after step 2 skipped" "$WORK/ow2.log" ||
  { tail "$WORK/ow2.log"; fail "the preempted start: exit $rc, or validation 2 not skipped"; }
cp "$WORK/ow/ckpt_2.h5" "$WORK/ow.ckpt_2.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/ow" "${oargs[@]}" --stop-after 1 \
  > "$WORK/ow3.log" 2>&1 || { tail "$WORK/ow3.log"; fail "the start that owes validation 2"; }
# the node crashed before ckpt_3.h5 reached the disk (and before it pruned ckpt_2.h5)
rm "$WORK/ow/ckpt_3.h5" && cp "$WORK/ow.ckpt_2.h5" "$WORK/ow/ckpt_2.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/ow" "${oargs[@]}" > "$WORK/ow4.log" 2>&1 ||
  { tail "$WORK/ow4.log"; fail "the resume after the crash failed"; }
same_best "$WORK/ou" "$WORK/ow" ||
  fail "a validation given after a preemption was forgotten at the next resume"
cmp -s "$WORK/ou/val.csv" "$WORK/ow/val.csv" || fail "val.csv differs from the uninterrupted run's"
echo "ok: a skipped validation given at the next start is kept as the best across a crash"
echo "ok: preempted after step 1 and resumed, and in chunks of 3 steps: losses, validations" \
  "and checkpoints identical; a discarded segment's ckpt_best.h5 set aside, a damaged one too"
echo PASS

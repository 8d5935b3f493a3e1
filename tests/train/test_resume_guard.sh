#!/usr/bin/env bash
# Which checkpoint a training run resumes from, and the runs it refuses before writing anything
# (src/train/train_common.h train_resume_checkpoint), on the micro model:
#  - --no-resume in a run_dir holding checkpoints: refused (its checkpoints would mix with the
#    old run's: prune deleted the new ones, a restart resumed the old run);
#  - another method (mae from an alice checkpoint, whose tensors are a superset): refused;
#  - a pre-training checkpoint in a fine-tuning run: refused, naming both kinds;
#  - --resume of an older checkpoint while newer ones sit in run_dir: refused;
#  - a changed key (lr): resumed, with a warning naming it; a changed steps: also a warning that
#    the lr and EMA schedules jump;
#  - another thread count or rank count than the checkpoint's stored ones: resumed, warned;
#  - a smaller depth (the checkpoint holds tensors the model lacks), another heads or dec_heads:
#    refused, naming the tensor or the key; another align_loss refused as another method is; a
#    group the model needs missing (DINO's centres): refused, naming it; a fine-tuning run
#    resumed on another fold: refused;
#  - the newest checkpoint damaged (truncated): skipped with a warning, the one before resumed,
#    the damaged one set aside (ckpt_6.h5.damaged), so keep_ckpts = 1 keeps the newest
#    periodic one it resumed from (ckpt_3.h5) beside this run's stop checkpoint;
#  - tensor data zeroed inside a checkpoint that opens: its crc32 fails, set aside the same way;
#  - every checkpoint damaged: refused;
#  - another version's checkpoint: a stored key this alice lacks skipped with a warning, a key
#    the checkpoint lacks (an older alice's) named in a warning, another format_version refused;
#  - a second job in a run_dir another job is using: refused, naming the first (pid, host); the
#    next job after it resumes;
#  - a metrics.csv of an older alice with fewer columns: resumed, its rows padded, warned.
source "$(dirname "$0")/lib.sh"
expect_error() {  # expected-message-regex, command args...
  local want=$1; shift
  set +e; "$ALICE" "$@" > "$WORK/out.log" 2>&1; local rc=$?; set -e
  [ $rc -ne 0 ] || { cat "$WORK/out.log"; fail "expected failure for: $*"; }
  grep -Eq "$want" "$WORK/out.log" || { cat "$WORK/out.log"; fail "message '$want' missing for: $*"; }
  grep -q "^ *[0-9]\+ \+[0-9]" "$WORK/out.log" && fail "training started for: $*" || true
  echo "ok: refused: $(grep -m1 'error' "$WORK/out.log" | cut -c1-150)"
}
A=$WORK/a
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > /dev/null
[ -f "$A/ckpt_3.h5" ] && [ -f "$A/ckpt_6.h5" ] || fail "the first run left no ckpt_3.h5 and ckpt_6.h5"
cp -r "$A" "$WORK/a.orig"

expect_error "already holds checkpoints \(the newest ckpt_6.h5\)" pretrain --config "$MICRO" run_dir="$A" steps=9 --no-resume
expect_error "is a method = alice run, this run has method = mae" pretrain --config "$MICRO" run_dir="$A" steps=9 method=mae
# another alignment objective: refused like another method (a cosine run resumed with dino had
# ended in HDF5's error trace, looking for DINO's centres; the reverse dropped them silently)
expect_error "trained with align_loss = cosine, this run has align_loss = dino" \
  pretrain --config "$MICRO" run_dir="$A" steps=9 align_loss=dino
# a checkpoint lacking a group the model needs (DINO's centres removed from a dino run's):
# named, not HDF5's error trace
D=$WORK/dino
"$ALICE" pretrain --config "$MICRO" run_dir="$D" align_loss=dino steps=3 > /dev/null 2>&1 ||
  fail "the dino run failed"
"$PYTHON" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r+"); del f["buffers"]' \
  "$D/ckpt_3.h5" || fail "removing /buffers"
expect_error "written by a different model: it has no group /buffers" \
  pretrain --config "$MICRO" run_dir="$D" align_loss=dino steps=6
mkdir -p "$WORK/ft" && cp "$A/ckpt_6.h5" "$WORK/ft/"
expect_error "written by alice pretrain, this is alice finetune" finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$WORK/ft"
# a fine-tuning run resumed on another fold: its val.csv and ckpt_best.h5 are of the first
# fold (it had resumed with a warning, choosing the best across two folds' scores)
"$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$WORK/ftfold" fold=0 steps=2 \
  embed_dim=24 heads=2 mlp_dim=48 feature_size=4 val_every=2 > /dev/null 2>&1 ||
  fail "the fine-tuning run on fold 0 failed"
expect_error "fine-tuned with fold = 0, this run has fold = 1" finetune \
  --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$WORK/ftfold" fold=1 steps=4 embed_dim=24 \
  heads=2 mlp_dim=48 feature_size=4 val_every=2
# fine-tuning reads no method: a run begun under a job file that set one resumes without it
printf 'method = mae\n' > "$WORK/mae.cfg"
for extra in "--config $WORK/mae.cfg" ""; do
  # shellcheck disable=SC2086 # the job file option, or nothing
  "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" $extra run_dir="$WORK/ftmae" \
    steps=2 --stop-after 1 embed_dim=24 heads=2 mlp_dim=48 feature_size=4 > "$WORK/mae.log" 2>&1 ||
    { tail -3 "$WORK/mae.log"; fail "fine-tuning with a method key ${extra:+(begun)}"; }
done
grep -q "resumed from .*ftmae/ckpt_1.h5 at step 1" "$WORK/mae.log" ||
  { tail -5 "$WORK/mae.log"; fail "the resume without the method key"; }
# and the reverse: a run on every case (fold = -1) resumed with a validation fold
"$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$WORK/ftall" fold=-1 steps=2 \
  embed_dim=24 heads=2 mlp_dim=48 feature_size=4 > /dev/null 2>&1 ||
  fail "the fine-tuning run on every case failed"
expect_error "fold = -1, this run has fold = 0: it trained on every case, without validation" \
  finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$WORK/ftall" fold=0 steps=4 \
  embed_dim=24 heads=2 mlp_dim=48 feature_size=4
expect_error "holds ckpt_6.h5, newer than .*ckpt_3.h5 \(step 3\)" pretrain --config "$MICRO" run_dir="$A" steps=9 --resume "$A/ckpt_3.h5"
# a smaller model (depth = 1 of 2) finds its own tensors in the checkpoint and would drop the
# trained rest; another head count splits the same weights into other heads: both refused
expect_error "written by a larger model: it has tensor params/encoder.blocks.1" \
  pretrain --config "$MICRO" run_dir="$A" steps=9 depth=1
expect_error "trained with heads = 2, this run has heads = 1" \
  pretrain --config "$MICRO" run_dir="$A" steps=9 heads=1
expect_error "trained with dec_heads = 2, this run has dec_heads = 1" \
  pretrain --config "$MICRO" run_dir="$A" steps=9 dec_heads=1
diff -r -x .alice.lock "$A" "$WORK/a.orig" > /dev/null || fail "a refused run changed $A"

"$ALICE" pretrain --config "$MICRO" run_dir="$A" steps=9 lr=5e-4 > "$WORK/lr.log" 2>&1 || { cat "$WORK/lr.log"; fail "resume with a changed lr failed"; }
grep -q "resuming .*ckpt_6.h5 with changed keys: steps, lr (" "$WORK/lr.log" || { cat "$WORK/lr.log"; fail "no warning naming lr"; }
grep -q "resumed from .*ckpt_6.h5 at step 6" "$WORK/lr.log" || fail "did not resume at step 6"
grep -q "steps changed from 6 to 9: the learning-rate cosine and the EMA momentum" "$WORK/lr.log" ||
  fail "no warning that the longer run re-times the schedules"
echo "ok: a changed lr resumes with a warning naming it; a changed steps with one on the schedules"
grep -q "rank(s), this run has\|CPU thread(s) per rank\|backend, this run" "$WORK/lr.log" &&
  fail "a resume on the same ranks, threads and backend warned about them"

# The run's shape is stored (ranks, threads, backend) and a resume on another one is said: the
# losses then go on, but not bit for bit as the first run's.
"$PYTHON" - "$WORK/a.orig/ckpt_6.h5" <<'PY'
import sys, h5py
a = h5py.File(sys.argv[1], "r").attrs
got = (int(a["ranks"]), int(a["threads"]), a["backend"])
got = got[:2] + (got[2].decode() if isinstance(got[2], bytes) else got[2],)
assert got == (1, 1, "cpu"), f"stored run shape {got}, expected (1, 1, 'cpu')"
PY
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
"$ALICE" pretrain --config "$MICRO" run_dir="$A" steps=7 threads=2 > "$WORK/thr.log" 2>&1 ||
  { cat "$WORK/thr.log"; fail "resume with threads = 2 failed"; }
grep -q "written with 1 CPU thread(s) per rank, this run has 2: .*(set threads = 1 to repeat" \
  "$WORK/thr.log" || { cat "$WORK/thr.log"; fail "no warning about the thread count"; }
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
mpirun_n 2 "$ALICE" pretrain --config "$MICRO" run_dir="$A" steps=7 batch=1 > "$WORK/ranks.log" 2>&1 ||
  { cat "$WORK/ranks.log"; fail "resume on 2 ranks failed"; }
grep -q "written by 1 rank(s), this run has 2: the global batch stays 2, the same samples" \
  "$WORK/ranks.log" ||
  { cat "$WORK/ranks.log"; fail "no warning about the rank count"; }
# the same ranks with accumulation and a batch that doubles the global batch: said as such
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
mpirun_n 2 "$ALICE" pretrain --config "$MICRO" run_dir="$A" steps=7 batch=1 accum_steps=2 \
  > "$WORK/ranks2.log" 2>&1 || { cat "$WORK/ranks2.log"; fail "resume on 2 ranks x 2 failed"; }
grep -q "global batch (batch x ranks x accum_steps) goes from 2 to 4" "$WORK/ranks2.log" ||
  { cat "$WORK/ranks2.log"; fail "no warning that accumulation doubles the global batch"; }
echo "ok: ranks, threads and backend stored; a resume on other ranks or threads warns"

rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
head -c 1000 "$WORK/a.orig/ckpt_6.h5" > "$A/ckpt_6.h5"
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > "$WORK/dmg.log" 2>&1 || { cat "$WORK/dmg.log"; fail "resume past a damaged checkpoint failed"; }
grep -q "skipping .*ckpt_6.h5: not a complete checkpoint" "$WORK/dmg.log" || { cat "$WORK/dmg.log"; fail "no warning about the damaged ckpt_6.h5"; }
grep -q "resumed from .*ckpt_3.h5 at step 3" "$WORK/dmg.log" || fail "did not fall back to ckpt_3.h5"
echo "ok: a truncated newest checkpoint is skipped, the one before resumes"
# ... and set aside, so that pruning does not count it among the checkpoints it keeps: with
# keep_ckpts = 1 the damaged ckpt_6.h5 had been "the newest kept" and every checkpoint this run
# wrote, and the one it resumed from, were deleted (a second kill left nothing to resume)
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
head -c 1000 "$WORK/a.orig/ckpt_6.h5" > "$A/ckpt_6.h5"
"$ALICE" pretrain --config "$MICRO" run_dir="$A" keep_ckpts=1 --stop-after 2 \
  > "$WORK/keep.log" 2>&1 ||
  { cat "$WORK/keep.log"; fail "resume past a damaged checkpoint with keep_ckpts = 1 failed"; }
grep -q "aside as .*ckpt_6.h5.damaged" "$WORK/keep.log" ||
  { cat "$WORK/keep.log"; fail "not set aside"; }
[ -f "$A/ckpt_6.h5.damaged" ] && [ ! -e "$A/ckpt_6.h5" ] ||
  fail "ckpt_6.h5 not moved to ckpt_6.h5.damaged"
# kept: the newest periodic one (ckpt_3.h5; the damaged ckpt_6.h5, counted, had removed it)
# and the stop's ckpt_5.h5, the newest
[ "$(cd "$A" && ls ckpt_*.h5 | sort -V | tr '\n' ' ')" = "ckpt_3.h5 ckpt_5.h5 " ] ||
  { ls "$A"; fail "keep_ckpts = 1 did not keep ckpt_3.h5 and this run's ckpt_5.h5"; }
"$PYTHON" -c 'import sys, h5py; assert h5py.File(sys.argv[1], "r").attrs["step"] == 5' \
  "$A/ckpt_5.h5" ||
  fail "ckpt_5.h5 is not an intact checkpoint of step 5"
echo "ok: a damaged newest checkpoint is set aside, and keep_ckpts counts this run's checkpoints"
# full length, its second half zeroed (blocks a crashed copy never wrote): it opens, then fails
# a checksum deeper down; skipped the same way, not ended in HDF5's error trace
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
"$PYTHON" - "$A/ckpt_6.h5" <<'PY'
import os, sys
size = os.path.getsize(sys.argv[1])
with open(sys.argv[1], "r+b") as f:
    f.seek(size // 2)
    f.write(b"\0" * (size - size // 2))
PY
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > "$WORK/zeroed.log" 2>&1 ||
  { cat "$WORK/zeroed.log"; fail "resume past a checkpoint with a zeroed tail failed"; }
grep -q "skipping .*ckpt_6.h5: not a complete checkpoint" "$WORK/zeroed.log" ||
  { cat "$WORK/zeroed.log"; fail "no warning about the zeroed ckpt_6.h5"; }
grep -q "resumed from .*ckpt_3.h5 at step 3" "$WORK/zeroed.log" ||
  fail "did not fall back to ckpt_3.h5 past the zeroed ckpt_6.h5"
echo "ok: a newest checkpoint with a zeroed tail is skipped, the one before resumes"
# tensor data zeroed inside a checkpoint that still opens (HDF5 checksums only its metadata):
# each tensor's crc32 catches it, the checkpoint is set aside and the one before resumes
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
"$PYTHON" - "$A/ckpt_6.h5" <<'PY' || fail "crc32 attributes are not zlib's CRC-32 of the tensors"
import sys, zlib, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:   # the published definition: zlib.crc32 of the LE floats
    sets = [d for g in ("params", "adam_m", "adam_v", "target") for d in f[g].values()]
    bad = [d.name for d in sets
           if int(d.attrs["crc32"]) != zlib.crc32(np.asarray(d[()], "<f4").tobytes())]
    assert len(sets) > 100 and not bad, (len(sets), bad[:3])
PY
"$PYTHON" - "$A/ckpt_6.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    d = f["target"][sorted(f["target"])[-1]]
    where, size = d.id.get_offset(), d.id.get_storage_size()
    assert "crc32" in d.attrs, "no crc32 attribute written"
with open(sys.argv[1], "r+b") as f:
    f.seek(where)
    f.write(b"\0" * size)
PY
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > "$WORK/crc.log" 2>&1 ||
  { cat "$WORK/crc.log"; fail "resume past a checkpoint with zeroed tensor data failed"; }
grep -q "tensor target/.* fails its CRC-32" "$WORK/crc.log" &&
  grep -q "aside as .*ckpt_6.h5.damaged" "$WORK/crc.log" &&
  grep -q "resumed from .*ckpt_3.h5 at step 3" "$WORK/crc.log" ||
  { cat "$WORK/crc.log"; fail "zeroed tensor data not caught by its crc32"; }
echo "ok: a checkpoint whose tensor data was zeroed fails its crc32: set aside, the one" \
  "before resumes"
# a checkpoint a killed run began and never finished (ckpt_<step>.h5.tmp): removed at the start
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
head -c 5000 "$WORK/a.orig/ckpt_6.h5" > "$A/ckpt_9.h5.tmp"
: > "$A/ckpt_best.h5.tmp"; : > "$A/ckpt_9.h5.tmp.keep"
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > "$WORK/stale.log" 2>&1 ||
  { cat "$WORK/stale.log"; fail "resume beside stale .tmp files failed"; }
grep -q "removed .*ckpt_9.h5.tmp (0.0 MB): a checkpoint an earlier run began and never finished" \
  "$WORK/stale.log" || { cat "$WORK/stale.log"; fail "no note about the removed ckpt_9.h5.tmp"; }
[ ! -e "$A/ckpt_9.h5.tmp" ] && [ ! -e "$A/ckpt_best.h5.tmp" ] ||
  fail "the stale .tmp checkpoints are still there"
[ -e "$A/ckpt_9.h5.tmp.keep" ] || fail "a file of another name was removed"
echo "ok: checkpoints a killed run left half-written are removed at the start"

: > "$A/ckpt_3.h5"; : > "$A/ckpt_6.h5"
expect_error "none of them is intact" pretrain --config "$MICRO" run_dir="$A"
# ... and stays refused: with no intact checkpoint nothing is set aside (renamed, the next start
# had begun from step 0 in silence)
expect_error "none of them is intact" pretrain --config "$MICRO" run_dir="$A"
[ -f "$A/ckpt_3.h5" ] && [ -f "$A/ckpt_6.h5" ] && ! ls "$A"/*.damaged > /dev/null 2>&1 ||
  fail "checkpoints set aside although none was intact"

# Another alice version's checkpoint: a stored key this one lacks is skipped with a warning (the
# run resumes); another format version is refused.
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
"$PYTHON" "$ROOT/tests/lib/ckpt_config_edit.py" "$A/ckpt_6.h5" add "feature_of_a_newer_version = 1"
"$ALICE" pretrain --config "$MICRO" run_dir="$A" > "$WORK/newkey.log" 2>&1 || { cat "$WORK/newkey.log"; fail "a stored unknown key stopped the resume"; }
grep -q "key 'feature_of_a_newer_version' is unknown to this alice" "$WORK/newkey.log" || fail "no warning about the unknown stored key"
# ... and an older alice's checkpoint lacks a key added since: the resume names it
rm -rf "$A" && cp -r "$WORK/a.orig" "$A"
"$PYTHON" "$ROOT/tests/lib/ckpt_config_edit.py" "$A/ckpt_6.h5" drop teacher_decoder
"$ALICE" pretrain --config "$MICRO" run_dir="$A" steps=7 > "$WORK/oldkey.log" 2>&1 ||
  { cat "$WORK/oldkey.log"; fail "an older checkpoint stopped the resume"; }
grep -q "written by an older alice without the keys teacher_decoder: the resumed run uses" "$WORK/oldkey.log" ||
  { cat "$WORK/oldkey.log"; fail "no warning about the key the older checkpoint lacks"; }
grep -q "without the keys" "$WORK/lr.log" && fail "a checkpoint of this alice was called older"
cp "$WORK/a.orig/ckpt_6.h5" "$WORK/v2.h5"
"$PYTHON" -c "import h5py,sys; h5py.File(sys.argv[1],'a').attrs['format_version']=3" "$WORK/v2.h5"
expect_error "checkpoint format version 3, this alice reads versions 1-2" pretrain \
  --config "$MICRO" run_dir="$WORK/v2run" --resume "$WORK/v2.h5"
echo "ok: another version's stored key skipped with a warning; another format version refused"

# One job per run_dir: a second job while the first runs is refused naming the first (pid,
# host); they had pruned and overwritten each other's checkpoints and both ended with status 0.
# The lock dies with its holder: the next job resumes.
L=$WORK/locked
"$ALICE" pretrain --config "$MICRO" run_dir="$L" steps=100000 ckpt_every=100000 \
  > "$WORK/first.log" 2>&1 &
first=$!
for _ in $(seq 300); do grep -q "^ *2 " "$WORK/first.log" && break; sleep 0.1; done
grep -q "^ *2 " "$WORK/first.log" ||
  { kill $first; cat "$WORK/first.log"; fail "the first job did not start"; }
expect_error "run_dir $L is in use by another alice job \(pid $first on host [^,]+, since " \
  pretrain --config "$MICRO" run_dir="$L" steps=3
kill -TERM $first; wait $first || true   # SIGTERM: a checkpoint, exit 3
"$ALICE" pretrain --config "$MICRO" run_dir="$L" steps=100000 ckpt_every=100000 --stop-after 1 \
  > "$WORK/after.log" 2>&1 || { cat "$WORK/after.log"; fail "the job after the first was refused"; }
grep -q "resumed from $L/ckpt_" "$WORK/after.log" ||
  { cat "$WORK/after.log"; fail "no resume after the lock's holder ended"; }
echo "ok: a second job in a run_dir in use is refused naming the first; the next one resumes"
# a run begun by an older alice, whose metrics.csv lacks a column added since (feat_spread, the
# last): resumed, its rows kept with the new column empty, with a warning (it had been refused
# as "another kind of run", leaving the run unresumable after an upgrade)
O=$WORK/older
"$ALICE" pretrain --config "$MICRO" run_dir="$O" --stop-after 3 > /dev/null 2>&1 ||
  fail "the run to step 3 failed"
"$PYTHON" - "$O/metrics.csv" <<'PY' || fail "dropping metrics.csv's last column"
import sys
lines = open(sys.argv[1]).read().splitlines()
assert lines[0].endswith(",feat_spread"), lines[0]
open(sys.argv[1], "w").write("".join(l.rsplit(",", 1)[0] + "\n" for l in lines))
PY
"$ALICE" pretrain --config "$MICRO" run_dir="$O" > "$WORK/older.log" 2>&1 ||
  { cat "$WORK/older.log"; fail "a metrics.csv with fewer columns stopped the resume"; }
grep -q "older alice, which logged fewer columns: its rows keep the new ones (feat_spread) empty" \
  "$WORK/older.log" || { cat "$WORK/older.log"; fail "no warning about the older metrics.csv"; }
"$PYTHON" - "$O/metrics.csv" <<'PY' || fail "the older rows or the resumed ones"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [int(r["step"]) for r in rows] == list(range(6)), [r["step"] for r in rows]
assert all(r["feat_spread"] == "" for r in rows[:3]), rows[:3]
assert all(len(r) == len(rows[0]) and r["loss"] for r in rows), rows
assert rows[3]["feat_spread"] != "", rows[3]   # logged by the resumed run (log_every = 1)
PY
echo "ok: a metrics.csv of an older alice, with fewer columns, resumes with them empty"
echo PASS

#!/usr/bin/env bash
# Bad input to `alice pretrain` ends with a clear error before compute starts (exit 2), and a
# non-finite loss stops the run with the last good checkpoint intact.
source "$(dirname "$0")/lib.sh"
expect_error() {  # expected-message-regex, args...
  local want=$1; shift
  set +e; "$ALICE" pretrain --config "$MICRO" "$@" > "$WORK/out.log" 2>&1; local rc=$?; set -e
  [ $rc -eq 2 ] ||
    { cat "$WORK/out.log"; fail "exit status $rc, expected 2 (a refused input) for: $*"; }
  grep -Eq "$want" "$WORK/out.log" || { cat "$WORK/out.log"; fail "message '$want' missing for: $*"; }
  # the step table's header (a warning may mention steps)
  local table='^ +step +loss '
  grep -Eq "$table" "$WORK/out.log" && { grep -E "$table" "$WORK/out.log" | head -2; fail "compute started for: $*"; } || true
  echo "ok: $* -> $(grep -m1 'error' "$WORK/out.log")"
}
expect_error "crop X = 30 is not divisible by patch = 8" run_dir="$WORK/a" crop=30,32,16
expect_error "embed_dim = 24 is not divisible by heads = 5" run_dir="$WORK/a" heads=5
expect_error "unknown configuration key 'embed_dims'" run_dir="$WORK/a" embed_dims=24
expect_error "larger than every volume" run_dir="$WORK/a" crop=192,192,32
expect_error "activations of this model and batch need .* GiB" run_dir="$WORK/a" crop=96,96,96 patch=2 batch=64
# z_tubes: 0.6 of 32 tokens = 19 masked, not whole columns of 2 (16 columns: 10 / 16 = 0.625)
tubes="mask_shape = z_tubes masks whole columns of 2 z tokens, but mask_ratio = 0.6 masks 19"
expect_error "$tubes of 32 tokens.*e.g. 0.625" \
  run_dir="$WORK/a" mask_shape=z_tubes mask_ratio=0.6
printf 'crop = 32,32,16\nbatch = two\n' > "$WORK/bad.cfg"
expect_error "bad.cfg:2: batch = 'two' is not valid" run_dir="$WORK/a" --config "$WORK/bad.cfg"
# One volume cannot give inter-volume pairs.
"$ALICE" phantom --out "$WORK/one" --cases 1 > /dev/null
"$ALICE" pack --input "$WORK/one" --out "$WORK/one.h5" spacing=3,3,3 > /dev/null
expect_error "has 1 volume\(s\), but inter_volume = 1" run_dir="$WORK/a" data="$WORK/one.h5"
# A checkpoint from another model.
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/m" steps=3 > /dev/null
cp "$WORK/m/config.txt" "$WORK/m.config.txt"
expect_error "written by a different model" run_dir="$WORK/m" embed_dim=36 steps=6
cmp -s "$WORK/m/config.txt" "$WORK/m.config.txt" ||
  fail "the refused resume rewrote config.txt (it no longer describes the checkpoints beside it)"
# A resume refused over its data set (missing; a crop larger than every volume) leaves
# config.txt as it was too (it had been rewritten before the data set was opened)
expect_error "cannot open data set .*missing.h5" run_dir="$WORK/m" data="$WORK/missing.h5" steps=6
expect_error "larger than every volume" run_dir="$WORK/m" data="$WORK/one.h5" crop=32,128,16 \
  steps=6 inter_volume=0
cmp -s "$WORK/m/config.txt" "$WORK/m.config.txt" ||
  fail "a resume refused over its data set rewrote config.txt"
# Non-finite loss: stop with status 4 (diverged: not 1, an internal error; not 3, a requeue),
# the newest checkpoint named and still loading.
set +e; "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/nan" lr=1e30 ckpt_every=1 > "$WORK/nan.log" 2>&1; rc=$?; set -e
[ $rc -eq 4 ] || { cat "$WORK/nan.log"; fail "non-finite run exited with $rc, expected 4"; }
grep -q "non-finite loss" "$WORK/nan.log" || fail "no non-finite message"
bad=$(sed -n 's/.*step \([0-9]*\): non-finite loss.*/\1/p' "$WORK/nan.log" | head -1)
[ -n "$bad" ] || fail "the non-finite message names no step"
newest=$(cd "$WORK/nan" && ls ckpt_*.h5 | sed 's/ckpt_\([0-9]*\).h5/\1/' | sort -n | tail -1)
grep -q "$WORK/nan/ckpt_$newest.h5, the newest checkpoint, is of step $newest, before it" \
  "$WORK/nan.log" ||
  { cat "$WORK/nan.log"; fail "the message does not name the newest checkpoint"; }
# diverged before any checkpoint: said so, not "the last good checkpoint is intact"
set +e
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/nan0" lr=1e30 ckpt_every=100 \
  > "$WORK/nan0.log" 2>&1
rc=$?
set -e
[ $rc -eq 4 ] && grep -q "$WORK/nan0 holds no checkpoint yet, so a rerun starts where this" \
  "$WORK/nan0.log" || { cat "$WORK/nan0.log"; fail "divergence before any checkpoint (exit $rc)"; }
# every checkpoint left is from before the bad step and holds finite tensors only
"$PYTHON" - "$WORK/nan" "$bad" <<'PY' ||
import glob, sys, h5py, numpy as np
paths = glob.glob(sys.argv[1] + "/ckpt_*.h5")
assert any(p.endswith("/ckpt_1.h5") for p in paths), paths
for p in paths:
    with h5py.File(p, "r") as f:
        # attr step = steps done; the bad step's 0-based index = steps done before it
        assert int(f.attrs["step"]) <= int(sys.argv[2]), (p, int(f.attrs["step"]), sys.argv[2])
        assert len(f["params"]) > 10
        for g in ("params", "adam_m", "adam_v", "target"):
            for n, d in f[g].items():
                assert np.isfinite(d[()]).all(), (p, g, n)
PY
  fail "a checkpoint from or after the non-finite step, or with non-finite tensors"
ls "$WORK/nan" | grep -q tmp && fail "a temporary file was left behind"
# on_nonfinite = skip: the run goes on to the end.
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/skip" lr=1e30 on_nonfinite=skip > "$WORK/skip.log" 2>&1
grep -q "step skipped" "$WORK/skip.log" || fail "skip mode did not skip"
# ... and skipped steps keep their boundaries: the periodic (3) and last (6) checkpoints exist.
for c in ckpt_3.h5 ckpt_6.h5; do
  [ -f "$WORK/skip/$c" ] || fail "on_nonfinite = skip wrote no $c: skipped steps bypassed the checkpoints"
done
# ... and the moments' bias corrections count the updates applied, not the skipped steps:
# adam_steps = 6 less the steps the log says were skipped.
skipped=$(grep -c "step skipped" "$WORK/skip.log")
"$PYTHON" - "$WORK/skip/ckpt_6.h5" $((6 - skipped)) <<'PY' ||
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert int(f.attrs["step"]) == 6, int(f.attrs["step"])
    assert int(f.attrs["adam_steps"]) == int(sys.argv[2]), (int(f.attrs["adam_steps"]), sys.argv[2])
PY
  fail "ckpt_6.h5's adam_steps is not 6 less the $skipped skipped step(s)"
# A run resumed from ckpt_3.h5 carries the count on (it is not re-derived from the step).
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/skip2" lr=1e30 on_nonfinite=skip steps=3 \
  > /dev/null 2>&1
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/skip2" lr=1e30 on_nonfinite=skip > /dev/null 2>&1
"$PYTHON" - "$WORK/skip/ckpt_6.h5" "$WORK/skip2/ckpt_6.h5" <<'PY' ||
import sys, h5py
a, b = (int(h5py.File(p, "r").attrs["adam_steps"]) for p in sys.argv[1:])
assert a == b, (a, b)
PY
  fail "the resumed run's adam_steps differs from the uninterrupted run's"
echo "ok: non-finite loss stops (status 4) with ckpt_1.h5 intact; on_nonfinite = skip skips," \
  "checkpoints and counts only applied updates"

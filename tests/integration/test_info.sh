#!/usr/bin/env bash
# `alice info` against what the files hold, read independently with h5py: a packed data set
# (cases, labelled cases, folds with their case counts, spacing), a pre-training checkpoint
# (kind, step, method, tensor count, ranks/threads/backend; an older alice's checkpoint named
# as such) and evaluation results whose predictions are the truth itself (mean DSC 1.0000, the
# prediction sources named, another tool's descrip not taken for one; what each case was scored
# against, a case without a prediction, an eval --cases fold:K). A file
# alice did not write, and a missing one, are refused naming the file.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "FAIL: $ALICE is not built"; exit 1; }
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$ALICE" phantom --out "$T/ph" --cases 5 --seed 4 > /dev/null
rm "$T/ph/labelsTr/case0004.nii.gz"   # one case without a label
"$ALICE" pack --input "$T/ph" --out "$T/ds.h5" spacing=4,4,4 num_folds=3 > /dev/null
"$ALICE" info "$T/ds.h5" > "$T/ds.txt"
cat "$T/ds.txt"
"$PYTHON" - "$T/ds.h5" "$T/ds.txt" <<'PY' || fail "data set description"
import sys, h5py, numpy as np
f, text = h5py.File(sys.argv[1], "r"), open(sys.argv[2]).read()
folds, lab = f["index/fold"][()], f["index/has_label"][()]
want = ["cases      %d (%d with a label)" % (len(folds), lab.sum()),
        "spacing    %g x %g x %g mm" % tuple(f.attrs["spacing"]),
        "num_folds  %d" % f.attrs["num_folds"]]
want += ["fold %-3d %d cases, %d with a label" % (k, (folds == k).sum(), lab[folds == k].sum())
         for k in range(int(f.attrs["num_folds"]))]
for w in want:
    assert w in text, "missing line %r" % w
print("ok: data set: %d lines as h5py reads the file" % len(want))
PY
"$ALICE" pretrain --config "$ROOT/tests/train/micro.cfg" run_dir="$T/run" steps=2 ckpt_every=2 \
  threads=1 > /dev/null
"$ALICE" info "$T/run/ckpt_2.h5" > "$T/ck.txt"
cat "$T/ck.txt"
"$PYTHON" - "$T/run/ckpt_2.h5" "$T/ck.txt" <<'PY' || fail "checkpoint description"
import sys, h5py, numpy as np
f, text = h5py.File(sys.argv[1], "r"), open(sys.argv[2]).read()
floats = sum(int(np.prod(d.shape)) for d in f["params"].values())
want = ["checkpoint of alice pretrain", "step       %d of steps = 2" % f.attrs["step"],
        "method alice", "%d parameter tensors, %d floats stored (and the EMA target)"
        % (len(f["params"]), floats), "written by 1 rank(s) x 1 thread(s), backend cpu"]
for w in want:
    assert w in text, "missing %r" % w
print("ok: checkpoint: kind, step, method, %d tensors, run shape" % len(f["params"]))
PY
grep -q "older" "$T/ck.txt" && fail "a checkpoint of this alice called older"
# an older alice's checkpoint (a key it lacks) is described as such
cp "$T/run/ckpt_2.h5" "$T/old.h5"
"$PYTHON" "$ROOT/tests/lib/ckpt_config_edit.py" "$T/old.h5" drop teacher_decoder
"$ALICE" info "$T/old.h5" > "$T/old.txt"
grep -q "older      written before the keys teacher_decoder: shown at today's defaults" \
  "$T/old.txt" || { cat "$T/old.txt"; fail "an older checkpoint is not described as such"; }
mkdir -p "$T/pred"
for i in 0 1 2; do cp "$T/ph/labelsTr/case000$i.nii.gz" "$T/pred/"; done
# another tool's file: its descrip names no source
"$PYTHON" - "$T/ph/labelsTr/case0003.nii.gz" "$T/pred/case0003.nii.gz" <<'PY'
import sys, numpy as np, nibabel as nib
src = nib.load(sys.argv[1])
img = nib.Nifti1Image(np.asarray(src.dataobj), src.affine)   # no alice comment extension
img.header["descrip"] = b"FSL5.0"
nib.save(img, sys.argv[2])
PY
"$ALICE" eval --pred "$T/pred" --labels "$T/ph/labelsTr" --out "$T/res" > /dev/null 2>&1 ||
  fail "eval of the labels against themselves"
"$ALICE" info "$T/res.h5" > "$T/res.txt"
cat "$T/res.txt"
grep -q "scored     4 cases x 13 organs (label_set flare)" "$T/res.txt" || fail "results: counts"
grep -q "mean       DSC 1.0000 over 52 scores, NSD 1.0000 over 52" "$T/res.txt" ||
  fail "results: the truth against itself is not DSC 1"
grep -q "from       alice phantom: synthetic CT, seed 4, size small, case 0" "$T/res.txt" ||
  fail "results: the prediction sources are not named"
grep -q "FSL" "$T/res.txt" && fail "results: another tool's descrip taken for a source"
"$PYTHON" - "$T/res.h5" <<'PY' || fail "results.h5 prediction_sources"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    src = dict(zip([s.decode() for s in f["case_names"][()]],
                   [s.decode() for s in f["prediction_sources"][()]]))
assert src["case0003"] == "" and src["case0000"].startswith("alice phantom: "), src
PY
grep -q "against    4 label file(s)$" "$T/res.txt" || fail "results: the truth sources not counted"
grep -qE "skipped|cases      fold" "$T/res.txt" && fail "results: a skip or selection not made"
# a case without a prediction, and a fold selected (the data set's folds, each case's truth its
# recorded source label)
rm "$T/pred/case0002.nii.gz"
"$ALICE" eval --pred "$T/pred" --labels "$T/ph/labelsTr" --out "$T/res3" > /dev/null 2>&1 ||
  fail "eval with a case lacking a prediction"
"$ALICE" info "$T/res3.h5" > "$T/res3.txt"
grep -q "skipped    1 case(s) of the truth without a prediction" "$T/res3.txt" ||
  { cat "$T/res3.txt"; fail "results: the skipped case not counted"; }
fold=$("$PYTHON" -c 'import sys, h5py; f = h5py.File(sys.argv[1], "r")
n = [s.decode() for s in f["index/name"][()]]
print(f["index/fold"][n.index("case0000")])' "$T/ds.h5")
"$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --cases "fold:$fold" --out "$T/resf" \
  > /dev/null 2>&1 || fail "eval --cases fold:$fold"
"$ALICE" info "$T/resf.h5" > "$T/resf.txt"
grep -q "cases      fold:$fold$" "$T/resf.txt" && grep -q "against    [1-9][0-9]* label file(s)$" \
  "$T/resf.txt" || { cat "$T/resf.txt"; fail "results: the fold selection not shown"; }
# NaN cells (flare22: a truth one slice thick leaves its vessel unscoreable): the mean is
# alice eval's and tables.py's (per organ over cases, then over organs), not one pooled over
# every cell, which differs when organs have different counts of scored cells
mkdir -p "$T/gt" "$T/pr"
"$PYTHON" - "$T" <<'PY'
import sys, nibabel as nib, numpy as np
for name, one_slice in (("a", True), ("b", False)):
    g = np.zeros((20, 20, 20), np.uint8); g[2:8, 2:8, 2:12] = 1
    if one_slice: g[12:15, 12:15, 5] = 5
    else: g[12:15, 12:15, 3:9] = 5
    p = g.copy(); p[2:8, 2:8, 10:12] = 0
    if not one_slice: p[12:15, 12:15, :] = 0
    nib.save(nib.Nifti1Image(g, np.eye(4)), f"{sys.argv[1]}/gt/{name}.nii.gz")
    nib.save(nib.Nifti1Image(p, np.eye(4)), f"{sys.argv[1]}/pr/{name}.nii.gz")
PY
"$ALICE" eval --pred "$T/pr" --labels "$T/gt" --out "$T/nan" eval_protocol=flare22 \
  > /dev/null 2>&1 ||
  fail "eval of the one-slice vessel"
"$ALICE" info "$T/nan.h5" > "$T/nan.txt"
"$PYTHON" - "$T/nan.h5" "$T/nan.txt" <<'PY' || fail "results with NaN cells: the mean"
import sys, warnings, h5py, numpy as np
f, text = h5py.File(sys.argv[1], "r"), open(sys.argv[2]).read()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)   # organs without a scored cell
    want = [np.nanmean(np.nanmean(f[m][()], axis=0)) for m in ("dsc", "nsd")]
pooled = np.nanmean(f["dsc"][()])
assert np.isnan(f["dsc"][()]).any() and abs(pooled - want[0]) > 1e-3, "the case has no NaN"
scored = (~np.isnan(f["dsc"][()])).sum()
line = "DSC %.4f over %d scores, NSD %.4f over" % (want[0], scored, want[1])
assert line in text, (line, text)
print("ok: mean with NaN cells %.4f (pooled would be %.4f)" % (want[0], pooled))
PY
"$PYTHON" -c "import h5py,sys; h5py.File(sys.argv[1],'w').attrs['format']='other'" "$T/x.h5"
if "$ALICE" info "$T/x.h5" > "$T/x.txt" 2>&1; then fail "a foreign HDF5 file was described"; fi
grep -q "x.h5: an HDF5 file, but not one alice wrote (format attribute 'other'" "$T/x.txt" ||
  { cat "$T/x.txt"; fail "no clear message for a foreign file"; }
# a checkpoint whose step is no single number (an array: HDF5 wrote it all into one long, a
# stack overflow) is refused naming the file, not read as step 0 or a crash
cp "$T/run/ckpt_2.h5" "$T/steps.h5"
"$PYTHON" -c "import h5py, sys, numpy as np; f = h5py.File(sys.argv[1], 'a')
del f.attrs['step']; f.attrs['step'] = np.arange(16)" "$T/steps.h5"
rc=0; "$ALICE" info "$T/steps.h5" > "$T/s.txt" 2>&1 || rc=$?
[ "$rc" -gt 0 ] && [ "$rc" -lt 128 ] &&
  grep -q "steps.h5: no step attribute holding one non-negative number" "$T/s.txt" ||
  { cat "$T/s.txt"; fail "a checkpoint with an array step (exit $rc)"; }
if "$ALICE" info "$T/missing.h5" > "$T/m.txt" 2>&1; then fail "a missing file was described"; fi
grep -q "missing.h5" "$T/m.txt" || { cat "$T/m.txt"; fail "the missing file is not named"; }
# a file of another kind (a NIfTI, a CSV) is said to be no HDF5 file, not a damaged one
printf 'case,organ,dsc,nsd\n' > "$T/results.csv"
if "$ALICE" info "$T/results.csv" > "$T/c.txt" 2>&1; then fail "a CSV file was described"; fi
grep -q "results.csv: not an HDF5 file (alice reads dataset.h5" "$T/c.txt" ||
  { cat "$T/c.txt"; fail "a CSV file: no clear message"; }
: > "$T/empty.h5"
if "$ALICE" info "$T/empty.h5" > "$T/e.txt" 2>&1; then fail "an empty file was described"; fi
grep -q "empty.h5: the file is empty (0 bytes" "$T/e.txt" ||
  { cat "$T/e.txt"; fail "an empty file: no clear message"; }
echo "ok: foreign and missing files refused naming them"
# results or a checkpoint missing a dataset, a tensor that is a group, a table not of the
# names' shape: named as damaged (exit 2), not an HDF5 error stack and an internal error
damaged() {  # name, source, python edit of f, expected message
  cp "$2" "$T/$1.h5"
  "$PYTHON" -c "import h5py, sys, numpy as np; f = h5py.File(sys.argv[1], 'a'); $3" "$T/$1.h5"
  rc=0; "$ALICE" info "$T/$1.h5" > "$T/$1.txt" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q -- "$4" "$T/$1.txt" &&
    ! grep -q "HDF5-DIAG\|HDF5 call failed" "$T/$1.txt" ||
    { cat "$T/$1.txt"; fail "$1: exit $rc, want 2 and '$4'"; }
  echo "ok: $1: $(grep -m1 error "$T/$1.txt" | cut -c1-100)"
}
damaged no_dsc "$T/nan.h5" "del f['dsc']" "dsc is missing or is no dataset"
damaged dsc_shape "$T/nan.h5" "d = f['dsc'][()]; del f['dsc']; f['dsc'] = d[:, :2]" \
  "dsc is not a table of"
tensor=$("$PYTHON" -c "import h5py, sys; print(sorted(h5py.File(sys.argv[1])['params'])[0])" \
  "$T/run/ckpt_2.h5")
damaged tensor_group "$T/run/ckpt_2.h5" \
  "del f['params/$tensor']; f.create_group('params/$tensor')" \
  "params/$tensor is missing or is no dataset"
echo PASS

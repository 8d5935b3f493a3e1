#!/usr/bin/env bash
# alice eval refuses label ids that are no organ of the label set (a prediction from a model of
# another num_classes, a truth in another numbering, an 'ignore' value), naming the file, the
# ids and their voxel counts; --allow-unknown-labels scores them as background with a warning
# (the organ a stray id replaced then scores below 1). A --out folder that does not exist is
# refused before any case is scored. A truth case without a prediction is listed in
# results.h5's skipped_cases attribute, and analysis/tables.py warns about it.
set -euo pipefail
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c 'import nibabel, numpy' 2>/dev/null ||
  { echo "skip: no nibabel for $PYTHON"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
T=$(mktemp -d /tmp/alice_eval_ids.XXXXXX); trap 'rm -rf "$T"' EXIT
"$ALICE" phantom --out "$T/ph" --cases 1 --size small --seed 5 > /dev/null
mkdir -p "$T/pred" "$T/truth"
cp "$T/ph/labelsTr/case0000.nii.gz" "$T/truth/"
# the prediction: the truth with its liver (id 1) written as 14 and one voxel of 200
"$PYTHON" - "$T/truth/case0000.nii.gz" "$T/pred/case0000.nii.gz" <<'PY'
import sys, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
lab = np.asanyarray(img.dataobj).astype(np.uint8)
assert (lab == 1).sum() > 0
lab[lab == 1] = 14
lab[0, 0, 0] = 200
nib.save(nib.Nifti1Image(lab, img.affine, img.header), sys.argv[2])
PY
if "$ALICE" eval --pred "$T/pred" --labels "$T/truth" --out "$T/r" > "$T/a.log" 2>&1; then
  fail "a prediction holding ids 14 and 200 was scored (label_set = flare has 1..13)"
fi
want="case0000.nii.gz holds label ids that are no organ of label_set = flare (ids 1..13):"
grep -q "$want 14 (.* voxels), 200 (1 voxel)" "$T/a.log" ||
  { cat "$T/a.log"; fail "the error does not name the file, the ids and their counts"; }
[ ! -e "$T/r.h5" ] || fail "results written despite the error"
echo "ok: unknown ids in a prediction refused, named with their voxel counts"
"$ALICE" eval --pred "$T/pred" --labels "$T/truth" --out "$T/r" --allow-unknown-labels \
  > "$T/b.log" 2>&1 || { cat "$T/b.log"; fail "--allow-unknown-labels did not score"; }
grep -q "scored as background (--allow-unknown-labels)" "$T/b.log" || fail "no warning"
"$PYTHON" - "$T/r.csv" <<'PY'
import csv, sys
rows = {r["organ"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert float(rows["liver"]["dsc"]) == 0.0, rows["liver"]
assert float(rows["spleen"]["dsc"]) == 1.0, rows["spleen"]
PY
echo "ok: --allow-unknown-labels scores them as background (liver 0, spleen 1)"
# the truth in another numbering: refused naming the truth file
cp "$T/truth/case0000.nii.gz" "$T/pred/case0000.nii.gz"
"$PYTHON" - "$T/truth/case0000.nii.gz" <<'PY'
import sys, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
lab = np.asanyarray(img.dataobj).astype(np.uint8)
lab[lab == 2] = 99
nib.save(nib.Nifti1Image(lab, img.affine, img.header), sys.argv[1])
PY
if "$ALICE" eval --pred "$T/pred" --labels "$T/truth" --out "$T/r2" > "$T/c.log" 2>&1; then
  fail "a truth holding id 99 was scored"
fi
grep -q "truth/case0000.nii.gz holds label ids .*: 99 (" "$T/c.log" ||
  { cat "$T/c.log"; fail "the error does not name the truth file and id 99"; }
echo "ok: unknown ids in a truth refused"
# --out into a folder that does not exist: refused before scoring
if "$ALICE" eval --pred "$T/pred" --labels "$T/truth" --out "$T/no/such/r" --allow-unknown-labels \
     > "$T/d.log" 2>&1; then fail "--out into a missing folder succeeded"; fi
grep -q "eval: --out .*/no/such/r: the folder .*/no/such does not exist" "$T/d.log" ||
  { cat "$T/d.log"; fail "no early error for the missing --out folder"; }
grep -q "case0000 " "$T/d.log" && fail "cases were scored before the --out folder was checked"
echo "ok: a missing --out folder refused before scoring"
# a value that is no id at all: named with its voxel's (x, y, z)
mkdir -p "$T/predf"
"$PYTHON" - "$T/truth/case0000.nii.gz" "$T/predf/case0000.nii.gz" <<'PY'
import sys, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
lab = np.asanyarray(img.dataobj).astype(np.float32)
lab[1, 2, 3] = 5.5
nib.save(nib.Nifti1Image(lab, img.affine), sys.argv[2])
PY
if "$ALICE" eval --pred "$T/predf" --labels "$T/truth" --out "$T/r4" > "$T/f.log" 2>&1; then
  fail "a prediction holding 5.5 was scored"
fi
grep -q "predf/case0000.nii.gz: voxel (1, 2, 3) holds 5.5, not an organ id" "$T/f.log" ||
  { cat "$T/f.log"; fail "the error does not name the voxel as (x, y, z)"; }
echo "ok: a value that is no label id is named with its voxel (x, y, z)"
# a truth case without a prediction: skipped, named in results.h5's skipped_cases, and
# analysis/tables.py warns that its means lack it
"$ALICE" phantom --out "$T/ph2" --cases 2 --size small --seed 6 > /dev/null
mkdir -p "$T/pred2"
cp "$T/ph2/labelsTr/case0000.nii.gz" "$T/pred2/"
"$ALICE" eval --pred "$T/pred2" --labels "$T/ph2/labelsTr" --out "$T/r3" > "$T/e.log" 2>&1 ||
  { cat "$T/e.log"; fail "eval with one prediction missing"; }
"$PYTHON" - "$T/r3.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1]) as h:
    sk = h.attrs["skipped_cases"]
    sk = sk.decode() if isinstance(sk, bytes) else sk
    names = [c.decode() for c in h["case_names"][:]]
assert sk == "case0001" and names == ["case0000"], (sk, names)
PY
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
"$PYTHON" "$ROOT/analysis/tables.py" m="$T/r3.h5" --format md > "$T/t.md" 2> "$T/t.err" ||
  { cat "$T/t.err"; fail "tables.py on results with a skipped case"; }
grep -q "r3.h5: 1 case(s) of the truth had no prediction and are not in its means (case0001)" \
  "$T/t.err" || { cat "$T/t.err"; fail "tables.py did not warn about the skipped case"; }
echo "ok: a case without a prediction is recorded in skipped_cases and tables.py warns"

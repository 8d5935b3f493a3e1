#!/usr/bin/env bash
# Predictions of two models for one fold's cases (an alice infer into a reused --out that
# stopped part-way leaves the older model's files beside the newer's) were scored as one model
# without a word: alice eval --data now warns, naming the fold and each checkpoint. A
# cross-validation's folder (one checkpoint per fold, as slurm/infer.sbatch writes it), one
# checkpoint, or predictions that name none (another tool's) give no warning; with --labels,
# which has no folds, several checkpoints are listed as information.
set -u
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$ALICE" ] || { echo "skip: $ALICE not built"; exit 77; }
"$PYTHON" -c 'import nibabel, h5py' 2>/dev/null ||
  { echo "skip: nibabel or h5py missing"; exit 77; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$ALICE" phantom --out "$W/ph" --cases 3 --size small > /dev/null 2>&1 || fail "phantom"
"$ALICE" pack --input "$W/ph" --out "$W/data.h5" spacing=4,4,4 num_folds=2 > /dev/null 2>&1 ||
  fail "pack"
a="alice infer: runs/a/ckpt_best.h5 (step 40)" b="alice infer: runs/b/ckpt_9.h5 (step 9)"
# predictions (the labels, on their source grids) described by a source per fold: fold 0's
# cases take the first, fold 1's the second; "split" gives fold 0's cases one each
describe() {  # folder, fold-0 source, fold-1 source, split fold 0 (0|1)
  mkdir -p "$1"
  "$PYTHON" - "$W/ph/labelsTr" "$W/data.h5" "$@" <<'PY' || fail "could not write predictions"
import sys, h5py, nibabel as nib
src, data, dst, first, second, split = sys.argv[1:]
with h5py.File(data, "r") as f:
    folds = {n: int(f["cases"][n].attrs["fold"]) for n in f["cases"]}
assert sorted(folds.values()) == [0, 0, 1], folds
seen0 = 0
for case, fold in sorted(folds.items()):
    text = first if fold == 0 else second
    if fold == 0:
        text = second if split == "1" and seen0 else first
        seen0 += 1
    img = nib.load(f"{src}/{case}.nii.gz")
    img.header.extensions.clear()   # alice phantom's own description
    img.header["descrip"] = text.encode()
    nib.save(img, f"{dst}/{case}.nii.gz")
PY
}
describe "$W/mixed" "$a" "$b" 1      # fold 0: a and b, fold 1: b
describe "$W/cv" "$a" "$b" 0         # fold 0: a, fold 1: b (a cross-validation)
describe "$W/one" "$a" "$a" 0
describe "$W/foreign" "nnU-Net" "nnU-Net" 0
for d in mixed cv one foreign; do
  "$ALICE" eval --pred "$W/$d" --data "$W/data.h5" --out "$W/res_$d" > "$W/$d.log" 2>&1 ||
    { cat "$W/$d.log"; fail "eval of $d"; }
done
want="the predictions in $W/mixed of fold 0's cases come from 2 checkpoints ($a; $b)"
grep -qF "warning: eval: $want" "$W/mixed.log" ||
  { cat "$W/mixed.log"; fail "no warning for one fold's predictions of two models"; }
for d in cv one foreign; do
  ! grep -q "come from .* checkpoints" "$W/$d.log" || { cat "$W/$d.log"; fail "a note for $d"; }
done
"$ALICE" eval --pred "$W/cv" --labels "$W/ph/labelsTr" --out "$W/res_labels" \
  > "$W/labels.log" 2>&1 || { cat "$W/labels.log"; fail "eval --labels of cv"; }
line=$(grep -F "eval: the predictions in $W/cv come from 2 checkpoints (" "$W/labels.log")
[[ $line == *"$a"* && $line == *"$b"* ]] &&
  ! grep -q "warning: eval: the predictions" "$W/labels.log" ||
  { cat "$W/labels.log"; fail "--labels: the checkpoints not listed, or warned about"; }
echo "ok: one fold's predictions of two models warned about; a cross-validation's, one model's" \
  "or another tool's not; listed under --labels"

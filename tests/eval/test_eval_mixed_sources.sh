#!/usr/bin/env bash
# Predictions of two models in one folder (an alice infer into a reused --out that stopped
# part-way leaves the older model's files beside the newer's) were scored as one model without
# a word: alice eval now warns, naming the folder and each checkpoint; one checkpoint, or
# predictions that name none (another tool's), give no warning.
set -u
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$ALICE" ] || { echo "skip: $ALICE not built"; exit 77; }
"$PYTHON" -c 'import nibabel' 2>/dev/null || { echo "skip: nibabel missing"; exit 77; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$ALICE" phantom --out "$W/ph" --cases 2 --size small > /dev/null 2>&1 || fail "phantom"
describe() {  # folder, description of case0000, of case0001 (as alice infer writes its source)
  mkdir -p "$1"
  "$PYTHON" - "$W/ph/labelsTr" "$1" "$2" "$3" <<'PY' || fail "could not write predictions"
import sys, nibabel as nib
src, dst, first, second = sys.argv[1:]
for case, text in (("case0000", first), ("case0001", second)):
    img = nib.load(f"{src}/{case}.nii.gz")
    img.header.extensions.clear()   # alice phantom's own description
    img.header["descrip"] = text.encode()
    nib.save(img, f"{dst}/{case}.nii.gz")
PY
}
a="alice infer: runs/a/ckpt_best.h5 (step 40)" b="alice infer: runs/b/ckpt_9.h5 (step 9)"
describe "$W/mixed" "$a" "$b"
describe "$W/one" "$a" "$a"
describe "$W/foreign" "nnU-Net" "nnU-Net"
for d in mixed one foreign; do
  "$ALICE" eval --pred "$W/$d" --labels "$W/ph/labelsTr" --out "$W/res_$d" > "$W/$d.log" 2>&1 ||
    { cat "$W/$d.log"; fail "eval of $d"; }
done
want="the predictions in $W/mixed come from 2 checkpoints (alice infer: runs/a/ckpt_best.h5"
want+=" (step 40); alice infer: runs/b/ckpt_9.h5 (step 9))"
grep -qF "$want" "$W/mixed.log" ||
  { cat "$W/mixed.log"; fail "no warning for predictions of two models"; }
for d in one foreign; do
  ! grep -q "come from .* checkpoints" "$W/$d.log" || fail "a warning for the $d folder"
done
echo "ok: predictions of two models warned about, of one model (or none named) not"

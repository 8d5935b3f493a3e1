#!/usr/bin/env bash
# alice eval's sources of truth for predictions on each case's source grid (what alice infer
# writes), on BTCV-named phantoms (imgXXXX.nii.gz with labelXXXX.nii.gz): the "predictions" are
# the source labels themselves, renamed to the case names, so every present organ must score
# DSC 1 and NSD 1:
#  - --labels DIR with BTCV names: labelXXXX is the truth of case imgXXXX;
#  - --data dataset.h5: scored against each case's source label (its recorded path);
#  - --data from another working directory, the data set packed from a relative path: the
#    source labels found all the same (pack records absolute paths);
#  - --data with the source labels moved away: refused, naming the missing file, since the
#    packing resampled the cases (the packed label mapped back would score a perfect prediction
#    below 1); with --allow-packed-truth the packed label mapped back to the source grid, with a
#    warning, every organ still DSC >= 0.8 (resampling to 3 mm and back);
#  - results.h5 /truth_sources names what each case was scored against;
#  - a prediction that names no case is not scored, with a warning naming it;
#  - --data with --cases fold:K scores fold K's cases alone (no warning for the other fold's
#    case lacking a prediction; case_selection recorded); a fold without labelled cases and
#    --cases with --labels are refused;
#  - BTCV-named cases scored with label_set = flare (BTCV numbers its organs its own way):
#    a warning; with label_set = btcv none;
#  - the threads key sets eval's OpenMP threads (it had been read and ignored).
set -euo pipefail
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c 'import csv' || exit 77
# physical path: pack records its sources through realpath, and /tmp may be a symbolic link
T=$(cd "$(mktemp -d /tmp/alice_eval_sources.XXXXXX)" && pwd -P); trap 'rm -rf "$T"' EXIT
"$ALICE" phantom --out "$T/ph" --cases 2 --size small --seed 3 > /dev/null
mkdir -p "$T/btcv" "$T/pred"
for i in 0 1; do
  cp "$T/ph/imagesTr/case000${i}_0000.nii.gz" "$T/btcv/img000$i.nii.gz"
  cp "$T/ph/labelsTr/case000$i.nii.gz" "$T/btcv/label000$i.nii.gz"
  cp "$T/ph/labelsTr/case000$i.nii.gz" "$T/pred/img000$i.nii.gz"
done
(cd "$T" && "$ALICE" pack --input btcv --out ds.h5 spacing=3,3,3 > /dev/null)   # relative
check() {  # results stem, min DSC for organs of 500+ voxels (1: every present organ exactly 1)
  "$PYTHON" - "$1.csv" "$2" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = sorted({r["case"] for r in rows})
assert cases == ["img0000", "img0001"], cases
worst = min(float(r["dsc"]) for r in rows)
assert worst >= float(sys.argv[2]) - 1e-9, "worst DSC %.4f" % worst
worst_nsd = min(float(r["nsd"]) for r in rows)
if float(sys.argv[2]) == 1:   # the truth itself: every surface within tolerance too
    assert worst_nsd >= 1 - 1e-9, "worst NSD %.4f" % worst_nsd
print("%s: %d rows, worst DSC %.4f, worst NSD %.4f" % (sys.argv[1], len(rows), worst, worst_nsd))
PY
}
cp "$T/pred/img0000.nii.gz" "$T/pred/stray.nii.gz"   # names no case: not scored, said
"$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --out "$T/r_labels" label_set=flare > "$T/a.log" 2>&1 ||
  { cat "$T/a.log"; echo "FAIL: eval --labels on BTCV names"; exit 1; }
check "$T/r_labels" 1
grep -q "1 prediction(s) in $T/pred name no case of $T/btcv and are not scored: stray.nii.gz" \
  "$T/a.log" || { cat "$T/a.log"; echo "FAIL: a stray prediction not named"; exit 1; }
rm "$T/pred/stray.nii.gz"
grep -q "the cases are named as BTCV's (imgXXXX), but label_set = flare" "$T/a.log" ||
  { echo "FAIL: BTCV-named cases scored with label_set = flare without a warning"; exit 1; }
"$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --out "$T/r_btcv" label_set=btcv threads=1 \
  > "$T/a2.log" 2>&1
grep -q "eval: 2 case(s) on 1 rank(s) x 1 OpenMP thread(s)" "$T/a2.log" ||
  { cat "$T/a2.log"; echo "FAIL: eval did not take threads=1"; exit 1; }
grep -q "named as BTCV" "$T/a2.log" && { echo "FAIL: a warning with label_set = btcv"; exit 1; }
sources() {  # results stem, expected truth_sources regex (every case)
  "$PYTHON" - "$1.h5" "$2" <<'PY'
import re, sys, h5py
got = [s.decode() for s in h5py.File(sys.argv[1], "r")["truth_sources"][()]]
assert len(got) == 2 and all(re.search(sys.argv[2], g) for g in got), got
print("truth_sources:", got)
PY
}
# --cases fold:K: the truth is fold K's labelled cases alone (the held-out fold alice infer
# predicted), so the other fold's case, without a prediction here, is neither warned about nor
# listed as skipped; results.h5 records the selection
read -r fold0 fold1 < <("$PYTHON" -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r"); n = [s.decode() for s in f["index/name"][()]]
d = dict(zip(n, f["index/fold"][()])); print(d["img0000"], d["img0001"])' "$T/ds.h5")
[ "$fold0" != "$fold1" ] || { echo "FAIL: the test needs the two cases in two folds"; exit 1; }
mkdir -p "$T/pred_fold"
cp "$T/pred/img0000.nii.gz" "$T/pred_fold/"
"$ALICE" eval --pred "$T/pred_fold" --data "$T/ds.h5" --cases "fold:$fold0" --out "$T/r_fold" \
  label_set=flare > "$T/f.log" 2>&1 || { cat "$T/f.log"; echo "FAIL: eval --cases fold:K"; exit 1; }
! grep -q "no prediction" "$T/f.log" ||
  { cat "$T/f.log"; echo "FAIL: a case of another fold warned about under --cases"; exit 1; }
"$PYTHON" - "$T/r_fold.h5" "fold:$fold0" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
attr = lambda k: f.attrs[k].decode()   # fixed-length strings: h5py gives bytes
names = [s.decode() for s in f["case_names"][()]]
assert names == ["img0000"], names
assert attr("case_selection") == sys.argv[2], attr("case_selection")
assert attr("skipped_cases") == "", attr("skipped_cases")
assert (f["dsc"][()][f["truth_voxels"][()] > 0] == 1).all()
PY
"$ALICE" eval --pred "$T/pred_fold" --data "$T/ds.h5" --out "$T/r_all" label_set=flare \
  > "$T/g.log" 2>&1 || { cat "$T/g.log"; echo "FAIL: eval --cases all"; exit 1; }
grep -q "no prediction for case img0001" "$T/g.log" ||
  { cat "$T/g.log"; echo "FAIL: without --cases the case lacking a prediction not warned"; exit 1; }
"$PYTHON" -c 'import sys, h5py
f = h5py.File(sys.argv[1], "r")
assert f.attrs["case_selection"] == b"all" and f.attrs["skipped_cases"] == b"img0001"' "$T/r_all.h5"
empty=0; while [ "$empty" = "$fold0" ] || [ "$empty" = "$fold1" ]; do empty=$((empty + 1)); done
if "$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --cases "fold:$empty" --out "$T/r_none" \
    > "$T/h.log" 2>&1; then echo "FAIL: a fold without labelled cases scored"; exit 1; fi
grep -q "no labelled case in fold $empty" "$T/h.log" ||
  { cat "$T/h.log"; echo "FAIL: no message"; exit 1; }
if "$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --cases fold:0 --out "$T/r_none" \
    > "$T/i.log" 2>&1; then echo "FAIL: --cases with --labels accepted"; exit 1; fi
grep -q "needs --data" "$T/i.log" || { cat "$T/i.log"; echo "FAIL: no message"; exit 1; }
mkdir -p "$T/elsewhere"
(cd "$T/elsewhere" && "$ALICE" eval --pred ../pred --data ../ds.h5 --out ../r_data \
  label_set=flare > "$T/b.log" 2>&1) ||
  { cat "$T/b.log"; echo "FAIL: eval --data with predictions on the source grid"; exit 1; }
check "$T/r_data" 1
sources "$T/r_data" "^$T/btcv/label000[01].nii.gz$"
mv "$T/btcv" "$T/btcv.moved"
if "$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --out "$T/r_refused" label_set=flare \
    > "$T/c0.log" 2>&1; then echo "FAIL: eval scored against a resampled truth unasked"; exit 1; fi
grep -q "source label $T/btcv/label000[01].nii.gz is not readable.*--allow-packed-truth" \
  "$T/c0.log" || { cat "$T/c0.log"; echo "FAIL: no clear refusal"; exit 1; }
[ ! -e "$T/r_refused.h5" ] || { echo "FAIL: a refused eval wrote results"; exit 1; }
"$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --out "$T/r_mapped" label_set=flare \
  --allow-packed-truth > "$T/c.log" 2>&1 ||
  { cat "$T/c.log"; echo "FAIL: eval --data --allow-packed-truth without the source labels"
    exit 1; }
grep -q "scored against .*packed label mapped back" "$T/c.log" || { echo "FAIL: no warning"; exit 1; }
check "$T/r_mapped" 0.8
sources "$T/r_mapped" "ds.h5 \\(case img000[01], packed label mapped back to the source grid\\)$"
"$ALICE" info "$T/r_mapped.h5" > "$T/info.txt"
grep -q "against    0 label file(s), 2 packed label(s) mapped back to the source grid" \
  "$T/info.txt" ||
  { cat "$T/info.txt"; echo "FAIL: alice info does not count the mapped truth"; exit 1; }
echo "ok: BTCV names, --data against the source labels (from another folder), refused without"
echo "    them unless --allow-packed-truth, then mapped back; truth_sources says which"

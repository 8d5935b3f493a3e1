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
#  - BTCV-named cases scored with label_set = flare (BTCV numbers its organs its own way):
#    a warning; with label_set = btcv none.
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
"$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --out "$T/r_btcv" label_set=btcv > "$T/a2.log" 2>&1
grep -q "named as BTCV" "$T/a2.log" && { echo "FAIL: a warning with label_set = btcv"; exit 1; }
sources() {  # results stem, expected truth_sources regex (every case)
  "$PYTHON" - "$1.h5" "$2" <<'PY'
import re, sys, h5py
got = [s.decode() for s in h5py.File(sys.argv[1], "r")["truth_sources"][()]]
assert len(got) == 2 and all(re.search(sys.argv[2], g) for g in got), got
print("truth_sources:", got)
PY
}
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
echo "ok: BTCV names, --data against the source labels (from another folder), refused without"
echo "    them unless --allow-packed-truth, then mapped back; truth_sources says which"

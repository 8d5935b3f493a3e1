#!/usr/bin/env bash
# alice eval's sources of truth for predictions on each case's source grid (what alice infer
# writes), on BTCV-named phantoms (imgXXXX.nii.gz with labelXXXX.nii.gz): the "predictions" are
# the source labels themselves, renamed to the case names, so every present organ must score
# DSC 1 and NSD 1:
#  - --labels DIR with BTCV names: labelXXXX is the truth of case imgXXXX;
#  - --data dataset.h5: scored against each case's source label (its recorded path);
#  - --data with the source labels moved away: the packed label mapped back to the source grid,
#    with a warning; every organ still scores DSC >= 0.8 (resampling to 3 mm and back);
#  - BTCV-named cases scored with label_set = flare (BTCV numbers its organs its own way):
#    a warning; with label_set = btcv none.
set -euo pipefail
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c 'import csv' || exit 77
T=$(mktemp -d /tmp/alice_eval_sources.XXXXXX); trap 'rm -rf "$T"' EXIT
"$ALICE" phantom --out "$T/ph" --cases 2 --size small --seed 3 > /dev/null
mkdir -p "$T/btcv" "$T/pred"
for i in 0 1; do
  cp "$T/ph/imagesTr/case000${i}_0000.nii.gz" "$T/btcv/img000$i.nii.gz"
  cp "$T/ph/labelsTr/case000$i.nii.gz" "$T/btcv/label000$i.nii.gz"
  cp "$T/ph/labelsTr/case000$i.nii.gz" "$T/pred/img000$i.nii.gz"
done
"$ALICE" pack --input "$T/btcv" --out "$T/ds.h5" spacing=3,3,3 > /dev/null
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
"$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --out "$T/r_labels" label_set=flare > "$T/a.log" 2>&1 ||
  { cat "$T/a.log"; echo "FAIL: eval --labels on BTCV names"; exit 1; }
check "$T/r_labels" 1
grep -q "the cases are named as BTCV's (imgXXXX), but label_set = flare" "$T/a.log" ||
  { echo "FAIL: BTCV-named cases scored with label_set = flare without a warning"; exit 1; }
"$ALICE" eval --pred "$T/pred" --labels "$T/btcv" --out "$T/r_btcv" label_set=btcv > "$T/a2.log" 2>&1
grep -q "named as BTCV" "$T/a2.log" && { echo "FAIL: a warning with label_set = btcv"; exit 1; }
"$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --out "$T/r_data" label_set=flare > "$T/b.log" 2>&1 ||
  { cat "$T/b.log"; echo "FAIL: eval --data with predictions on the source grid"; exit 1; }
check "$T/r_data" 1
mv "$T/btcv" "$T/btcv.moved"
"$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --out "$T/r_mapped" label_set=flare > "$T/c.log" 2>&1 ||
  { cat "$T/c.log"; echo "FAIL: eval --data without the source labels"; exit 1; }
grep -q "scored against .*packed label mapped back" "$T/c.log" || { echo "FAIL: no warning"; exit 1; }
check "$T/r_mapped" 0.8
echo "ok: BTCV names, --data against the source labels, and mapped back without them"

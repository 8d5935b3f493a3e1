#!/bin/bash
# Tiny end-to-end downstream run (issue 5): phantoms -> pack -> tiny Alice pre-training (patch
# 16, the UNETR encoder shape) -> `alice finetune` from its checkpoint, which must load EVERY
# encoder tensor (log line "loaded N of N vit.* tensors ... (0 initialised at random)") and
# lower the DiceCE loss (mean of the first 5 metrics.csv rows > mean of the last 5) -> `alice
# infer` on the held-out fold, whose NIfTI predictions must have the shape and affine of the
# source images (nibabel) and hold only labels 0..13. A pretrained checkpoint with another head
# count, a fine-tuning checkpoint as pretrained, or a fold the data set does not have (packed
# with 2), or a checkpoint missing one encoder tensor, or one whose encoder tensor's data was
# zeroed (its crc32), is refused before any step, while fold 5
# of a data set packed with 6 folds trains; alice infer refuses a pre-training checkpoint, data
# packed at another spacing than the fine-tuning's (so does a fine-tuning resumed on such data),
# and an --out that is a file; predictions carry their sources' sform/qform codes (a source
# with neither included).
set -u
ALICE=${ALICE:-bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -x "$ALICE" ]; then echo "skip: $ALICE is not built"; exit 77; fi
if ! "$PYTHON" -c 'import nibabel, numpy' 2>/dev/null; then echo "skip: $PYTHON lacks nibabel"; exit 77; fi
T=$(mktemp -d /tmp/alice_finetune.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# shellcheck source=../lib/steps.sh
. "$ROOT/tests/lib/steps.sh"

run "$ALICE" phantom --out "$T/ph" --cases 4 --size small --seed 5
run "$ALICE" pack --input "$T/ph" --out "$T/ds.h5" spacing=3,3,3 num_folds=2 seed=1
ENC="patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48"
run "$ALICE" pretrain --config "$ROOT/jobs/pretrain_tiny.cfg" data="$T/ds.h5" run_dir="$T/pt" \
    $ENC crop=32,32,32 dec_dim=12 dec_heads=2 dec_mlp_dim=24 casa_dim=12 steps=2 warmup=1 ckpt_every=2
CKPT="$T/pt/ckpt_2.h5"
[ -f "$CKPT" ] || fail "pre-training wrote no $CKPT"

run "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" data="$T/ds.h5" run_dir="$T/ft" \
    $ENC pretrained="$CKPT" fold=0
cp "$T/last.log" "$T/ft.log"
grep -E "loaded [0-9]+ of [0-9]+ vit" "$T/ft.log" || fail "no encoder loading line in the log"
line=$(grep -E "loaded [0-9]+ of [0-9]+ vit" "$T/ft.log")
loaded=$(echo "$line" | sed -E 's/.*loaded ([0-9]+) of ([0-9]+).*/\1/')
total=$(echo "$line" | sed -E 's/.*loaded ([0-9]+) of ([0-9]+).*/\2/')
[ "$loaded" = "$total" ] && [ "$loaded" -gt 0 ] || fail "loaded $loaded of $total encoder tensors"
echo "$line" | grep -q "(0 initialised at random)" || fail "some encoder tensors were initialised at random"
for f in metrics.csv val.csv ckpt_best.h5 ckpt_30.h5; do [ -f "$T/ft/$f" ] || fail "missing $T/ft/$f"; done
# pretrained = ... refused before any step: another head count (no tensor shape shows it), a
# fine-tuning checkpoint instead of a pre-training one
refused() {  # expected-message, args...
  local want=$1; shift
  if "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" data="$T/ds.h5" fold=0 "$@" > "$T/bad.log" 2>&1; then
    fail "finetune accepted: $*"; fi
  grep -q "$want" "$T/bad.log" || { tail -3 "$T/bad.log"; fail "no message '$want' for: $*"; }
  echo "ok: refused: $(grep -m1 error "$T/bad.log" | cut -c1-140)"
}
refused "was pre-trained with heads = 2, this run has heads = 4" run_dir="$T/bad1" $ENC heads=4 pretrained="$CKPT"
refused "is a finetune checkpoint, not a pre-training one" run_dir="$T/bad2" $ENC pretrained="$T/ft/ckpt_best.h5"
# an encoder tensor's data zeroed in a pre-training checkpoint that still opens: its crc32
cp "$CKPT" "$T/zeroed.h5"
"$PYTHON" - "$T/zeroed.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    d = f["params/encoder.patch_embedding.patch_embeddings.weight"]
    where, size = d.id.get_offset(), d.id.get_storage_size()
with open(sys.argv[1], "r+b") as f:
    f.seek(where)
    f.write(b"\0" * size)
PY
refused "tensor params/encoder.patch_embedding.patch_embeddings.weight fails its CRC-32" \
  run_dir="$T/bad6" $ENC pretrained="$T/zeroed.h5"
# a NaN in an encoder tensor whose crc32 was written over it (another tool's edit): refused
# naming the tensor, not loaded into a run that stops at its first step blaming lr
cp "$CKPT" "$T/nan.h5"
"$PYTHON" - "$T/nan.h5" <<'PY' || fail "could not write the NaN checkpoint"
import sys, zlib, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    d = f["params/encoder.patch_embedding.patch_embeddings.weight"]
    v = d[()]
    v.flat[3] = np.nan
    d[...] = v
    d.attrs["crc32"] = zlib.crc32(np.asarray(v, "<f4").tobytes())
PY
refused "patch_embeddings.weight holds 1 non-finite value(s) (NaN or Inf; the first at element 3)" \
  run_dir="$T/bad7" $ENC pretrained="$T/nan.h5"
refused "fold = 3 but .*ds.h5 has 2 folds" run_dir="$T/bad3" $ENC pretrained="$CKPT" fold=3
# every labelled case in the validation fold: named as such (not "the data set has none")
run "$ALICE" pack --input "$T/ph" --out "$T/ds1.h5" spacing=3,3,3 num_folds=1 seed=1
refused "all 4 of the data set's are in it: choose another fold, set fold=-1" \
  run_dir="$T/bad5" $ENC data="$T/ds1.h5"
[ ! -e "$T/bad3" ] ||
  fail "a fold the data set does not have: run_dir was written before the refusal"
# the folds of a packed data set are its packing's, not num_folds' (default 5): fold 5 of a
# 6-fold packing trains and validates on its case
run "$ALICE" phantom --out "$T/ph6" --cases 6 --size small --seed 7
run "$ALICE" pack --input "$T/ph6" --out "$T/ds6.h5" spacing=3,3,3 num_folds=6 seed=1
run "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" data="$T/ds6.h5" run_dir="$T/ft6" \
    $ENC fold=5 steps=1 val_every=1 ckpt_every=1
grep -q "validating on 1 (fold 5)" "$T/last.log" || fail "fold 5 of a 6-fold data set not used"
cp "$CKPT" "$T/short.h5"
"$PYTHON" -c "import h5py,sys; f=h5py.File(sys.argv[1],'a'); del f['params/encoder.norm.weight']" "$T/short.h5"
refused "holds 47 of the encoder's 48 tensors" run_dir="$T/bad4" $ENC pretrained="$T/short.h5"
if "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --out "$T/bad_pred" > "$T/bad.log" 2>&1; then
  fail "alice infer accepted a pre-training checkpoint"; fi
grep -q "is a pretrain checkpoint: alice infer needs a fine-tuned UNETR" "$T/bad.log" ||
  { tail -3 "$T/bad.log"; fail "alice infer with a pre-training checkpoint: no clear message"; }

run "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds.h5" --cases fold:0 --out "$T/pred"
cat "$T/last.log" | grep -E "case|done"
# the checkpoint records the spacing it was fine-tuned at (3 mm); data packed at 4 mm is refused
# (a silent loss of accuracy otherwise) unless --allow-spacing-mismatch; an --out that is a file
# is refused before any prediction
"$PYTHON" -c "import h5py,sys; s=list(h5py.File(sys.argv[1],'r').attrs['data_spacing']); \
assert s == [3.0, 3.0, 3.0], s" "$T/ft/ckpt_best.h5" || fail "ckpt_best.h5 lacks data_spacing 3,3,3"
"$ALICE" info "$T/ft/ckpt_best.h5" | grep -q "packed at 3,3,3 mm" ||
  fail "alice info does not show the checkpoint's data spacing"
run "$ALICE" pack --input "$T/ph" --out "$T/ds4.h5" spacing=4,4,4 num_folds=2 seed=1
# a fine-tuning run resumed on data repacked at another spacing is refused, run_dir untouched
cp -r "$T/ft" "$T/ft.before"
refused "ds4.h5 is packed at 4,4,4 mm but .*ckpt_30.h5, the checkpoint this run resumes, was \
trained on data at 3,3,3 mm" run_dir="$T/ft" $ENC data="$T/ds4.h5" steps=31
diff -r -x .alice.lock "$T/ft" "$T/ft.before" > /dev/null ||
  fail "the refused resume changed its run_dir"
if "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds4.h5" --cases fold:0 \
    --out "$T/pred4" > "$T/bad.log" 2>&1; then fail "infer accepted data at another spacing"; fi
grep -q "is packed at 4,4,4 mm but .* was fine-tuned on data at 3,3,3 mm" "$T/bad.log" ||
  { tail -3 "$T/bad.log"; fail "no clear message for the spacing mismatch"; }
run "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds4.h5" --cases fold:0 \
    --out "$T/pred4" --allow-spacing-mismatch
grep -q "predicting anyway" "$T/last.log" || fail "no warning with --allow-spacing-mismatch"
touch "$T/afile"
if "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds.h5" --cases fold:0 \
    --out "$T/afile" > "$T/bad.log" 2>&1; then fail "infer accepted a file as --out"; fi
grep -q "a file of that name exists" "$T/bad.log" ||
  { tail -3 "$T/bad.log"; fail "no clear message for a file as --out"; }
echo "ok: spacing recorded and checked; a file as --out refused"
# the network and its input are the checkpoint's: crop changes no weight's shape (the load
# would not refuse it) but another window, token grid and position table ran silently; a key
# given at the checkpoint's own value, and an inference key, are fine
stored_crop=$("$PYTHON" -c "import h5py,re,sys; t=h5py.File(sys.argv[1],'r').attrs['config']; \
t=t.decode() if isinstance(t, bytes) else str(t); print(re.search(r'^crop *= *([0-9,]+)', t, re.M).group(1))" \
  "$T/ft/ckpt_best.h5") || fail "no crop in ckpt_best.h5's config"
[ "$stored_crop" != 48,48,48 ] || fail "the test's refused crop is the stored one"
for kv in crop=48,48,48 window_lo=-500 num_classes=9; do
  if "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds.h5" --cases fold:0 \
      --out "$T/pred_kv" "$kv" > "$T/bad.log" 2>&1; then fail "infer accepted the override $kv"; fi
  grep -q "alice infer: ${kv%%=*} = .*, but $T/ft/ckpt_best.h5 was fine-tuned with ${kv%%=*} = " "$T/bad.log" ||
    { tail -3 "$T/bad.log"; fail "no clear message for the override $kv"; }
done
# keys inference reads nowhere (a training key, fold beside --cases, a pre-training key): refused,
# they had been accepted and ignored
for kv in lr=1 fold=1 mask_ratio=0.3; do
  if "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds.h5" --cases fold:0 \
      --out "$T/pred_kv" "$kv" > "$T/bad.log" 2>&1; then fail "infer accepted $kv"; fi
  grep -q "alice infer: '$kv' sets a key of .*, which alice infer does not use" "$T/bad.log" ||
    { tail -3 "$T/bad.log"; fail "no clear message for the unused $kv"; }
done
[ ! -e "$T/pred_kv" ] || fail "a refused infer created its --out"
run "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/ds.h5" --cases fold:0 \
  --out "$T/pred_same" sw_overlap=0.25 crop="$stored_crop"
echo "ok: overrides of the network's keys refused (crop, window_lo, num_classes); inference keys taken"
# the predictions carry their sources' sform/qform codes: a source with neither (pixdim alone,
# which nibabel reads x flipped) and one with an "aligned" sform only each open, in nibabel,
# exactly where their source does
mkdir -p "$T/codes/imagesTr"
"$PYTHON" - "$T/ph/imagesTr/case0000_0000.nii.gz" "$T/codes/imagesTr" <<'PY' || fail "codes inputs"
import sys, nibabel as nib, numpy as np
src, out = sys.argv[1:3]
img = nib.load(src)
data = np.asarray(img.dataobj)
m1 = nib.Nifti1Image(data, None)
m1.header.set_zooms(img.header.get_zooms()[:3])
m1.set_qform(None, code=0)
m1.set_sform(None, code=0)
nib.save(m1, f"{out}/pixdimonly_0000.nii.gz")
al = nib.Nifti1Image(data, img.affine)
al.set_sform(img.affine, code=2)
al.set_qform(None, code=0)
nib.save(al, f"{out}/aligned_0000.nii.gz")
me = nib.Nifti1Image(data, np.diag([1e-3, 1e-3, 1e-3, 1.0]) @ img.affine)
me.header.set_xyzt_units(xyz="meter")
nib.save(me, f"{out}/metres_0000.nii.gz")
PY
run "$ALICE" pack --input "$T/codes" --out "$T/codes.h5" spacing=3,3,3 num_folds=1 seed=1
grep -q "case pixdimonly: .* has neither sform nor qform" "$T/last.log" ||
  fail "pack gave no warning for the source without sform and qform"
run "$ALICE" infer --checkpoint "$T/ft/ckpt_best.h5" --data "$T/codes.h5" --out "$T/pred_codes"
"$PYTHON" - "$T" <<'PY' || fail "prediction headers against their sources"
import sys, nibabel as nib, numpy as np
T = sys.argv[1]
for case, codes in (("pixdimonly", (0, 0)), ("aligned", (2, 0)), ("metres", None)):
    src = nib.load(f"{T}/codes/imagesTr/{case}_0000.nii.gz")
    codes = codes or (int(src.header["sform_code"]), int(src.header["qform_code"]))
    pred = nib.load(f"{T}/pred_codes/{case}.nii.gz")
    got = (int(pred.header["sform_code"]), int(pred.header["qform_code"]))
    assert got == codes, f"{case}: codes {got}, the source's {codes}"
    units = (src.header.get_xyzt_units()[0], pred.header.get_xyzt_units()[0])
    assert units[0] == units[1], f"{case}: the source in {units[0]}, the prediction in {units[1]}"
    assert pred.shape == src.shape and np.allclose(pred.affine, src.affine, atol=1e-4), \
        f"{case}: nibabel places the prediction at {pred.affine}, the source at {src.affine}"
    print(f"{case}: sform/qform codes {got} and unit {units[1]} as the source's, same nibabel "
          "affine")
PY

"$PYTHON" - "$T" <<'PY' || fail "python checks"
import csv, glob, os, sys
import h5py, nibabel as nib, numpy as np
T = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(T, "ft", "metrics.csv"))))
loss = np.array([float(r["loss"]) for r in rows])
first, last = loss[:5].mean(), loss[-5:].mean()
print("metrics.csv: %d rows, DiceCE loss first 5 %.4f -> last 5 %.4f" % (len(rows), first, last))
assert len(rows) == 30, "expected 30 rows"
assert last < first - 0.02, "the DiceCE loss did not go down"
for col in ("loss", "ce", "dice", "lr", "grad_norm", "ms_per_step", "samples_per_s"):
    assert col in rows[0], "metrics.csv lacks column " + col
val = list(csv.DictReader(open(os.path.join(T, "ft", "val.csv"))))
assert val and 0.0 <= float(val[-1]["mean_dice"]) <= 1.0, "val.csv: %r" % val
with h5py.File(os.path.join(T, "ds.h5"), "r") as f:   # fold 0 of the packing's index
    fold0 = sorted(n.decode().rstrip("\0") for n, k in zip(f["index/name"][()], f["index/fold"][()])
                   if k == 0)
preds = sorted(glob.glob(os.path.join(T, "pred", "*.nii.gz")))
assert preds, "alice infer wrote no predictions"
got = [os.path.basename(p)[:-len(".nii.gz")] for p in preds]
assert got == fold0, "--cases fold:0 predicted %s; the index's fold 0 is %s" % (got, fold0)
for p in preds:
    name = os.path.basename(p)[:-len(".nii.gz")]
    src = os.path.join(T, "ph", "imagesTr", name + "_0000.nii.gz")
    a, b = nib.load(p), nib.load(src)
    assert a.shape == b.shape, "%s: shape %s, source %s" % (name, a.shape, b.shape)
    assert np.allclose(a.affine, b.affine, atol=1e-4), "%s: affine\n%s\nvs source\n%s" % (name, a.affine, b.affine)
    d = np.asarray(a.dataobj)
    assert d.dtype == np.uint8 and d.max() <= 13, "%s: dtype %s max %d" % (name, d.dtype, d.max())
    print("%s: shape %s, affine equal to the source, labels %s" % (name, a.shape, np.unique(d).tolist()))
print("ok: %d predictions aligned with their source images" % len(preds))
PY
echo "PASS"

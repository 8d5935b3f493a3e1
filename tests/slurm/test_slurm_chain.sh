#!/usr/bin/env bash
# The whole workflow as one Slurm dependency chain (slurm/chain.sh) on the local cluster, on
# tiny phantoms (packed at 3 mm so sliding-window validation and inference stay quick):
# pack (2 ranks) -> pretrain (2 tasks) -> finetune (array over 2 folds) ->
# infer (array, aftercorr) -> eval. Waits for every job, then checks every output: the data
# set (h5py: cases and folds), the pre-training checkpoints (h5py: tensors and step), each
# fold's fine-tuning checkpoint, one prediction per case (nibabel: same shape and affine as
# the phantom's image) and results.csv (a DSC and NSD per case x organ, all in [0, 1]).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for cmd in phantom pack pretrain finetune infer eval; do require_alice_command "$cmd"; done
for cfg in pretrain_tiny finetune_tiny; do
  [ -r "$SLURM_TEST_REPO/jobs/$cfg.cfg" ] || { echo "FAIL: jobs/$cfg.cfg missing"; exit 1; }
done
slurm_test_cluster_up
tmp=$SLURM_TEST_TMP
run=$tmp/run
cases=4
folds=2
cd "$SLURM_TEST_REPO"
# The pre-trained encoder must have the UNETR's ViT shape: pre-train with the fine-tuning
# preset's encoder keys (so the test holds whatever the presets say), and a crop that fits the
# 3 mm volumes.
encoder=$(grep -E '^(patch|embed_dim|depth|heads|mlp_dim)[[:space:]]*=' jobs/finetune_tiny.cfg |
  sed -E 's/[[:space:]]*#.*//; s/[[:space:]]*=[[:space:]]*/=/' | tr '\n' ' ')

ALICE_GPUS=0 ALICE_BIN=$ALICE ALICE_SBATCH_OPTS="--time=15" ALICE_PHANTOM_SIZE=small \
  bash slurm/chain.sh --run-dir "$run" --input phantoms:$cases --folds $folds \
  --gpus-per-node 2 --cpus-per-task 1 --pack-tasks 2 --pack-args "spacing=3,3,3" \
  --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
  --pretrain-args "${CHAIN_PRETRAIN_ARGS:-steps=4 ckpt_every=2 crop=64,64,32 $encoder}" \
  --finetune-args "${CHAIN_FINETUNE_ARGS:-steps=4 ckpt_every=2 val_every=4}"
cat "$run/jobs.txt"

status=0
while read -r stage id; do
  states=$(slurm_wait_job "$id" 600) || { status=1; break; }
  while read -r jid state code restarts; do
    echo "$stage job $jid: $state exit $code restarts $restarts"
    [ "$state" = COMPLETED ] || status=1
  done <<<"$states"
done <"$run/jobs.txt"
show_logs() { for f in "$run"/logs/*.out; do echo "==== $f"; grep -v '^#' "$f" | tail -n 25; done; }
if [ $status != 0 ]; then
  show_logs; echo "FAIL: a job of the chain did not complete"; exit 1
fi

"$PYTHON" - "$run" $cases $folds <<'PY' || { show_logs; exit 1; }
import csv, glob, os, sys
import h5py, nibabel as nib, numpy as np

run, cases, folds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def fail(msg):
    sys.exit(f"FAIL: {msg}")

# Data set: every phantom packed.
with h5py.File(f"{run}/data/dataset.h5", "r") as f:
    groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
    print(f"dataset.h5: top level {sorted(f.keys())}")
    volumes = []
    f.visititems(lambda n, o: volumes.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 3 else None)
    if len(volumes) < cases:
        fail(f"dataset.h5 holds {len(volumes)} 3-D volumes, expected at least {cases}")

def check_ckpt(path):
    with h5py.File(path, "r") as f:
        tensors = []
        f.visititems(lambda n, o: tensors.append(n) if isinstance(o, h5py.Dataset) else None)
        if not tensors:
            fail(f"{path} holds no tensors")
        for n in tensors:
            a = f[n][...]
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                fail(f"{path}:{n} has non-finite values")
        print(f"{os.path.relpath(path, run)}: {len(tensors)} tensors, attrs {sorted(f.attrs)}")

pre = sorted(glob.glob(f"{run}/pretrain/ckpt_*.h5"))
if not pre:
    fail("no pre-training checkpoint")
for p in pre:
    check_ckpt(p)
for k in range(folds):
    ft = sorted(glob.glob(f"{run}/finetune/fold{k}/*.h5"))
    if not ft:
        fail(f"no fine-tuning checkpoint for fold {k}")
    check_ckpt(ft[-1])

# Predictions: one per phantom (each case is in exactly one held-out fold), on the image grid.
preds = sorted(glob.glob(f"{run}/predictions/*.nii*"))
images = sorted(glob.glob(f"{run}/data/phantoms/imagesTr/*_0000.nii*"))
if len(preds) != cases or len(images) != cases:
    fail(f"{len(preds)} predictions and {len(images)} phantom images, expected {cases} each")
for img_path in images:
    case = os.path.basename(img_path).split("_0000")[0]
    match = [p for p in preds if os.path.basename(p).split(".nii")[0] == case]
    if not match:
        fail(f"no prediction for {case}")
    img, pred = nib.load(img_path), nib.load(match[0])
    if img.shape != pred.shape or not np.allclose(img.affine, pred.affine, atol=1e-3):
        fail(f"{case}: prediction shape/affine {pred.shape} differs from the image's {img.shape}")
    labels = np.unique(np.asarray(pred.dataobj))
    if labels.min() < 0 or labels.max() > 13:
        fail(f"{case}: prediction labels {labels} outside 0..13")

# Results: DSC and NSD per case x organ within [0, 1].
with open(f"{run}/eval/results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
if not rows:
    fail("results.csv is empty")
cols = {c.lower(): c for c in rows[0]}
dsc = next((cols[c] for c in cols if "dsc" in c or "dice" in c), None)
nsd = next((cols[c] for c in cols if "nsd" in c), None)
case_col = next((cols[c] for c in cols if "case" in c), None)
if not (dsc and nsd and case_col):
    fail(f"results.csv lacks case/DSC/NSD columns: {list(rows[0])}")
seen = {r[case_col] for r in rows}
if len(seen) != cases:
    fail(f"results.csv scores {len(seen)} cases, expected {cases}")
for r in rows:
    for c in (dsc, nsd):
        if r[c] in ("", "nan"):
            continue
        v = float(r[c])
        if not 0.0 <= v <= 1.0:
            fail(f"results.csv {c}={v} outside [0, 1] in {r}")
if not os.path.exists(f"{run}/eval/results.h5"):
    fail("results.h5 missing")
# Each case predicted by the model of the fold that held it out (not one trained on it): the
# checkpoint alice infer names in the prediction (results.h5 /prediction_sources) is under
# finetune/fold<k>/ with k the case's fold in the data set's index.
import h5py  # noqa: E402
with h5py.File(f"{run}/data/dataset.h5", "r") as d:
    fold_of = {n.decode().rstrip("\0"): int(k)
               for n, k in zip(d["index/name"][()], d["index/fold"][()])}
with h5py.File(f"{run}/eval/results.h5", "r") as r:
    scored = [n.decode() for n in r["case_names"][()]]
    sources = [s.decode() for s in r["prediction_sources"][()]]
for case, source in zip(scored, sources):
    if f"/finetune/fold{fold_of[case]}/" not in source:
        fail(f"{case} (fold {fold_of[case]}) was predicted by {source!r}, not its fold's model")
print(f"every case predicted by its own held-out fold's model ({len(scored)} cases)")
print(f"results.csv: {len(rows)} rows over {len(seen)} cases; mean DSC "
      f"{np.nanmean([float(r[dsc]) for r in rows if r[dsc] not in ('', 'nan')]):.3f}")
PY
ls "$run"/logs

# A chain on the packed data set takes its fold count (fine-tuning, infer and eval then cover
# every case) and refuses another --folds, before submitting anything.
chain_dry() {
  ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run2" \
    --dataset "$run/data/dataset.h5" --pretrain-config jobs/pretrain_tiny.cfg \
    --finetune-config jobs/finetune_tiny.cfg --labels "$run/data/phantoms/labelsTr" --dry-run "$@"
}
chain_dry > "$tmp/dry.log" 2>&1 || { cat "$tmp/dry.log"; echo "FAIL: dry run on --dataset"; exit 1; }
grep -q "folds: $folds (from .*dataset.h5)" "$tmp/dry.log" && grep -q -- "--array=0-$((folds - 1)) " "$tmp/dry.log" ||
  { cat "$tmp/dry.log"; echo "FAIL: the chain did not take the data set's $folds folds"; exit 1; }
[ ! -e "$tmp/run2" ] || { echo "FAIL: the dry run wrote $(ls -R "$tmp/run2" | tr '\n' ' ')"; exit 1; }
if chain_dry --folds $((folds + 3)) > "$tmp/dry.log" 2>&1 ||
  ! grep -q "packed with num_folds = $folds" "$tmp/dry.log"; then
  cat "$tmp/dry.log"; echo "FAIL: --folds $((folds + 3)) against a $folds-fold data set not refused"; exit 1
fi
# a file that is no data set (here a checkpoint): refused with the reason, not silently
if ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run3" \
    --dataset "$(ls "$run"/pretrain/ckpt_*.h5 | head -1)" --labels "$run/data/phantoms/labelsTr" \
    --dry-run > "$tmp/dry3.log" 2>&1 || ! grep -q "no num_folds attribute" "$tmp/dry3.log"; then
  cat "$tmp/dry3.log"; echo "FAIL: a --dataset without num_folds not refused with a reason"; exit 1
fi
echo "ok: --dataset sets the folds (a dry run writes nothing); another --folds, or a file"\
  "without folds, is refused"
echo PASS

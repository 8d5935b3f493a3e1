#!/usr/bin/env bash
# `make demo`: the whole workflow end to end on synthetic phantoms, about 7-8 minutes on 2
# idle cores (much longer when they are shared): phantoms -> pack (2 ranks) -> tiny Alice
# pre-training (600 steps) -> UNETR fine-tuning (1500 steps, class-balanced crops) from it
# and from random init -> inference -> DSC/NSD evaluation -> comparison table and plots.
# Everything lands in $DEMO_DIR (default demo/). Re-running resumes finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
case $BIN in /*) ALICE=$BIN/alice ;; *) ALICE=$PWD/$BIN/alice ;; esac
PYTHON=${PYTHON:-/usr/bin/python3}
# alice_latest_ckpt: the checkpoint of the highest step (what a Slurm job resumes from)
source slurm/common.sh
D=${DEMO_DIR:-demo}
CASES=${DEMO_CASES:-10}
PRE_STEPS=${DEMO_PRETRAIN_STEPS:-600}
# Class-balanced crops (jobs/finetune_tiny.cfg) need this many steps before organs other than
# the liver appear at all (600 steps: none; 1500: spleen, kidney, aorta).
FT_STEPS=${DEMO_FINETUNE_STEPS:-1500}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpirun2() { mpirun --allow-run-as-root --oversubscribe -np 2 "$@"; }
stage() { printf '\n==== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
t0=$SECONDS
mkdir -p "$D"

stage "1/7 synthetic phantoms: $CASES abdominal CTs with 13 organ labels"
[ -f "$D/nifti/.done" ] || { "$ALICE" phantom --out "$D/nifti" --cases "$CASES" --seed 1 && touch "$D/nifti/.done"; }

stage "2/7 pack into $D/dataset.h5 with 2 MPI ranks (RAS, resampled to 2.5 mm, body crop)"
[ -f "$D/dataset.h5" ] || mpirun2 "$ALICE" pack --input "$D/nifti" --out "$D/dataset.h5" \
  spacing=2.5,2.5,2.5 num_folds=5 seed=1

stage "3/7 Alice pre-training (jobs/pretrain_tiny.cfg, $PRE_STEPS steps)"
"$ALICE" pretrain --config jobs/pretrain_tiny.cfg data="$D/dataset.h5" run_dir="$D/runs/pretrain" \
  steps="$PRE_STEPS" ckpt_every=200 log_every=50
ckpt=$(alice_latest_ckpt "$D/runs/pretrain")

stage "4/7 UNETR fine-tuning on folds != 0: from the Alice checkpoint, and from random init"
for init in alice random; do
  pre=""; [ $init = alice ] && pre="pretrained=$ckpt"
  "$ALICE" finetune --config jobs/finetune_tiny.cfg data="$D/dataset.h5" run_dir="$D/runs/finetune_$init" \
    fold=0 steps="$FT_STEPS" val_every=500 ckpt_every=500 log_every=100 $pre
done

stage "5/7 sliding-window inference on the held-out fold 0, mapped back to each case's original grid"
for init in alice random; do
  best="$D/runs/finetune_$init/ckpt_best.h5"
  [ -f "$best" ] || best=$(alice_latest_ckpt "$D/runs/finetune_$init")
  "$ALICE" infer --checkpoint "$best" --data "$D/dataset.h5" --cases fold:0 --out "$D/pred_$init"
done

stage "6/7 evaluation of fold 0: DSC and NSD per case and organ (FLARE 2022 tolerances)"
for init in alice random; do   # truth: each case's source label file, recorded by pack
  "$ALICE" eval --pred "$D/pred_$init" --data "$D/dataset.h5" --cases fold:0 \
    --out "$D/results_$init"
done

stage "7/7 comparison table and plots"
"$PYTHON" analysis/tables.py --format md "Alice=$D/results_alice.h5" "random init=$D/results_random.h5" \
  | tee "$D/table.md"
"$PYTHON" analysis/plot_losses.py --out "$D/losses.png" "$D/runs/pretrain" "$D/runs/finetune_alice" "$D/runs/finetune_random"
"$PYTHON" analysis/plot_organs.py --out "$D/organs.png" "Alice=$D/results_alice.h5" "random init=$D/results_random.h5"
first=$(ls "$D/pred_alice" | head -1); case=${first%.nii.gz}
"$PYTHON" analysis/plot_overlay.py --image "$D/nifti/imagesTr/${case}_0000.nii.gz" \
  --truth "$D/nifti/labelsTr/$case.nii.gz" --pred "$D/pred_alice/$first" --out "$D/overlay_$case.png"
echo
echo "demo finished in $(( (SECONDS - t0) / 60 ))m$(( (SECONDS - t0) % 60 ))s: table $D/table.md, plots $D/*.png, runs $D/runs/"

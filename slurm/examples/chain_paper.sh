#!/usr/bin/env bash
# The paper's whole workflow as one dependency chain: pack the CT folder, pre-train ViT-B on
# 8 GPUs (NODES=1 -> 1x8, NODES=2 -> 2x4), fine-tune UNETR on 5 folds (one GPU each), infer,
# evaluate.
#
#   NODES=2 slurm/examples/chain_paper.sh RUN_DIR CT_FOLDER [LABELS_FOLDER]
# Run from the repository root. Partition/account: ALICE_SBATCH_OPTS="--partition=gpu --account=me".
# LABEL_SET (default btcv, jobs/finetune_btcv.cfg's): how the labels number the organs, which
# names and tolerances the evaluation scores them with; LABEL_SET=flare for FLARE's numbering.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR CT_FOLDER [LABELS_FOLDER]" >&2; exit 2; }
nodes=${NODES:-1}
case $nodes in 1) per_node=8 ;; 2) per_node=4 ;; *) echo "NODES must be 1 or 2" >&2; exit 2 ;; esac
labels=()
[ $# -ge 3 ] && labels=(--labels "$3")
exec slurm/chain.sh --run-dir "$1" --input "$2" ${labels[@]+"${labels[@]}"} --folds 5 \
  --nodes "$nodes" --gpus-per-node "$per_node" --cpus-per-task 12 --time-pretrain 48:00:00 \
  --pretrain-config jobs/pretrain_vitb_paper.cfg --finetune-config jobs/finetune_btcv.cfg \
  --eval-args "label_set=${LABEL_SET:-btcv}"

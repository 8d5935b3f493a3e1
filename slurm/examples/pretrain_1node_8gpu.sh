#!/usr/bin/env bash
# The paper's pre-training (ViT-B/16, 192x192x64 crops, batch 8 per rank) on ONE node with
# 8 GPUs: 8 tasks, one per GPU, 12 cores each (adjust to your nodes' cores / 8).
#
#   slurm/examples/pretrain_1node_8gpu.sh RUN_DIR DATASET_H5 [key=value ...]
# Run from the repository root (the job finds bin/alice and slurm/common.sh there).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR DATASET_H5 [key=value ...]" >&2; exit 2; }
run_dir=$1 dataset=$2; shift 2
mkdir -p logs
sbatch \
  --nodes=1 --ntasks-per-node=8 --gpus-per-task=1 --cpus-per-task=12 \
  --time=48:00:00 \
  slurm/pretrain.sbatch jobs/pretrain_vitb_paper.cfg "$run_dir" data="$dataset" "$@"

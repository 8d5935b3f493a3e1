#!/usr/bin/env bash
# The paper's pre-training on TWO nodes with 4 GPUs each: 8 tasks in all, one per GPU, so the
# global batch (8 ranks x batch 8) and therefore the result match the 1-node 8-GPU layout.
# NCCL crosses the node boundary: see docs/OPERATIONS.md (NCCL_SOCKET_IFNAME, NCCL_IB_HCA).
#
#   slurm/examples/pretrain_2nodes_4gpu.sh RUN_DIR DATASET_H5 [key=value ...]
# Run from the repository root.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 RUN_DIR DATASET_H5 [key=value ...]" >&2; exit 2; }
run_dir=$1 dataset=$2; shift 2
mkdir -p logs
sbatch \
  --nodes=2 --ntasks-per-node=4 --gpus-per-task=1 --cpus-per-task=12 \
  --time=48:00:00 \
  slurm/pretrain.sbatch jobs/pretrain_vitb_paper.cfg "$run_dir" data="$dataset" "$@"

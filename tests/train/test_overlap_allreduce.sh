#!/usr/bin/env bash
# The gradient all-reduce overlapped with backward (overlap_allreduce = 1, buckets of
# allreduce_bucket_mb, src/train/grad_sync.c) reaches the same parameters as one all-reduce
# after backward (overlap_allreduce = 0), 2 ranks x batch 1, for Alice pre-training (several
# buckets; and one bucket per tensor) and UNETR fine-tuning. Checked: every tensor of params,
# the EMA target and both AdamW moments in the last checkpoint, and the logged losses.
# Tolerance: 1e-6 relative (Frobenius) per tensor. With 2 ranks a float sum a + b does not
# depend on how the buffer is cut, so the runs agree bit for bit here; with more ranks MPI may
# add in another order per bucket, which the tolerance allows.
# DEVICE=cuda (tests/gpu/run.sh) runs the same comparison on the GPU: NCCL on a communication
# stream with one GPU per rank, or with two ranks on one GPU the MPI-staged transport (which
# cannot overlap, so both runs reduce after backward). Its tolerance is 1e-4, as the ranks test:
# GPU reductions may sum in another order from run to run, amplified by AdamW.
source "$(dirname "$0")/lib.sh"
DEVICE=${DEVICE:-cpu}
TOL=1e-6
if [ "$DEVICE" = cuda ]; then
  TOL=1e-4
  command -v nvidia-smi > /dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU \
    || { echo "skip: DEVICE=cuda but no GPU visible"; exit 77; }
fi

compare() {  # compare <run dir A> <run dir B> <checkpoint name> <label>
  PYTHONPATH="$ROOT/tests/train" "$PYTHON" - "$1" "$2" "$3" "$4" "$TOL" <<'PY'
import sys, numpy as np
from run_compare import compare_states, metrics
a_dir, b_dir, ckpt, label = sys.argv[1:5]
tol = float(sys.argv[5])
count, exact, worst, worst_name, _ = compare_states(f"{a_dir}/{ckpt}", f"{b_dir}/{ckpt}")
la, lb = metrics(a_dir), metrics(b_dir)
print(f"{label}: {count} tensors, {exact} bit-identical, worst relative difference {worst:.2e} "
      f"({worst_name or '-'}); loss difference {np.max(np.abs(la['loss'] - lb['loss'])):.2e}")
assert count > 50, f"FAIL: only {count} tensors compared"
assert worst <= tol, f"FAIL: {worst_name} differs by {worst:.2e} (tolerance {tol:g})"
assert np.allclose(la["loss"], lb["loss"], rtol=tol, atol=0), (la["loss"], lb["loss"])
assert np.allclose(la["grad_norm"], lb["grad_norm"], rtol=tol, atol=0), (la["grad_norm"], lb["grad_norm"])
PY
}

# run2 <log> <alice args...>: eager steps (cuda_graph = 0) unless the args set cuda_graph: on
# DEVICE=cuda the default auto would record a graph wherever the all-reduce is not overlapped
# (overlap off, two ranks sharing a GPU), and the runs below compare eager steps first.
run2() {
  local log=$1; shift
  local eager=(cuda_graph=0)
  case " $* " in *" cuda_graph="*) eager=() ;; esac
  mpirun_n 2 "$ALICE" "$@" "${eager[@]}" device="$DEVICE" > "$log" 2>&1 || { tail -20 "$log"; fail "2-rank run failed: $*"; }
}

# ---- Alice pre-training: 6 buckets of 0.01 MiB, one per tensor, and overlap off ----
run2 "$WORK/pt_on.log" pretrain --config "$MICRO" run_dir="$WORK/pt_on" batch=1 allreduce_bucket_mb=0.01
grep -q "overlapped with backward, 6 bucket\|share a GPU" "$WORK/pt_on.log" || { grep all-reduce "$WORK/pt_on.log"; fail "expected 6 overlapped buckets"; }
run2 "$WORK/pt_each.log" pretrain --config "$MICRO" run_dir="$WORK/pt_each" batch=1 allreduce_bucket_mb=0
run2 "$WORK/pt_off.log" pretrain --config "$MICRO" run_dir="$WORK/pt_off" batch=1 overlap_allreduce=0
grep -q "after backward, 1 bucket" "$WORK/pt_off.log" || fail "overlap_allreduce=0 did not reduce after backward"
compare "$WORK/pt_on" "$WORK/pt_off" ckpt_6.h5 "alice, buckets of 0.01 MiB vs after backward"
compare "$WORK/pt_each" "$WORK/pt_off" ckpt_6.h5 "alice, a bucket per tensor vs after backward"
# DEVICE=cuda: cuda_graph = 1 replays each rank's forward + backward as a CUDA graph and
# reduces once after backward, outside the graph (src/train/pretrain.c): as overlap off.
if [ "$DEVICE" = cuda ]; then
  run2 "$WORK/pt_graph.log" pretrain --config "$MICRO" run_dir="$WORK/pt_graph" batch=1 cuda_graph=1
  grep -q "step recorded as one CUDA graph" "$WORK/pt_graph.log" \
    || { grep "cuda_graph" "$WORK/pt_graph.log"; fail "cuda_graph=1: the step was not recorded as a graph"; }
  compare "$WORK/pt_graph" "$WORK/pt_off" ckpt_6.h5 "alice, cuda_graph=1 vs after backward"
fi

# ---- UNETR fine-tuning (random encoder, synthetic phantoms, no validation) ----
FT=(--config "$ROOT/jobs/finetune_tiny.cfg" data=synthetic synthetic_cases=4 crop=32,32,32
    patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48 feature_size=4 batch=1 steps=4 warmup=1
    val_every=1000 ckpt_every=4 log_every=1 threads=1 prefetch=1 fold=-1)
run2 "$WORK/ft_on.log" finetune "${FT[@]}" run_dir="$WORK/ft_on" allreduce_bucket_mb=0.01
grep -q "overlapped with backward\|share a GPU" "$WORK/ft_on.log" || fail "fine-tuning did not overlap"
run2 "$WORK/ft_off.log" finetune "${FT[@]}" run_dir="$WORK/ft_off" overlap_allreduce=0
compare "$WORK/ft_on" "$WORK/ft_off" ckpt_4.h5 "unetr, buckets of 0.01 MiB vs after backward"
# DEVICE=cuda: fine-tuning's step through the same StepGraph (src/train/finetune.c), the
# all-reduce once after the replay, outside the graph.
if [ "$DEVICE" = cuda ]; then
  run2 "$WORK/ft_graph.log" finetune "${FT[@]}" run_dir="$WORK/ft_graph" cuda_graph=1
  grep -q "step recorded as one CUDA graph" "$WORK/ft_graph.log" \
    || { grep "cuda_graph" "$WORK/ft_graph.log"; fail "fine-tuning, cuda_graph=1: the step was not recorded as a graph"; }
  compare "$WORK/ft_graph" "$WORK/ft_off" ckpt_4.h5 "unetr, cuda_graph=1 vs after backward"
fi

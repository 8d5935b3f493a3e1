#!/usr/bin/env bash
# GPU check in one short session (at most ~8 minutes on one H100/H200):
#   tests/gpu/run.sh LOGDIR
# builds for sm_90, runs the CPU-vs-GPU parity test of every op, the 2-rank all-reduce test,
# the CUDA op microbenchmarks and the paper-configuration step timing, writes one log per step
# under LOGDIR and prints a summary table last. Exit 0 when every check that ran passed.
# Environment: BUILD/BIN (default build-gpu/bin-gpu), JOBS (make -j, default 16),
# PEAK_TFLOPS (dense bf16 peak of the card for MFU; default from the card's name).
set -u
LOGDIR=${1:?usage: tests/gpu/run.sh LOGDIR}
mkdir -p "$LOGDIR" && LOGDIR=$(cd "$LOGDIR" && pwd)
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build-gpu}
BIN=${BIN:-bin-gpu}
JOBS=${JOBS:-16}
PYTHON=${PYTHON:-/usr/bin/python3}
export BUILD BIN PYTHON OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
t_start=$SECONDS
rows=()
failed=0
record() { rows+=("$(printf '%-30s %-5s %s' "$1" "$2" "$3")"); [ "$2" = FAIL ] && failed=1; }
summary() {
  echo
  echo "== GPU summary ($(( SECONDS - t_start )) s, logs in $LOGDIR)"
  printf '%-30s %-5s %s\n' check status detail
  for r in "${rows[@]}"; do echo "$r"; done
}

# ---- device ----
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
nvidia-smi > "$LOGDIR/device.txt" 2>&1
record device "$([ -n "$card" ] && echo ok || echo FAIL)" "${card:-no GPU visible (nvidia-smi)}"
if [ -z "${PEAK_TFLOPS:-}" ]; then
  case "$card" in
    *H200*|*"H100 80GB HBM3"*|*H100*SXM*) PEAK_TFLOPS=989 ;;  # dense bf16, SXM
    *H100*NVL*) PEAK_TFLOPS=835 ;;
    *H100*PCIe*) PEAK_TFLOPS=756 ;;
    *) PEAK_TFLOPS=989 ;;
  esac
fi

# ---- build ----
t0=$SECONDS
if timeout 300 make USE_CUDA=1 CUDA_ARCH=sm_90 BUILD="$BUILD" BIN="$BIN" -j"$JOBS" \
     "$BIN/alice" tests-build "$BUILD/tests/bench_cuda_ops" > "$LOGDIR/build.log" 2>&1; then
  record "build sm_90" ok "$(( SECONDS - t0 )) s"
else
  record "build sm_90" FAIL "see build.log: $(grep -m1 -i error "$LOGDIR/build.log" | cut -c1-80)"
  summary; exit 1
fi

# ---- parity: every op, CPU vs GPU ----
t0=$SECONDS
timeout 180 "$BUILD/tests/test_backend_parity" > "$LOGDIR/parity.log" 2>&1
rc=$?
cases_ok=$(grep -c '^  ok ' "$LOGDIR/parity.log"); cases_bad=$(grep -c '^  FAIL ' "$LOGDIR/parity.log")
case $rc in
  0) record "op parity (fp32/tf32/bf16)" ok "$cases_ok cases, $(( SECONDS - t0 )) s" ;;
  77) record "op parity (fp32/tf32/bf16)" FAIL "skipped: no GPU visible to the test" ;;
  *) record "op parity (fp32/tf32/bf16)" FAIL "exit $rc, $cases_bad of $((cases_ok + cases_bad)) cases failed (parity.log)" ;;
esac

# ---- a full pre-training step (MAE, Alice, Alice without CASA), CPU vs GPU in fp32 ----
t0=$SECONDS
timeout 120 "$BUILD/tests/test_step_parity_gpu" > "$LOGDIR/step_parity.log" 2>&1
rc=$?
case $rc in
  0) record "step parity (loss, grads)" ok "mae, alice, alice-no-casa; $(( SECONDS - t0 )) s" ;;
  *) record "step parity (loss, grads)" FAIL "exit $rc (step_parity.log): $(grep -m1 FAIL "$LOGDIR/step_parity.log" | cut -c1-70)" ;;
esac

# ---- all-reduce over 2 ranks ----
timeout 90 bash tests/gpu/test_nccl_allreduce.sh > "$LOGDIR/nccl.log" 2>&1
rc=$?
transport=$(grep -q 'more ranks than GPUs' "$LOGDIR/nccl.log" && echo "MPI fallback (GPU shared)" || echo NCCL)
[ $rc -eq 0 ] && record "all-reduce 2 ranks" ok "$transport" || record "all-reduce 2 ranks" FAIL "exit $rc (nccl.log)"

# ---- op microbenchmarks ----
if timeout 150 "$BUILD/tests/bench_cuda_ops" > "$LOGDIR/bench_ops.log" 2>&1; then
  for mode in fp32 tf32 bf16; do
    line=$(grep "^tgt fc1 (all) *$mode " "$LOGDIR/bench_ops.log")
    [ -n "$line" ] && record "linear 9216x768->3072 $mode" ok \
      "$(echo "$line" | awk '{printf "%s TFLOP/s fwd, cuBLAS %s, ratio %s, bwd %s", $6, $7, $8, $9}')"
  done
  line=$(grep "^tgt self-attn (all) bf16" "$LOGDIR/bench_ops.log")
  [ -n "$line" ] && record "attention T=576 bf16" ok \
    "$(echo "$line" | awk '{printf "fwd %s ms, bwd %s ms", $(NF-3), $(NF-2)}')"
else
  record "op benchmarks" FAIL "see bench_ops.log"
fi

# ---- paper configuration step (ViT-B/16, crop 192x192x64, batch 8, all views and losses) ----
step() {  # step <label> <extra key=value...>
  local label=$1; shift
  local log="$LOGDIR/step_$label.log"
  if timeout 150 "$BIN/alice" pretrain --config jobs/pretrain_vitb_paper.cfg device=cuda batch=8 \
       "$@" --bench-steps 5 > "$log" 2>&1; then
    local s gf
    s=$(grep -o 's_per_step=[0-9.]*' "$log" | tail -1 | cut -d= -f2)
    gf=$(grep -o ' gflops=[0-9.]*' "$log" | tail -1 | cut -d= -f2)
    if [ -n "$s" ] && [ -n "$gf" ]; then
      record "paper step $label" ok "$(awk -v s="$s" -v g="$gf" -v p="$PEAK_TFLOPS" \
        'BEGIN{printf "%.1f ms/step, %.1f samples/s, %.1f TFLOP/s, MFU %.1f%% of %d", 1e3*s, 8/s, g/1e3, 100*g/1e3/p, p}')"
    else
      record "paper step $label" FAIL "no timing line in step_$label.log"
    fi
  else
    record "paper step $label" FAIL "$(grep -m1 'error' "$log" | cut -c1-90)"
  fi
}
step fp32
# The math-mode keys reach the backend once the training code calls gpu_set_math.
if grep -rq 'gpu_set_math' src --include='*.c' --exclude='gpu_stub.c'; then
  step tf32 tf32=1
  step bf16 precision=bf16 tf32=1
fi

# ---- PyTorch on the same card ----
if "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
   && grep -q -- '--device' tests/reference/bench_torch_step.py; then
  timeout 150 "$PYTHON" tests/reference/bench_torch_step.py --device cuda --batch 8 --steps 5 \
    > "$LOGDIR/torch_step.log" 2>&1 && record "pytorch step (eager)" ok "$(tail -1 "$LOGDIR/torch_step.log" | cut -c1-90)" \
    || record "pytorch step (eager)" FAIL "see torch_step.log"
else
  record "pytorch step (eager)" skip "no CUDA-enabled PyTorch here, or the reference has no --device"
fi

summary
exit $failed

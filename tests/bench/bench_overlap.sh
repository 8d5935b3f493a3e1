#!/usr/bin/env bash
# Gradient all-reduce overlapped with backward against one all-reduce after backward:
# tiny Alice configuration, 2 ranks x batch 1, same data and steps; median ms/step of rank 0
# (metrics.csv, steps after the first two) and the ratio off / on (> 1: overlap pays).
# On 2 CPU cores it will not pay (Open MPI progresses non-blocking collectives only inside MPI
# calls, and both ranks already share the cores); the figure is for machines where it can:
# one GPU per rank with NCCL (DEVICE=cuda). Two ranks sharing one GPU fall back to the
# synchronous MPI transport, where on and off should time alike.
# On and off runs alternate REPS times each (a busy machine drifts), the medians pool all runs.
# DEVICE (cpu|cuda, default cpu), STEPS (default 12), REPS (default 2), BUCKET_MB (default 0.5:
# the tiny model has about 4 MiB of gradients, so several buckets), BENCH_THREADS (per rank,
# default cores / 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
ALICE=${ALICE:-$PWD/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
DEVICE=${DEVICE:-cpu}
STEPS=${STEPS:-12}
REPS=${REPS:-2}
BUCKET_MB=${BUCKET_MB:-0.5}
T=${BENCH_THREADS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
if [ "$DEVICE" = cuda ]; then
  command -v nvidia-smi > /dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU \
    || { echo "skip: DEVICE=cuda but no GPU visible"; exit 77; }
fi
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT

run() {  # run <name> <key=value...>
  local name=$1; shift
  mpirun --allow-run-as-root --oversubscribe -np 2 "$ALICE" pretrain --config jobs/pretrain_tiny.cfg \
    device="$DEVICE" run_dir="$W/$name" steps="$STEPS" batch=1 threads="$T" ckpt_every=100000 \
    log_every=100000 allreduce_bucket_mb="$BUCKET_MB" "$@" > "$W/$name.log" 2>&1 \
    || { tail -20 "$W/$name.log"; echo "bench_overlap: run $name failed"; exit 1; }
}
for r in $(seq 1 "$REPS"); do
  run "on$r" overlap_allreduce=1
  run "off$r" overlap_allreduce=0
done
echo "tiny alice, 2 ranks x batch 1, device $DEVICE, $T thread(s) per rank, $STEPS steps x $REPS runs each, machine: $(nproc) cores"
grep -ho "overlap_allreduce: .*\|gradient all-reduce: .*" "$W/on1.log" | head -2 | sed 's/^/  on:  /'
"$PYTHON" - "$W" "$REPS" <<'PY'
import sys, numpy as np
w, reps = sys.argv[1], int(sys.argv[2])
ms = {n: np.median(np.concatenate([
          np.genfromtxt(f"{w}/{n}{r}/metrics.csv", delimiter=",", names=True)["ms_per_step"][2:]
          for r in range(1, reps + 1)])) for n in ("on", "off")}
print(f"  overlap on:  {ms['on']:.1f} ms/step (median over runs, after 2 warm-up steps each)")
print(f"  overlap off: {ms['off']:.1f} ms/step")
print(f"  overlap_step_ratio off/on = {ms['off'] / ms['on']:.3f} (> 1: overlapping pays)")
PY

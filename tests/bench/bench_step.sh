#!/usr/bin/env bash
# Pre-training step on the CPU: alice (C) beside the PyTorch reference of the same model
# (tests/reference/bench_torch_step.py), same thread count, same process-free machine state:
# seconds per step (median after warm-up), peak RSS, and the ratio torch / alice (> 1: alice
# faster). Then throughput of the tiny config with 1 and 2 ranks.
# BENCH_THREADS (default: all cores), BENCH_STEPS (default 3), BENCH_VITB=0 skips ViT-B.
set -euo pipefail
cd "$(dirname "$0")/../.."
ALICE=${ALICE:-$PWD/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
T=${BENCH_THREADS:-$(nproc)}
S=${BENCH_STEPS:-3}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" | tail -1; }

rows=()
bench() {  # name, job file, extra key=value...
  local name=$1 job=$2; shift 2
  local c t
  c=$("$ALICE" pretrain --config "$job" threads="$T" "$@" --bench-steps "$S" 2>&1 | grep alice_step)
  t=$("$PYTHON" tests/reference/bench_torch_step.py --config "$job" --threads "$T" --steps "$S" "$@" 2>&1 | grep torch_step)
  local cs cm ts tm
  cs=$(echo "$c" | field s_per_step); cm=$(echo "$c" | field peak_rss_mb)
  ts=$(echo "$t" | field s_per_step); tm=$(echo "$t" | field peak_rss_mb)
  rows+=("$(printf '| %-34s | %8.3f | %8.3f | %5.2fx | %7.0f | %7.0f |' "$name" "$cs" "$ts" \
    "$(awk -v a="$ts" -v b="$cs" 'BEGIN{print a/b}')" "$cm" "$tm")")
  printf '%s\n' "${rows[-1]}"
}
echo "threads per process: $T, timed steps: $S (median), machine: $(nproc) cores"
echo "| config | alice s/step | torch s/step | torch/alice | alice MiB | torch MiB |"
echo "|---|---|---|---|---|---|"
bench "tiny alice, batch 2" jobs/pretrain_tiny.cfg
bench "tiny mae, batch 2" jobs/pretrain_tiny.cfg method=mae
if [ "${BENCH_VITB:-1}" = 1 ]; then
  bench "ViT-B/16 mae 192x192x64, batch 1" jobs/pretrain_vitb_paper.cfg method=mae device=cpu precision=fp32 batch=1
  bench "ViT-B/16 alice 192x192x64, batch 1" jobs/pretrain_vitb_paper.cfg device=cpu precision=fp32 batch=1
fi

echo
echo "throughput, tiny alice, global batch 2, 12 steps on synthetic phantoms:"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
"$ALICE" pretrain --config jobs/pretrain_tiny.cfg run_dir="$W/r1" steps=12 batch=2 threads="$T" \
  ckpt_every=1000 > /dev/null
mpirun --allow-run-as-root --oversubscribe -np 2 "$ALICE" pretrain --config jobs/pretrain_tiny.cfg \
  run_dir="$W/r2" steps=12 batch=1 threads=$(( T / 2 > 0 ? T / 2 : 1 )) ckpt_every=1000 > /dev/null
"$PYTHON" - "$W" <<'PY'
import sys, numpy as np
w = sys.argv[1]
r = {n: np.genfromtxt(f"{w}/{d}/metrics.csv", delimiter=",", names=True)["samples_per_s"][2:]
     for n, d in (("1 rank", "r1"), ("2 ranks", "r2"))}
for n, v in r.items(): print(f"  {n}: {np.median(v):.2f} samples/s (median of steps 2..11)")
print(f"  speed-up 2 ranks / 1 rank: {np.median(r['2 ranks']) / np.median(r['1 rank']):.2f}x")
PY

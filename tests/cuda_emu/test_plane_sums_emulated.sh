#!/usr/bin/env bash
# The per-plane sums of the CUDA backend (cuda/cuda_norm.cu, sections "per-plane sums" and
# "instance norm": the convolutions' bias gradient cuda_channel_sums_accumulate, and the own
# instance norm's forward and backward built on the same chunked plane sums) run WITHOUT a GPU:
# the source is cut out between fixed markers, the <<<...>>> launches are rewritten to
# emu_launch (the template kernel named with its functor, which nvcc deduces), and
# plane_sums_emulated.cpp runs them through emu_cuda.h against double-precision references.
# What this cannot see (the bits of real warp shuffles, speed) is left to test_backend_parity
# and bench_instnorm on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/plane_sums_kernels.inc" 6 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_norm.cu '/* ---- per-plane sums' '' \
  --replace 'plane_chunk_sums_kernel<<<' 'plane_chunk_sums_kernel<F><<<' 1
emu_compile plane_sums_emulated "$HERE/plane_sums_emulated.cpp"
"$TMP/plane_sums_emulated"

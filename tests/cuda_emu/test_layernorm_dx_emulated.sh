#!/usr/bin/env bash
# The LayerNorm input-gradient kernel (cuda/cuda_norm.cu layernorm_dx_kernel, with its optional
# residual, and its launch launch_layernorm_dx) runs WITHOUT a GPU: the source is cut out of
# cuda/cuda_norm.cu (the row-per-warp constants, then the kernel through the end of its launch
# function), the <<<...>>> launch is rewritten to emu_launch, and layernorm_dx_emulated.cpp runs it
# through emu_cuda.h against a double reference and against its own unfused result (bit for bit).
# What this cannot see (real warp shuffles, FMA contraction by nvcc, speed) is left to
# test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
# The launch function ends at the first line that closes a function after its signature.
emu_cut "$TMP/layernorm_dx.inc" 1 \
  --cut cuda/cuda_norm.cu 'constexpr int kRowsPerBlock' '/* ---- LayerNorm ---- */' \
  --cut cuda/cuda_norm.cu '/* dx = dx_residual + rstd' 'static void launch_layernorm_dx' \
  --cut-through cuda/cuda_norm.cu 'static void launch_layernorm_dx' $'\n}\n'
emu_compile layernorm_dx_emulated "$HERE/layernorm_dx_emulated.cpp"
"$TMP/layernorm_dx_emulated"

#!/usr/bin/env bash
# The 16-byte vectorised elementwise kernels (cuda/cuda_elementwise.cu: add, drop-path's
# add_group_scaled, GELU, LeakyReLU;
# cuda_tokens.cu's channel concat/split over plane_grid;
# cuda_weight_copy.cu,
# cuda_tokens.cu, cuda_losses.cu; helpers in cuda/cuda_kernels.cuh) run WITHOUT a GPU: their
# source is cut out between fixed markers, the <<<...>>> launches are rewritten to emu_launch,
# and vector_kernels_emulated.cpp runs them serially on the host (emu_serial.h) against the
# scalar formulas (bit for bit; aligned, shifted and mixed pointers; tails; strided grids). What
# this cannot see (real 16-byte transactions, speed) is left to test_backend_parity on a GPU.
# The bf16 GELU forward's table kernel (it stages shared memory behind a barrier) has its own
# test, test_gelu_table_emulated.sh; here the bf16 formula kernel runs (its fallback).
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_cut "$TMP/vector_kernels.inc" 12 \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_elementwise.cu '/* Width of the float4 path' 'struct SquareOf' \
  --cut cuda/cuda_elementwise.cu $'template <typename T>\nstatic __global__ void gelu_fwd_kernel' \
        '/* ---- bf16 GELU forward by table lookup' \
  --cut cuda/cuda_elementwise.cu '/* dx, dy are fp32 whatever T is' '' \
  --cut cuda/cuda_weight_copy.cu '/* 8 values per thread' 'void gpu_set_weight_copies' \
  --cut cuda/cuda_tokens.cu '/* Patchify / unpatchify' 'static __global__ void scatter_add_rows_kernel' \
  --cut cuda/cuda_tokens.cu '/* Channel concat and split over plane_grid' '/* out[b, c, r] = in[b, r, c]' \
  --cut cuda/cuda_losses.cu '/* One block per row (grid-stride over rows): coef' 'void cuda_masked_mse_bwd'
emu_compile vector_emulated "$HERE/vector_kernels_emulated.cpp"
"$TMP/vector_emulated"

#!/usr/bin/env bash
# The reconstruction loss's row kernels (cuda/cuda_losses.cu: normalize_rows' held and
# streamed kernels, masked_mse_bwd's coefficient and row kernels, with their launch functions)
# run WITHOUT a GPU: their source is cut out between fixed markers (with the 16-byte pack
# helpers and block_sum of cuda/cuda_kernels.cuh), the <<<...>>> launches are rewritten to
# emu_launch, and recon_rows_emulated.cpp runs them through emu_cuda.h (a std::thread per CUDA
# thread, barriers, warp sums) against double references: row lengths tiny, odd, not a multiple
# of 4, 4096 (the paper's 16^3 patches), the held path's largest and the streamed fallback past
# it; aligned and shifted pointers; visible rows (mask 0) exactly 0 whatever pred holds; nothing
# written past the end. What this cannot see (real shuffles and 16-byte transactions, register
# spills, speed) is left to test_backend_parity and bench_recon_rows on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
# 3 launches for normalize_rows (streamed, held vector, held scalar), 2 for masked_mse_bwd.
emu_cut "$TMP/recon_rows.inc" 5 \
  --cut cuda/cuda_kernels.cuh 'constexpr size_t kMaxBlocks' \
        'template <typename T> __device__ __forceinline__ T warp_sum' \
  --cut cuda/cuda_kernels.cuh 'template <typename T> __device__ T block_sum' \
        '__device__ inline float block_max' \
  --cut cuda/cuda_losses.cu '/* ---- reconstruction targets and masked MSE ---- */' \
        '/* row_loss[r] = mask[r] * mean_d' \
  --cut cuda/cuda_losses.cu '/* coef[0] = 2 scale / (dim * sum(mask))' '/* ---- DiceCE ---- */'
emu_compile recon_rows_emulated "$HERE/recon_rows_emulated.cpp"
"$TMP/recon_rows_emulated"

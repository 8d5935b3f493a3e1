#!/usr/bin/env bash
# The DiceCE forward of the CUDA backend (cuda_dicece_fwd in cuda/cuda_losses.cu: softmax and
# per-voxel CE, the label check, the Dice statistics, and every value finished on the device
# through the deterministic reductions of cuda/cuda_kernels.cuh and cuda/cuda_reduce.cu, so the
# fine-tuning step has no host wait) runs WITHOUT a GPU: its source is cut out between fixed
# markers, the <<<...>>> launches are rewritten to emu_launch (the reduction's template kernel
# named with its functor, which nvcc deduces), and dicece_emulated.cpp runs it
# through emu_cuda.h (one thread per CUDA thread, block barriers, warp sums) against a
# double-precision reference: probabilities, ce, dice, and the count of labels outside
# 0..K-1 (left out of ce). What this cannot see (the exact bits of the GPU's warp shuffles,
# speed) is left to test_backend_parity and test_cuda_graph_step on a GPU. The grid's y limit
# is lowered to 3 in the kernels' cap and in the emulation alike, so the Dice statistics'
# segments (B*K, up to 8 here) stride past it as B*K > 65535 would on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/dicece_kernels.inc" 6 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_kernels.cuh '/* partials[block] = sum over the block' '/* sum_{i<n} f(i) in double; synchronises' \
  --cut cuda/cuda_reduce.cu '/* The same fixed-order sum, divided on the device' "/* The column sums' arrival counters" \
  --cut cuda/cuda_losses.cu "/* PyTorch's cosine_similarity clamps" 'static unsigned row_blocks' \
  --cut cuda/cuda_losses.cu 'static __global__ void dicece_softmax_kernel' '/* coefs[seg * 2 + {0,1}]' \
  --replace 'reduce_partials_kernel<<<' 'reduce_partials_kernel<F><<<' 1 \
  --replace 'constexpr unsigned kMaxPlaneBlocksY = 65535;' \
            'constexpr unsigned kMaxPlaneBlocksY = EMU_MAX_GRID_YZ;' 1
emu_compile dicece_emulated "$HERE/dicece_emulated.cpp"
"$TMP/dicece_emulated"

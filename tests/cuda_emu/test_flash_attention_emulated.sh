#!/usr/bin/env bash
# The fused attention kernels (cuda/cuda_flash_attention.cu) run WITHOUT a GPU: the kernel
# source, with its <<<...>>> launches and its extern __shared__ array rewritten mechanically,
# is compiled by g++ against the host emulation in emu_cuda.h (one thread per CUDA thread,
# barriers, wmma as plain 16x16 math) and checked against a double-precision reference
# (flash_attention_emulated.cpp): fp32 and bf16 branches, Tq != Tk, packed qkv, tails,
# Dh 8/24/32/64 and the runtime-Dh kernels. What the emulation cannot see (real wmma fragment
# layouts, shared-memory limits, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
mkdir -p "$TMP/cuda"
# The kernel file's CUDA includes resolve to the emulation; the element-type conversions that
# the real cuda_kernels.cuh includes (cuda/cuda_bf16.cuh) compile against it as they are.
printf '#include "emu_cuda.h"\n#include "cuda/cuda_bf16.cuh"\n' > "$TMP/cuda/cuda_kernels.cuh"
: > "$TMP/mma.h"
# The register-resident kernels' headers (they launch nothing): their shared arrays, one per
# kernel, become the emulation's per-block buffer.
for header_kernels in cuda_flash_fwd_mma.cuh:1 cuda_flash_bwd_mma.cuh:2 cuda_flash_mma_common.cuh:0; do
  header=${header_kernels%:*}
  emu_cut "$TMP/cuda/$header" 0 --cut "cuda/$header" '' '' \
    --replace 'extern __shared__ __align__(16) unsigned char smem[];' \
              'unsigned char *smem = emu_smem;' "${header_kernels#*:}"
done
# kernel<<<grid, block, smem, stream>>>(args) -> emu_launch(kernel, grid, block, smem, stream, args)
# Also the GEMM path's bf16 gradients through fp32 stand-ins (cuda/cuda_attention.cu; its
# grid-stride rounding kernel needs grid_for and GRID_STRIDE from cuda/cuda_kernels.cuh), run
# with the flash kernels as the fp32 backward.
emu_cut "$TMP/flash_kernels.cpp" 5+ \
  --cut cuda/cuda_flash_attention.cu '' '' \
  --cut cuda/cuda_kernels.cuh '/* Grid-stride loops cap the grid here' '/* ---- 16-byte vectorised' \
  --cut cuda/cuda_attention.cu '/* ---- bf16 gradients through fp32 stand-ins' \
        'void cuda_attention_bwd_bf16_grad16' \
  --replace 'extern __shared__ __align__(kSmemAlign) unsigned char smem[];' \
            'unsigned char *smem = emu_smem;' 3+
emu_compile flash_emulated -w "$HERE/flash_attention_emulated.cpp" "$TMP/flash_kernels.cpp"
"$TMP/flash_emulated"

#!/usr/bin/env bash
# The bf16 GELU forward's table kernel (cuda/cuda_elementwise.cu: the table of all 65536 inputs,
# its fill kernel, the lookup kernel that stages the table's hot part in shared memory behind a
# barrier, and their launches) runs WITHOUT a GPU: the source is cut out of cuda/ (with the
# 16-byte pack helpers of cuda/cuda_kernels.cuh), the <<<...>>> launches are rewritten to
# emu_launch, and gelu_table_emulated.cpp runs them through emu_cuda.h against the CPU backend's
# formula, bf16(gelu_erf(x)), for EVERY bf16 input, bit for bit. What this cannot see (the
# device's own evaluation of the fill, speed, bank conflicts) is left to test_backend_parity
# (its exhaustive gelu_fwd_bf16 case) and bench_cuda_elementwise on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/gelu_table.inc" 2 \
  --cut cuda/cuda_kernels.cuh '/* Blocks of a device-wide reduction' \
        'template <typename T> __device__ __forceinline__ T warp_sum' \
  --cut cuda/cuda_elementwise.cu '/* ---- bf16 GELU forward by table lookup' \
        '/* Per process (one device per rank)'
emu_compile gelu_table_emulated "$HERE/gelu_table_emulated.cpp"
"$TMP/gelu_table_emulated"

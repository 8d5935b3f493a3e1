#!/usr/bin/env bash
# The MLP's GELU backward fused into fc1's bias-gradient pass (cuda/cuda_blas.cu:
# GeluBwdRoundedCopy and gelu_dh_bf16_and_bias_grad, run by the real one-launch colsum_kernel of
# cuda/cuda_kernels.cuh) WITHOUT a GPU: the source is cut out between fixed markers, the launch
# rewritten to emu_launch, and linear_gelu_bwd_emulated.cpp runs it through emu_cuda.h (a
# std::thread per CUDA thread, blocks in shuffled orders) against the unfused GPU sequence
# (gelu_bwd_kernel's formula materialised, then the column sum that rounds dy): bf16 copy and db
# bit for bit, nothing written past the end. What this cannot see (real concurrency, nvcc's
# code generation, speed) is left to test_backend_parity on a GPU (fused vs unfused bit for bit).
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/linear_gelu_bwd_kernels.inc" 1 \
  --cut cuda/cuda_kernels.cuh '/* ---- column sums accumulated into vectors' $'\n#endif' \
  --cut cuda/cuda_blas.cu "/* ---- the MLP's GELU backward fused into fc1's bias-gradient pass" \
        'void cuda_linear_gelu_bwd_bf16('
emu_compile linear_gelu_bwd_emulated "$HERE/linear_gelu_bwd_emulated.cpp"
"$TMP/linear_gelu_bwd_emulated"

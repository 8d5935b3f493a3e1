#!/usr/bin/env bash
# The batched-GEMM attention path of the CUDA backend (cuda/cuda_attention.cu, from the softmax
# backward kernel through cuda_attention_bwd_bf16: the fp32 entry points in fp32 mode and under
# bf16 GEMMs, the bf16 entry points) runs WITHOUT a GPU: the source is cut out, its kernel launch
# rewritten to emu_launch, and attention_gemm_path_emulated.cpp links it against host stand-ins
# of what it calls (a strided-batched GEMM with cuBLAS's operand semantics, the row softmax, the
# scratch slots, the bf16 rounding; the flash and cuDNN routes declined). Checked against a
# double-precision reference of each contract (one head batched over the elements, several
# heads per element, packed qkv and cross attention, every subset of gradients) and, bit for
# bit, the fp32 entry points under bf16 GEMMs against the bf16 entry points on rounded inputs.
# What this cannot see (cuBLASLt's kernels, plans and alignment, speed) is left to
# test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
mkdir -p "$TMP/cuda"
printf '#include "emu_cuda.h"\n#include "cuda/cuda_bf16.cuh"\n' > "$TMP/cuda/cuda_kernels.cuh"
emu_cut "$TMP/attention_gemm_path.inc" 1 \
  --cut cuda/cuda_attention.cu 'constexpr int kRowsPerBlock' \
        '/* ---- bf16 gradients through fp32 stand-ins'
emu_compile attention_gemm_path_emulated "$HERE/attention_gemm_path_emulated.cpp"
"$TMP/attention_gemm_path_emulated"

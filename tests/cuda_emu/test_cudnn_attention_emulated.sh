#!/usr/bin/env bash
# The widening kernel of the cuDNN attention path (cuda/cuda_attention_cudnn.cu: cuDNN's bf16
# gradients into fp32 dq, dk, dv with q's / kv's row strides; launch helpers in
# cuda/cuda_kernels.cuh, widen() in cuda/cuda_bf16.cuh) runs WITHOUT a GPU: its source is cut
# out between fixed markers, the <<<...>>> launch is rewritten to emu_launch, and
# cudnn_attention_emulated.cpp runs it serially on the host (emu_serial.h) against the
# contract, bit for bit. cuDNN's attention itself is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_cut "$TMP/cudnn_attention_kernels.inc" 1 \
  --cut cuda/cuda_bf16.cuh '__device__ __forceinline__ float widen(float x)' \
        'template <typename T> struct NarrowTo;' \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_attention_cudnn.cu '/* ---- cuDNN attention: widening kernel ----' \
        '/* ---- end of cuDNN attention: widening kernel ---- */'
emu_compile cudnn_attention_emulated "$HERE/cudnn_attention_emulated.cpp"
"$TMP/cudnn_attention_emulated"

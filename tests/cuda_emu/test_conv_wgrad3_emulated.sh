#!/usr/bin/env bash
# The own weight gradient of 3x3x3 convolutions with few channels (cuda/cuda_conv_wgrad3.cu,
# conv_wgrad_kernel = own) runs WITHOUT a GPU: the source is cut out whole, the <<<...>>>
# launches are rewritten to emu_launch, and conv_wgrad3_emulated.cpp runs it through
# emu_cuda.h (a thread per CUDA thread, real barriers around the shared tile) against a double
# reference. What this cannot see (speed, register spills, real shared-memory limits) is left
# to test_conv_autotune_gpu's own-wgrad cases and the UNETR step rows of tests/gpu/run.sh.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/conv_wgrad3_kernels.inc" 2 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_conv_wgrad3.cu '/* The output tile of a block' '' \
  --replace 'extern __shared__ float wgrad3_smem[];' 'float *wgrad3_smem = (float *)emu_smem;' 1
emu_compile conv_wgrad3_emulated "$HERE/conv_wgrad3_emulated.cpp"
"$TMP/conv_wgrad3_emulated"

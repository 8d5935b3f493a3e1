#!/usr/bin/env bash
# The own pointwise (1x1x1) convolution kernels of the CUDA backend (cuda/cuda_conv_pointwise.cu,
# pointwise_conv = own) run WITHOUT a GPU: the source is cut out whole, the <<<...>>> launches
# are rewritten to emu_launch, and conv_pointwise_emulated.cpp runs them through emu_cuda.h (a
# thread per CUDA thread, real barriers around the shared tiles) against double references.
# What this cannot see (speed, the bits of real FMA contraction) is left to
# test_conv_autotune_gpu's pointwise cases and the UNETR step rows of tests/gpu/run.sh.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/conv_pointwise_kernels.inc" 4 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_conv_pointwise.cu '/* ---- the map: forward and data gradient' ''
emu_compile conv_pointwise_emulated "$HERE/conv_pointwise_emulated.cpp"
"$TMP/conv_pointwise_emulated"

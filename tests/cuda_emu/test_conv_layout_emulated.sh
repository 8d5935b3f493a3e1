#!/usr/bin/env bash
# The layout kernels of the channels-last convolution weight gradients (cuda/cuda_conv_layout.cu,
# conv_wgrad_layout = ndhwc) run WITHOUT a GPU: the source is cut out whole, the <<<...>>>
# launches are rewritten to emu_launch, and conv_layout_emulated.cpp runs them through
# emu_cuda.h (a thread per CUDA thread, the tile's barrier real) against the index formulas.
# What this cannot see (cuDNN's channels-last backward-filter itself, speed) is left to
# test_conv_wgrad_layout_gpu and the UNETR step rows of tests/gpu/run.sh on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/conv_layout_kernels.inc" 2 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_conv_layout.cu '/* ---- channels-last copies' ''
emu_compile conv_layout_emulated "$HERE/conv_layout_emulated.cpp"
"$TMP/conv_layout_emulated"

#!/usr/bin/env bash
# The sliding-window inference kernels of the CUDA backend (cuda/cuda_window.cu: window gather,
# Gaussian blend, softmax/argmax) run WITHOUT a GPU: the source is cut out whole, the <<<...>>>
# launches are rewritten to emu_launch, and window_ops_emulated.cpp runs them serially
# (emu_serial.h; they have no barriers) against the CPU backend's ops (src/ops/cpu_window.c,
# compiled into the test). What this cannot see (speed, the device's expf) is left to
# test_backend_parity and test_cuda_end_to_end on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_cut "$TMP/window_kernels.inc" 3 \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_window.cu 'struct SwGeometry' ''
emu_compile window_ops_emulated "$HERE/window_ops_emulated.cpp"
"$TMP/window_ops_emulated"

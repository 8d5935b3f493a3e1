#!/usr/bin/env bash
# Per-tensor gradient clipping of the CUDA backend (cuda/cuda_optim.cu, "per-segment clipping":
# the piece sums kernel and the clip kernel behind the backend op clip_segments) runs WITHOUT a
# GPU: the section is cut out with block_sum, its two <<<...>>> launches rewritten to
# emu_launch, and clip_segments_emulated.cpp runs it through emu_cuda.h (a std::thread per CUDA
# thread, barriers, warp sums) against a double reference (see that file for the cases). What
# this cannot see (real shuffles' order, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/clip_segments.inc" 2 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_optim.cu '/* ---- per-segment clipping' ''
emu_compile clip_segments_emulated "$HERE/clip_segments_emulated.cpp"
"$TMP/clip_segments_emulated"

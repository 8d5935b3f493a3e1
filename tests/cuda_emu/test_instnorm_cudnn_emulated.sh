#!/usr/bin/env bash
# The small kernels of the cuDNN instance norm (cuda/cuda_instnorm_cudnn.cu: gamma/beta
# expanded per (b, c) plane, cuDNN's per-plane dscale/dbias folded over b into dgamma/dbeta;
# launch helpers in cuda/cuda_kernels.cuh) run WITHOUT a GPU: their source is cut out between
# fixed markers, the <<<...>>> launches are rewritten to emu_launch, and
# instnorm_cudnn_emulated.cpp runs them serially on the host (emu_serial.h) against the
# contract's formulas, bit for bit. cuDNN itself is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_cut "$TMP/instnorm_cudnn_kernels.inc" 2 \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_instnorm_cudnn.cu '/* ---- instance norm through cuDNN: small kernels ----' \
        '/* ---- end of the small kernels ---- */'
emu_compile instnorm_cudnn_emulated "$HERE/instnorm_cudnn_emulated.cpp"
"$TMP/instnorm_cudnn_emulated"

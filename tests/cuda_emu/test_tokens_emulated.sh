#!/usr/bin/env bash
# Two token kernels of the CUDA backend (cuda/cuda_tokens.cu) run WITHOUT a GPU, cut out between
# fixed markers and run through emu_cuda.h by tokens_emulated.cpp:
#  - mean_rows_fwd: the same bits as the CPU backend's formula (a double column sum in row
#    order, rounded once, then the float division), at the DINO centre's column length;
#  - transpose_kernel: every element of out[b, c, r] = in[b, r, c] for ragged tiles, also when
#    the grid has fewer tile rows than the matrix (the loop cuda_transpose_tokens relies on past
#    65535 tile rows, about 2.1 million token rows), launched here with 1 and 2 of them.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/tokens_kernels.inc" 1 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_tokens.cu '/* out[b, c] = mean_t in[b, t, c]' '/* dout times the float 1/T' \
  --cut cuda/cuda_tokens.cu '/* out[b, c, r] = in[b, r, c] through a 32x32' \
        'void cuda_transpose_tokens'
emu_compile tokens_emulated "$HERE/tokens_emulated.cpp"
"$TMP/tokens_emulated"

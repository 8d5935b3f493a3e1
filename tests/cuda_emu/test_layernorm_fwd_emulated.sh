#!/usr/bin/env bash
# LayerNorm forward of the CUDA backend (cuda/cuda_norm.cu's "LayerNorm" section: the scalar
# kernel for any width, the register-resident 16-byte kernel for widths 128 * kVec, and the
# launcher choosing between them) runs WITHOUT a GPU: the source is cut out between fixed
# markers, the <<<...>>> launches are rewritten to emu_launch, and layernorm_fwd_emulated.cpp
# runs it through emu_cuda.h against a double-precision reference, and the vector kernel
# against the scalar one bit for bit (the same summation order by design), in fp32 and bf16.
# What this cannot see (real warp shuffles, register counts, speed) is left to
# test_backend_parity and the kernel profile on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/layernorm_fwd.inc" 2 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_norm.cu 'constexpr int kRowsPerBlock' '/* ---- LayerNorm backward ----'
# -fsanitize=alignment: the vector kernel's 16-byte loads and stores through a pointer the
# launcher should have sent to the scalar kernel are reported and end the run
emu_compile layernorm_fwd_emulated "$HERE/layernorm_fwd_emulated.cpp" \
  -fsanitize=alignment -fno-sanitize-recover=alignment
"$TMP/layernorm_fwd_emulated"

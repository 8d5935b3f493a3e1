#!/usr/bin/env bash
# LayerNorm backward of the CUDA backend (cuda/cuda_norm.cu's "LayerNorm backward" section: the
# one-pass kernel forming dx and the per-block column sums of dy xhat and dy (its scalar path
# and, at widths 384 and 768 here, its register-resident vector path), the dx kernel
# alone, cuda_layernorm_bwd choosing between them and finishing dgamma and dbeta through
# colsum_kernel of cuda/cuda_kernels.cuh) runs WITHOUT a GPU: the source is cut out between
# fixed markers, the <<<...>>> launches are rewritten to emu_launch, the kernel's dynamic shared
# memory becomes the emulation's (poisoned per block), its grid cap a variable the test sets
# (the source's value, then 3 blocks), and layernorm_dx_emulated.cpp runs it through emu_cuda.h
# against the former dx kernel's arithmetic (bit for bit) and double sums, with and without the
# next linear layer's outputs of layernorm_bwd_dx16 (dx in bf16, dx's column sums). What this cannot see
# (real warp shuffles, FMA contraction by nvcc or ptxas, shared-memory limits, speed) is left to
# test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/layernorm_bwd.inc" 3 \
  "${EMU_CUT_REDUCTION_HELPERS[@]}" \
  --cut cuda/cuda_kernels.cuh '/* ---- column sums accumulated into vectors' $'\n#endif' \
  --cut cuda/cuda_norm.cu 'constexpr int kRowsPerBlock' '/* ---- LayerNorm ---- */' \
  --cut cuda/cuda_norm.cu '/* ---- LayerNorm backward ----' '/* ---- softmax over rows ---- */' \
  --replace 'extern __shared__ float ln_bwd_warp_sums[];' \
            'float *ln_bwd_warp_sums = (float *)emu_smem;' 1 \
  --replace 'const int rows_per_launch = kRowsPerBlock * kLnBwdMaxBlocks;' \
            'const int rows_per_launch = kRowsPerBlock * emu_ln_bwd_max_blocks;' 1
emu_compile layernorm_dx_emulated "$HERE/layernorm_dx_emulated.cpp"
"$TMP/layernorm_dx_emulated"

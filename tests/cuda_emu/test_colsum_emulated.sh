#!/usr/bin/env bash
# The one-launch column sums of the CUDA backend (colsum_kernel in cuda/cuda_kernels.cuh: bias
# and LayerNorm parameter gradients, mask-token gradient; with LayerNorm's two-output functor
# from cuda/cuda_norm.cu and the linear backward's fused bf16 rounding of dy from
# cuda/cuda_blas.cu) run WITHOUT a GPU: their source is cut out between fixed markers, the
# <<<...>>> launch is rewritten to emu_launch, and colsum_emulated.cpp runs them through
# emu_cuda.h (one thread per CUDA thread, barriers, atomicInc; the blocks in shuffled orders so
# that different blocks finish a column tile last) against the former two-launch algorithm
# (bit for bit) and a double-precision sum. What this cannot see (the memory ordering of real
# concurrent blocks, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/colsum_kernels.inc" 1 \
  --cut cuda/cuda_kernels.cuh '/* ---- column sums accumulated into vectors' $'\n#endif' \
  --cut cuda/cuda_norm.cu "/* LayerNorm's parameter-gradient terms" 'template <int N> struct MatrixElements' \
  --cut cuda/cuda_blas.cu 'void cuda_add_column_sums' '/* Mixed-precision linear backward'
emu_compile colsum_emulated "$HERE/colsum_emulated.cpp"
"$TMP/colsum_emulated"

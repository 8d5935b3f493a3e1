#!/usr/bin/env bash
# The GEMM-path attention's softmax backward kernel (cuda/cuda_attention.cu
# attention_softmax_bwd_kernel and its launch launch_attention_softmax_bwd, one warp per row)
# runs WITHOUT a GPU: both are cut out of the source, the <<<...>>> launch is rewritten to
# emu_launch, and attention_softmax_bwd_emulated.cpp runs them through emu_cuda.h against a
# double reference (in-place fp32 dS) and against its own fp32 result rounded afterwards (the
# bf16 store of the bf16-GEMM paths, bit for bit, ds left untouched). What this cannot see (real
# warp shuffles, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
emu_need_threads
emu_cut "$TMP/attention_softmax_bwd.inc" 1 \
  --cut cuda/cuda_attention.cu 'constexpr int kRowsPerBlock' 'static void launch_attention_softmax_bwd' \
  --cut-through cuda/cuda_attention.cu 'static void launch_attention_softmax_bwd' $'\n}\n'
emu_compile attention_softmax_bwd_emulated "$HERE/attention_softmax_bwd_emulated.cpp"
"$TMP/attention_softmax_bwd_emulated"

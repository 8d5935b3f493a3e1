#!/usr/bin/env bash
# The GELU-fused fc1 bias pass (cuda/cuda_blas.cu GeluBwdRoundedCopy, run by colsum_kernel)
# promises dh = dy * gelu'(h) with the bits of gelu_bwd_kernel and db = the column sum of those
# values. Inlined into the column sum, nvcc (or ptxas, from a plain mul.f32 followed by the
# sum's add.f32) would contract dy * gelu'(h) + acc into one fused multiply-add (one rounding
# instead of two) unless the product is __fmul_rn (mul.rn.f32, never contracted); the GELU slope
# must round as the CPU's formula does (ops/cpu_math.h); for both dy_act types (fp32, and
# fc2's bf16 input gradient). This needs no GPU: cuda/cuda_blas.cu is compiled to PTX with the
# Makefile's device flags and both instances' bodies are read.
# test_backend_parity checks the numbers on a GPU (fused vs unfused bit for bit).
source "$(dirname "$0")/ptx_common.sh"
ptx_compile cuda/cuda_blas.cu "$T/b.ptx"
ptx_check "$T/b.ptx" <<'PY'
import sys
from ptx_kernels import approximate_ops, count, fused_multiply_adds, read_ptx, require_kernel
# Both dy_act types (GeluBwdRoundedCopy<float>: linear_gelu_bwd_bf16; <__nv_bfloat16>: fc2's
# bf16 input gradient, linear_gelu_bwd_bf16_dy16): the widening is exact, the roundings the same.
failed = False
for dy_type, mangled in (("float", "f"), ("__nv_bfloat16", "13__nv_bfloat16")):
    body = require_kernel(read_ptx(), r"colsum_kernel\S*GeluBwdRoundedCopyI%sE" % mangled,
                          "colsum_kernel<..., GeluBwdRoundedCopy<%s>> (cuda/cuda_blas.cu)"
                          % dy_type)
    fused, inexact = fused_multiply_adds(body), approximate_ops(body)
    muls = count(body, "mul.rn.f32")
    contractible = count(body, "mul.f32")  # ptxas may fuse these with an add
    bf16 = count(body, "cvt.rn.bf16.f32")
    print("colsum_kernel<1, GeluBwdRoundedCopy<%s>>: %d mul.rn.f32, %d contractible mul.f32, %d "
          "cvt.rn.bf16.f32, %d fused multiply-adds, %d approximate ops %s"
          % (dy_type, muls, contractible, bf16, len(fused), len(inexact),
             sorted(set(fused + inexact))))
    if fused or inexact or contractible or muls < 10 or bf16 < 1:
        print("FAIL: the fused GELU bias pass (%s dy_act) does not run gelu_bwd_kernel's "
              "roundings" % dy_type)
        failed = True
sys.exit(1 if failed else 0)
PY

#!/usr/bin/env bash
# The CUDA GELU kernels promise the CPU's results bit for bit (ops/cpu_math.h: one formula,
# every product and sum rounded on its own). That holds only if nvcc emits no fused
# multiply-add in them (it contracts a * b + c by default) and divides correctly rounded. This
# needs no GPU: cuda/cuda_elementwise.cu is compiled to PTX with the Makefile's device flags
# and the kernels' bodies are read (the two GELU kernels and the fill of the bf16 forward's
# table). test_backend_parity checks the numbers on a GPU.
source "$(dirname "$0")/ptx_common.sh"
ptx_compile cuda/cuda_elementwise.cu "$T/e.ptx"
ptx_check "$T/e.ptx" <<'PY'
import sys
from ptx_kernels import approximate_ops, count, fused_multiply_adds, kernel_body, read_ptx
ptx = read_ptx()
bad = 0
# gelu_bf16_table_fill_kernel: the bf16 forward's table of all 65536 results is this formula too
for kernel in ("gelu_fwd_kernel", "gelu_bwd_kernel", "gelu_bf16_table_fill_kernel"):
    body = kernel_body(ptx, kernel)
    if body is None:
        print("FAIL: no %s in the PTX" % kernel); bad += 1; continue
    fused, inexact = fused_multiply_adds(body), approximate_ops(body)
    muls = count(body, "mul.rn.f32")
    print("%s: %d mul.rn.f32, %d fused multiply-adds, %d approximate ops %s"
          % (kernel, muls, len(fused), len(inexact), sorted(set(fused + inexact))))
    if fused or inexact or muls < 10:
        print("FAIL: %s does not run the CPU's roundings" % kernel); bad += 1
sys.exit(1 if bad else 0)
PY

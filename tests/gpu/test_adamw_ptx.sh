#!/usr/bin/env bash
# The one-launch AdamW kernel (cuda/cuda_optim.cu) promises the bits of the sequence it
# replaces: the former clipping pass (the scale kernel, one product), the former per-tensor
# AdamW kernel, and (the instantiation with the EMA target) the former ema_update kernel. Its
# arithmetic (ops/adamw_math.h and ops/ema_math.h, device branches) spells every rounding out
# with intrinsics (__fmaf_rn, __fmul_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), because left to the
# compiler the same expression was contracted differently in the kernel's vectorised and scalar
# loops. That holds only if the PTX carries an explicit rounding modifier on every f32 add, sub,
# mul, fma and div (ptxas may fuse unmodified mul/add pairs into FMAs; .rn ones it keeps) and
# uses no approximate operation, with per element exactly the former kernels' roundings:
#   adamw_kernel<false>: 1 product (clipping factor) + AdamW's 4 FMAs (first moment, second
#     moment, denominator, decayed update), 4 products, 1 IEEE division, 1 IEEE square root;
#   adamw_kernel<true>: the same and the EMA's 1 FMA and 1 product;
#   ema_kernel (ema_update alone): 1 FMA and 1 product per element, nothing else.
# Needs no GPU: cuda/cuda_optim.cu is compiled to PTX with the Makefile's device flags and the
# kernels' bodies are read. tests/cuda_emu/test_adamw_emulated.sh checks the values;
# test_backend_parity checks them on a GPU.
source "$(dirname "$0")/ptx_common.sh"
ptx_compile cuda/cuda_optim.cu "$T/o.ptx"
ptx_check "$T/o.ptx" <<'PY'
import re, sys
from ptx_kernels import opcodes, read_ptx, require_kernel
ptx = read_ptx()
bad = 0

def arithmetic(body):
    return [o for o in opcodes(body)
            if re.match(r"(add|sub|mul|fma|mad|div|sqrt|rcp|ex2|lg2)\.", o) and ".f32" in o]

def check(name, pattern, fma_per, mul_per, with_division):
    """Every f32 operation rounded explicitly; per element (counted by its square root, or by
    its FMA without one) fma_per FMAs, mul_per products and, with_division, 1 division."""
    global bad
    arith = arithmetic(require_kernel(ptx, pattern, name))
    unrounded = sorted(set(o for o in arith if not re.match(r"[a-z]+\.rn\.", o)))
    count = lambda op: sum(1 for o in arith if o == op)
    fma, mul, div, sqrt = (count(n) for n in ("fma.rn.f32", "mul.rn.f32", "div.rn.f32",
                                              "sqrt.rn.f32"))
    elements = sqrt if with_division else fma // fma_per
    print("%s: %d element updates, %d fma.rn, %d mul.rn, %d div.rn, %d sqrt.rn; "
          "f32 ops without .rn: %s" % (name, elements, fma, mul, div, sqrt, unrounded or "none"))
    if unrounded:
        print("FAIL: %s: f32 arithmetic without an explicit rounding modifier (ptxas may fuse "
              "it)" % name); bad = 1
    if (elements < 2 or fma != fma_per * elements or mul != mul_per * elements
            or div != (elements if with_division else 0) or sqrt != div):
        print("FAIL: %s: expected per element %d fma.rn, %d mul.rn%s (the former kernels' "
              "roundings), in both the vectorised and the scalar loop"
              % (name, fma_per, mul_per, ", 1 div.rn, 1 sqrt.rn" if with_division else
                 ", no division or square root")); bad = 1

check("adamw_kernel<false>", r"adamw_kernelILb0E", 4, 5, True)
check("adamw_kernel<true> (EMA target)", r"adamw_kernelILb1E", 5, 6, True)
check("ema_kernel", r"ema_kernel", 1, 1, False)
sys.exit(bad)
PY

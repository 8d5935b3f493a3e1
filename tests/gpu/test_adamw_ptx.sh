#!/usr/bin/env bash
# The one-launch AdamW kernel (cuda/cuda_optim.cu) promises the bits of the former per-tensor
# kernel. Its arithmetic (ops/adamw_math.h, device branch) spells every rounding out with
# intrinsics (__fmaf_rn, __fmul_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), because left to the
# compiler the same expression was contracted differently in the kernel's vectorised and scalar
# loops. That holds only if the PTX carries an explicit rounding modifier on every f32 add, sub,
# mul, fma and div (ptxas may fuse unmodified mul/add pairs into FMAs; .rn ones it keeps) and
# uses no approximate operation, with per element exactly the former kernel's roundings: 4 FMAs
# (first moment, second moment, denominator, decayed update), 4 products, 1 IEEE division and
# 1 IEEE square root. Needs no GPU: cuda/cuda_optim.cu is compiled to PTX with the Makefile's
# device flags and the kernel's body is read. tests/cuda_emu/test_adamw_emulated.sh checks the
# values; test_backend_parity checks them on a GPU.
source "$(dirname "$0")/ptx_common.sh"
ptx_compile cuda/cuda_optim.cu "$T/o.ptx"
ptx_check "$T/o.ptx" <<'PY'
import re, sys
from ptx_kernels import opcodes, read_ptx, require_kernel
body = require_kernel(read_ptx(), "adamw_kernel", "adamw_kernel")
arith = [o for o in opcodes(body)
         if re.match(r"(add|sub|mul|fma|mad|div|sqrt|rcp|ex2|lg2)\.", o) and ".f32" in o]
unrounded = sorted(set(o for o in arith if not re.match(r"[a-z]+\.rn\.", o)))
count = lambda name: sum(1 for o in arith if o == name)
fma, mul, div, sqrt = (count(n) for n in ("fma.rn.f32", "mul.rn.f32", "div.rn.f32", "sqrt.rn.f32"))
print("adamw_kernel: %d element updates (sqrt.rn), %d fma.rn, %d mul.rn, %d div.rn; "
      "f32 ops without .rn: %s" % (sqrt, fma, mul, div, unrounded or "none"))
bad = 0
if unrounded:
    print("FAIL: f32 arithmetic without an explicit rounding modifier (ptxas may fuse it)"); bad = 1
if sqrt < 2 or fma != 4 * sqrt or mul != 4 * sqrt or div != sqrt:
    print("FAIL: expected per element update 4 fma.rn, 4 mul.rn, 1 div.rn, 1 sqrt.rn "
          "(the former kernel's roundings), in both the vectorised and the scalar loop"); bad = 1
sys.exit(bad)
PY

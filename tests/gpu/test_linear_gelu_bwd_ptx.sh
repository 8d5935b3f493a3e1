#!/usr/bin/env bash
# The GELU-fused fc1 bias pass (cuda/cuda_blas.cu GeluBwdRoundedCopy, run by colsum_kernel)
# promises dh = dy * gelu'(h) with the bits of gelu_bwd_kernel and db = the column sum of those
# values. Inlined into the column sum, nvcc (or ptxas, from a plain mul.f32 followed by the
# sum's add.f32) would contract dy * gelu'(h) + acc into one fused multiply-add (one rounding
# instead of two) unless the product is __fmul_rn (mul.rn.f32, never contracted); the GELU slope
# must round as the CPU's formula does (ops/cpu_math.h). This needs no GPU: cuda/cuda_blas.cu
# is compiled to PTX with the Makefile's device flags and that kernel's body is read.
# test_backend_parity checks the numbers on a GPU (fused vs unfused bit for bit).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NVCC=${NVCC:-nvcc}
PYTHON=${PYTHON:-/usr/bin/python3}
command -v "$NVCC" > /dev/null || { echo "skip: no nvcc"; exit 77; }
T=$(mktemp -d /tmp/alice_linear_gelu_ptx.XXXXXX)
trap 'rm -rf "$T"' EXIT
"$NVCC" -O3 -arch="${CUDA_ARCH:-sm_90}" -std=c++17 -I"$ROOT" -I"$ROOT/src" -I"$ROOT/io" -DALICE_CUDA \
  $(pkg-config --cflags hdf5-openmpi 2>/dev/null) -ptx "$ROOT/cuda/cuda_blas.cu" -o "$T/b.ptx" \
  || { echo "FAIL: nvcc could not compile cuda/cuda_blas.cu to PTX"; exit 1; }
"$PYTHON" - "$T/b.ptx" <<'PY'
import re, sys
ptx = open(sys.argv[1]).read()
m = re.search(r"\.entry\s+\S*colsum_kernel\S*GeluBwdRoundedCopy\S*\(.*?\n\}", ptx, re.S)
if not m:
    print("FAIL: no colsum_kernel<..., GeluBwdRoundedCopy> in the PTX of cuda/cuda_blas.cu")
    sys.exit(1)
body = m.group(0)
fused = re.findall(r"\b(?:fma|mad)\S*\.f32\b", body)
inexact = re.findall(r"\b(?:div\.(?:approx|full)\S*|rcp\.approx\S*|ex2\S*|lg2\S*)", body)
muls = len(re.findall(r"\bmul\.rn\.f32\b", body))
contractible = re.findall(r"\bmul\.f32\b", body)  # ptxas may fuse these with an add
bf16 = len(re.findall(r"\bcvt\.rn\.bf16\.f32\b", body))
print("colsum_kernel<1, GeluBwdRoundedCopy>: %d mul.rn.f32, %d contractible mul.f32, %d "
      "cvt.rn.bf16.f32, %d fused multiply-adds, %d approximate ops %s"
      % (muls, len(contractible), bf16, len(fused), len(inexact), sorted(set(fused + inexact))))
if fused or inexact or contractible or muls < 10 or bf16 < 1:
    print("FAIL: the fused GELU bias pass does not run gelu_bwd_kernel's roundings")
    sys.exit(1)
PY
rc=$?
[ $rc -eq 0 ] && echo ok
exit $rc

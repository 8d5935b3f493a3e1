#!/usr/bin/env bash
# The CUDA GELU kernels promise the CPU's results bit for bit (ops/cpu_math.h: one formula,
# every product and sum rounded on its own). That holds only if nvcc emits no fused
# multiply-add in them (it contracts a * b + c by default) and divides correctly rounded. This
# needs no GPU: cuda/cuda_elementwise.cu is compiled to PTX with the Makefile's device flags
# and the two kernels' bodies are read. test_backend_parity checks the numbers on a GPU.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NVCC=${NVCC:-nvcc}
PYTHON=${PYTHON:-/usr/bin/python3}
command -v "$NVCC" > /dev/null || { echo "skip: no nvcc"; exit 77; }
T=$(mktemp -d /tmp/alice_gelu_ptx.XXXXXX)
trap 'rm -rf "$T"' EXIT
# The Makefile's NVCCFLAGS (without -MMD), so the PTX is what the build compiles.
"$NVCC" -O3 -arch="${CUDA_ARCH:-sm_90}" -std=c++17 -I"$ROOT" -I"$ROOT/src" -I"$ROOT/io" -DALICE_CUDA \
  $(pkg-config --cflags hdf5-openmpi 2>/dev/null) -ptx "$ROOT/cuda/cuda_elementwise.cu" -o "$T/e.ptx" \
  || { echo "FAIL: nvcc could not compile cuda/cuda_elementwise.cu to PTX"; exit 1; }
"$PYTHON" - "$T/e.ptx" <<'PY'
import re, sys
ptx = open(sys.argv[1]).read()
bad = 0
for kernel in ("gelu_fwd_kernel", "gelu_bwd_kernel"):
    m = re.search(r"\.entry\s+\S*" + kernel + r"\S*\(.*?\n\}", ptx, re.S)
    if not m:
        print("FAIL: no %s in the PTX" % kernel); bad += 1; continue
    body = m.group(0)
    fused = re.findall(r"\b(?:fma|mad)\S*\.f32\b", body)
    inexact = re.findall(r"\b(?:div\.(?:approx|full)\S*|rcp\.approx\S*|ex2\S*|lg2\S*)", body)
    muls = len(re.findall(r"\bmul\.rn\.f32\b", body))
    print("%s: %d mul.rn.f32, %d fused multiply-adds, %d approximate ops %s"
          % (kernel, muls, len(fused), len(inexact), sorted(set(fused + inexact))))
    if fused or inexact or muls < 10:
        print("FAIL: %s does not run the CPU's roundings" % kernel); bad += 1
sys.exit(1 if bad else 0)
PY
rc=$?
[ $rc -eq 0 ] && echo ok
exit $rc

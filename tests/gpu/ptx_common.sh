# Prologue of the PTX checks (tests/gpu/test_*_ptx.sh), sourced first. They need no GPU: a
# cuda/*.cu file is compiled to PTX with the Makefile's device flags and kernels' bodies are
# read (by Python, with ptx_kernels.py beside this file). Sets
#   ROOT    the repository, PYTHON  the Python for the checks (default /usr/bin/python3),
#   NVCC    the compiler (default nvcc); none: "skip" and exit 77,
#   T       a fresh folder, removed on exit;
# and the functions
#   ptx_compile SOURCE OUT   compiles ROOT/SOURCE (cuda/....cu) to the PTX file OUT; "FAIL" and
#                            exit 1 when nvcc cannot
#   ptx_check PTX            runs the Python script on its standard input (the caller's
#                            here-document) with PTX as its argument and ptx_kernels importable;
#                            prints "ok" when it exits 0; returns its status
# Named without the test_ prefix: tests/run.sh runs tests/*/test_*.sh, and this is no test.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NVCC=${NVCC:-nvcc}
PYTHON=${PYTHON:-/usr/bin/python3}
command -v "$NVCC" > /dev/null || { echo "skip: no nvcc"; exit 77; }
T=$(mktemp -d "/tmp/alice_$(basename "$0" .sh).XXXXXX")
trap 'rm -rf "$T"' EXIT

ptx_compile() {
  # The Makefile's NVCCFLAGS (without -MMD), so the PTX is what the build compiles.
  "$NVCC" -O3 -arch="${CUDA_ARCH:-sm_90}" -std=c++17 -I"$ROOT" -I"$ROOT/src" -I"$ROOT/io" \
    -DALICE_CUDA $(pkg-config --cflags hdf5-openmpi 2>/dev/null) -ptx "$ROOT/$1" -o "$2" \
    || { echo "FAIL: nvcc could not compile $1 to PTX"; exit 1; }
}

ptx_check() {
  local rc
  PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$ROOT/tests/gpu${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" - "$1"
  rc=$?
  [ $rc -eq 0 ] && echo ok
  return $rc
}

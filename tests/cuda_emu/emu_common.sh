# Prologue of the emulated-kernel tests (tests/cuda_emu/test_*_emulated.sh), sourced first:
#   ROOT  the repository, HERE  tests/cuda_emu, PY  the Python that runs cut_kernels.py,
#   CXX   the host compiler (CXX_EMU, default g++); no compiler: "skip" and exit 77,
#   TMP   a fresh folder, removed on exit; TMP/cuda_bf16.h is an empty stand-in, so
#         cuda/cuda_bf16.cuh (its #include <cuda_bf16.h>) compiles against the emulation's bf16.
# and the functions
#   emu_need_threads   for tests on emu_cuda.h (a std::thread per CUDA thread): compile as C++20
#                      with -pthread; "skip" and exit 77 where CXX lacks <barrier> or
#                      std::atomic_ref (emu_cuda.h uses both)
#   emu_cut OUT LAUNCHES STEP...   tests/cuda_emu/cut_kernels.py (usage at its top), its errors
#                      naming the calling test
#   EMU_CUT_LAUNCH_HELPERS   emu_cut's step for cuda/cuda_kernels.cuh's launch helpers (kThreads,
#                      grid sizing, 16-byte packs), which most kernels' launches need:
#                      emu_cut OUT N "${EMU_CUT_LAUNCH_HELPERS[@]}" --cut ...
#   EMU_CUT_REDUCTION_HELPERS   the same helpers and block_sum, for tests on emu_cuda.h
#   emu_compile NAME [FLAG | SOURCE]...   builds TMP/NAME with the common flags (warnings on,
#                      the include paths TMP, HERE, ROOT/src, ROOT), then the arguments
# Named without the test_ prefix: tests/run.sh runs tests/*/test_*.sh, and this is no test.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/cuda_emu"
PY=${PYTHON:-python3}
CXX=${CXX_EMU:-g++}
if ! command -v "$CXX" >/dev/null; then echo "skip: no $CXX for the CUDA emulation"; exit 77; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: > "$TMP/cuda_bf16.h"

EMU_CUT_LAUNCH_HELPERS=(--cut cuda/cuda_kernels.cuh 'constexpr int kThreads'
                        'template <typename T> __device__ __forceinline__ T warp_sum')
# For tests on emu_cuda.h, which defines kThreads and warp_sum itself: the rest of those
# helpers (the reductions' block counts, grid sizing, grid-stride loops, 16-byte packs) and
# block_sum.
EMU_CUT_REDUCTION_HELPERS=(--cut cuda/cuda_kernels.cuh '/* Blocks of a device-wide reduction'
                           'template <typename T> __device__ __forceinline__ T warp_sum'
                           --cut cuda/cuda_kernels.cuh 'template <typename T> __device__ T block_sum'
                           '__device__ inline float block_max')

# The serial emulation (emu_serial.h) needs C++17; emu_need_threads raises it.
EMU_STD=c++17
EMU_THREAD_FLAGS=()

emu_need_threads() {
  if ! echo '#include <atomic>
#include <barrier>
int main() { std::barrier<> b(1); b.arrive_and_wait(); unsigned u = 0; std::atomic_ref<unsigned>(u).fetch_add(1u); }' |
    "$CXX" -std=c++20 -x c++ - -o /dev/null -pthread 2>/dev/null; then
    echo "skip: $CXX has no C++20 <barrier> / std::atomic_ref for the CUDA emulation"; exit 77
  fi
  EMU_STD=c++20
  EMU_THREAD_FLAGS=(-pthread)
}

emu_cut() {
  "$PY" "$HERE/cut_kernels.py" "$1" "$2" --for "tests/cuda_emu/$(basename "$0")" \
    --root "$ROOT" "${@:3}"
}

emu_compile() {
  local name=$1
  shift
  "$CXX" -std="$EMU_STD" -O1 "${EMU_THREAD_FLAGS[@]}" -Wall -Wextra -Wno-unknown-pragmas \
    -I"$TMP" -I"$HERE" -I"$ROOT/src" -I"$ROOT" -o "$TMP/$name" "$@"
}

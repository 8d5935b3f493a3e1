#!/usr/bin/env bash
# The 16-byte vectorised elementwise kernels (cuda/cuda_elementwise.cu, cuda_weight_copy.cu,
# cuda_tokens.cu, cuda_losses.cu; helpers in cuda/cuda_kernels.cuh) run WITHOUT a GPU: their
# source is cut out between fixed markers, the <<<...>>> launches are rewritten to emu_launch,
# and vector_kernels_emulated.cpp runs them serially on the host against the scalar formulas
# (bit for bit; aligned, shifted and mixed pointers; tails; strided grids). What this cannot
# see (real 16-byte transactions, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/cuda_emu"
PY=${PYTHON:-python3}
CXX=${CXX_EMU:-g++}
if ! command -v "$CXX" >/dev/null; then echo "skip: no $CXX for the CUDA emulation"; exit 77; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" - "$ROOT" "$TMP/vector_kernels.inc" <<'PYEOF'
import re, sys
root, out = sys.argv[1], sys.argv[2]
# (file, first line of the section, first line after it)
sections = [
    ('cuda/cuda_kernels.cuh', 'constexpr int kThreads',
     'template <typename T> __device__ __forceinline__ T warp_sum'),
    ('cuda/cuda_elementwise.cu', '/* Width of the float4 path', 'struct SquareOf'),
    ('cuda/cuda_elementwise.cu', 'template <typename T>\nstatic __global__ void gelu_fwd_kernel',
     'static __global__ void leaky_relu_fwd_kernel'),
    ('cuda/cuda_weight_copy.cu', '/* 8 values per thread', 'void gpu_set_weight_copies'),
    ('cuda/cuda_tokens.cu', '/* Patchify / unpatchify', 'static __global__ void scatter_add_rows_kernel'),
    ('cuda/cuda_losses.cu', '/* One block per row (grid-stride over rows): coef',
     'void cuda_masked_mse_bwd'),
]
parts = []
for path, start, end in sections:
    src = open('%s/%s' % (root, path)).read()
    a = src.find(start)
    b = src.find(end, a + 1) if a >= 0 else -1
    if a < 0 or b < 0:
        sys.exit('%s changed shape (marker %r or %r not found): update '
                 'tests/cuda_emu/test_vector_kernels_emulated.sh' % (path, start, end))
    parts.append(src[a:b])
text, n = re.subn(r'([A-Za-z_]\w*(?:<[^<>()]*>)?)\s*<<<(.*?)>>>\s*\(',
                  lambda m: 'emu_launch(%s, %s, ' % (m.group(1), m.group(2)), '\n'.join(parts),
                  flags=re.S)
if n != 6:
    sys.exit('expected 6 kernel launches in the cut sections, found %d: update '
             'tests/cuda_emu/test_vector_kernels_emulated.sh' % n)
open(out, 'w').write(text)
PYEOF
"$CXX" -std=c++17 -O1 -Wall -Wextra -Wno-unknown-pragmas -I"$TMP" -I"$ROOT/src" -I"$ROOT" \
  -o "$TMP/vector_emulated" "$HERE/vector_kernels_emulated.cpp"
"$TMP/vector_emulated"

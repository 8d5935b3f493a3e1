#!/usr/bin/env bash
# The fused attention kernels (cuda/cuda_flash_attention.cu) run WITHOUT a GPU: the kernel
# source, with its <<<...>>> launches and its extern __shared__ array rewritten mechanically,
# is compiled by g++ against the host emulation in emu_cuda.h (one thread per CUDA thread,
# barriers, wmma as plain 16x16 math) and checked against a double-precision reference
# (flash_attention_emulated.cpp): fp32 and bf16 branches, Tq != Tk, packed qkv, tails,
# Dh 8/24/32/64 and the runtime-Dh kernels. What the emulation cannot see (real wmma fragment
# layouts, shared-memory limits, speed) is left to test_backend_parity on a GPU.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tests/cuda_emu"
PY=${PYTHON:-python3}
CXX=${CXX_EMU:-g++}
if ! command -v "$CXX" >/dev/null; then echo "skip: no $CXX for the CUDA emulation"; exit 77; fi
if ! echo '#include <barrier>
int main() { std::barrier<> b(1); b.arrive_and_wait(); }' | "$CXX" -std=c++20 -x c++ - -o /dev/null -pthread 2>/dev/null; then
  echo "skip: $CXX has no C++20 <barrier>"; exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/cuda"
# The kernel file's CUDA includes resolve to the emulation; the element-type conversions that
# the real cuda_kernels.cuh includes (cuda/cuda_bf16.cuh) compile against it as they are.
printf '#include "emu_cuda.h"\n#include "cuda/cuda_bf16.cuh"\n' > "$TMP/cuda/cuda_kernels.cuh"
: > "$TMP/cuda_bf16.h"
: > "$TMP/mma.h"
"$PY" - "$ROOT/cuda/cuda_flash_attention.cu" "$TMP/flash_kernels.cpp" "$ROOT" "$TMP" <<'PYEOF'
import os, re, sys
# The register-resident kernels' headers: their shared arrays (they launch nothing).
hdr_shared = 'extern __shared__ __align__(16) unsigned char smem[];'
for name, kernels in (('cuda_flash_fwd_mma.cuh', 1), ('cuda_flash_bwd_mma.cuh', 2),
                      ('cuda_flash_mma_common.cuh', 0)):
    hdr = open(os.path.join(sys.argv[3], 'cuda', name)).read()
    if hdr.count(hdr_shared) != kernels:
        sys.exit('%s changed shape: update tests/cuda_emu/test_flash_attention_emulated.sh' % name)
    with open(os.path.join(sys.argv[4], 'cuda', name), 'w') as f:
        f.write(hdr.replace(hdr_shared, 'unsigned char *smem = emu_smem;'))
src = open(sys.argv[1]).read()
# kernel<<<grid, block, smem, stream>>>(args) -> emu_launch(kernel, grid, block, smem, stream, args)
out, n = re.subn(r'([A-Za-z_]\w*(?:<[^<>()]*>)?)\s*<<<(.*?)>>>\s*\(',
                 lambda m: 'emu_launch(%s, %s, ' % (m.group(1), m.group(2)), src, flags=re.S)
shared = 'extern __shared__ __align__(kSmemAlign) unsigned char smem[];'
count = out.count(shared)
out = out.replace(shared, 'unsigned char *smem = emu_smem;')
if n < 4 or count < 3:
    sys.exit('cuda_flash_attention.cu changed shape: %d launches, %d shared arrays rewritten; '
             'update tests/cuda_emu/test_flash_attention_emulated.sh' % (n, count))
open(sys.argv[2], 'w').write(out)
PYEOF
"$CXX" -std=c++20 -O1 -pthread -w -I"$TMP" -I"$HERE" -I"$ROOT" -I"$ROOT/src" \
  -o "$TMP/flash_emulated" "$HERE/flash_attention_emulated.cpp" "$TMP/flash_kernels.cpp"
"$TMP/flash_emulated"

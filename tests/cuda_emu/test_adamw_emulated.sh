#!/usr/bin/env bash
# The one-launch AdamW kernel (cuda/cuda_optim.cu: a whole ParamSet per launch, weight decay per
# element from the decay bitmask; helpers in cuda/cuda_kernels.cuh) runs WITHOUT a GPU: its
# source is cut out between fixed markers, the <<<...>>> launch is rewritten to emu_launch, the
# pack loads/stores get an alignment check, and adamw_emulated.cpp runs it serially on the host
# (emu_serial.h) against the former per-tensor kernel's formula, bit for bit (see that file for
# the cases). -ffp-contract=off: the host compiler must not fuse what the device rounds apart.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
# Every 16-byte (or narrower) pack access checks its alignment, as the GPU would fault.
emu_cut "$TMP/adamw_kernel.inc" 1 \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_optim.cu '/* AdamW over a whole ParamSet in one launch' 'static __global__ void ema_kernel' \
  --replace 'return *reinterpret_cast<const Pack<T, W> *>(p);' \
            'emu_check_aligned(p, alignof(Pack<T, W>)); return *reinterpret_cast<const Pack<T, W> *>(p);' 1 \
  --replace '*reinterpret_cast<Pack<T, W> *>(p) = v;' \
            'emu_check_aligned(p, alignof(Pack<T, W>)); *reinterpret_cast<Pack<T, W> *>(p) = v;' 1
emu_compile adamw_emulated -ffp-contract=off "$HERE/adamw_emulated.cpp"
"$TMP/adamw_emulated"

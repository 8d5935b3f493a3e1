#!/usr/bin/env bash
# The one-launch AdamW kernel (cuda/cuda_optim.cu: a whole ParamSet per launch, weight decay per
# element from the decay bitmask, clipping's gradient factor and optionally the EMA target in
# the same pass) and the EMA kernel (helpers in cuda/cuda_kernels.cuh) run WITHOUT a GPU: the
# source from the EMA helpers to the per-segment clipping is cut out, the three <<<...>>>
# launches are rewritten to emu_launch, the pack loads/stores get an alignment check, and
# adamw_emulated.cpp runs them serially on the host (emu_serial.h) against the former scale,
# per-tensor AdamW and EMA kernels' formulas, bit for bit (see that file for the cases).
# -ffp-contract=off: the host compiler must not fuse what the device rounds apart.
set -euo pipefail
source "$(dirname "$0")/emu_common.sh"
# Every 16-byte (or narrower) pack access checks its alignment, as the GPU would fault.
emu_cut "$TMP/adamw_kernel.inc" 3 \
  "${EMU_CUT_LAUNCH_HELPERS[@]}" \
  --cut cuda/cuda_optim.cu '/* ---- EMA target update' '/* ---- per-segment clipping' \
  --replace 'return *reinterpret_cast<const Pack<T, W> *>(p);' \
            'emu_check_aligned(p, alignof(Pack<T, W>)); return *reinterpret_cast<const Pack<T, W> *>(p);' 1 \
  --replace '*reinterpret_cast<Pack<T, W> *>(p) = v;' \
            'emu_check_aligned(p, alignof(Pack<T, W>)); *reinterpret_cast<Pack<T, W> *>(p) = v;' 1
emu_compile adamw_emulated -ffp-contract=off "$HERE/adamw_emulated.cpp"
"$TMP/adamw_emulated"

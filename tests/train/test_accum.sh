#!/usr/bin/env bash
# Gradient accumulation (accum_steps): a step of k micro-batches of batch b trains as a step of
# one batch of k b: the same samples, masks and drop-path draws (keyed by global sample), the
# gradients and loss terms averaged over the micro-batches, DINO's centers updated from the
# mean of their teacher rows. Checked for Alice pre-training (align_loss = dino, drop-path;
# 1 rank x batch 1 x 2 micro-batches against 1 x batch 2, and 2 ranks x batch 1 x 2 against
# 1 x batch 4) and UNETR fine-tuning (batch 1 x 2 against batch 2, 2 steps: its tiny instance
# norms make longer runs ill-conditioned, see test_finetune_ranks.sh): every tensor of params,
# the EMA target, the DINO centers and both AdamW moments in the last checkpoint, and the logged
# loss and gradient norm (a gradient summed instead of averaged over the micro-batches doubles
# the norm). fp32 sums in another order: 1e-4 relative (fine-tuning 1e-3).
source "$(dirname "$0")/lib.sh"
compare() {  # compare <dir A> <dir B> <checkpoint> <tolerance> <label>
  PYTHONPATH="$ROOT/tests/train" "$PYTHON" - "$@" <<'PY'
import sys, h5py, numpy as np
from run_compare import compare_states, metrics
a, b, ckpt, tol, label = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
count, exact, worst, worst_name, _ = compare_states(f"{a}/{ckpt}", f"{b}/{ckpt}")
with h5py.File(f"{a}/{ckpt}") as fa, h5py.File(f"{b}/{ckpt}") as fb:
    centers = [n for n in ("buffers/center.cls", "buffers/center.tokens") if n in fa]
    cworst = max([np.linalg.norm(fa[n][()] - fb[n][()]) / np.linalg.norm(fa[n][()])
                  for n in centers] or [0.0])
ma, mb = metrics(a), metrics(b)
dl = np.max(np.abs(ma["loss"] - mb["loss"]) / np.abs(ma["loss"]))
dg = np.max(np.abs(ma["grad_norm"] - mb["grad_norm"]) / np.abs(ma["grad_norm"]))
print(f"{label}: {count} tensors ({exact} bit-identical), worst {worst:.2e} ({worst_name}); "
      f"centers {cworst:.2e} ({len(centers)}); loss {dl:.1e}, grad_norm {dg:.1e}")
assert count > 100, f"FAIL: only {count} tensors compared"
assert worst < tol and cworst < tol, f"FAIL: {worst_name} {worst:.2e}, centers {cworst:.2e}"
assert len(ma) == len(mb) and dl < tol / 10 and dg < tol / 10, \
    f"FAIL: loss {dl:.2e} or grad_norm {dg:.2e} differ"
PY
}
PT=(--config "$MICRO" align_loss=dino drop_path=0.5)
"$ALICE" pretrain "${PT[@]}" run_dir="$WORK/b2" batch=2 > "$WORK/b2.log" 2>&1 ||
  { tail -20 "$WORK/b2.log"; fail "batch 2 run failed"; }
"$ALICE" pretrain "${PT[@]}" run_dir="$WORK/a2" batch=1 accum_steps=2 > "$WORK/a2.log" 2>&1 ||
  { tail -20 "$WORK/a2.log"; fail "accum_steps = 2 run failed"; }
grep -q "gradient accumulation: 2 micro-batches of 1 per step and rank, a global batch of 2" \
  "$WORK/a2.log" || fail "accumulation not announced"
compare "$WORK/b2" "$WORK/a2" ckpt_6.h5 1e-4 "alice, batch 1 x 2 micro-batches = batch 2"
"$ALICE" pretrain "${PT[@]}" run_dir="$WORK/b4" batch=4 > "$WORK/b4.log" 2>&1 ||
  { tail -20 "$WORK/b4.log"; fail "batch 4 run failed"; }
mpirun_n 2 "$ALICE" pretrain "${PT[@]}" run_dir="$WORK/r2a2" batch=1 accum_steps=2 \
  > "$WORK/r2a2.log" 2>&1 || { tail -20 "$WORK/r2a2.log"; fail "2-rank accumulation failed"; }
compare "$WORK/b4" "$WORK/r2a2" ckpt_6.h5 1e-4 "alice, 2 ranks x batch 1 x 2 = batch 4"
FT=(--config "$ROOT/jobs/finetune_tiny.cfg" data=synthetic synthetic_cases=4 crop=32,32,32
    patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48 feature_size=4 steps=2 warmup=1
    val_every=1000 ckpt_every=2 log_every=1 threads=1 prefetch=1 fold=-1 drop_path=0.6)
"$ALICE" finetune "${FT[@]}" run_dir="$WORK/fb2" batch=2 > "$WORK/fb2.log" 2>&1 ||
  { tail -20 "$WORK/fb2.log"; fail "fine-tuning batch 2 failed"; }
"$ALICE" finetune "${FT[@]}" run_dir="$WORK/fa2" batch=1 accum_steps=2 > "$WORK/fa2.log" 2>&1 ||
  { tail -20 "$WORK/fa2.log"; fail "fine-tuning accum_steps = 2 failed"; }
compare "$WORK/fb2" "$WORK/fa2" ckpt_2.h5 1e-3 "unetr, batch 1 x 2 micro-batches = batch 2"

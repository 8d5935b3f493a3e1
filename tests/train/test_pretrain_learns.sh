#!/usr/bin/env bash
# It learns: Alice through the whole command (phantoms, matched crops, all four views): every
# loss term (l_r, l_dv, l_st) is lower over the last 10 steps than over the first 10.
# (The 5x fall of the MAE reconstruction loss on a fixed set is tests/unit/test_mae_learns.c.)
source "$(dirname "$0")/lib.sh"
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/alice" steps=80 warmup=10 lr=1e-3 \
  ckpt_every=80 log_every=40 > "$WORK/alice.log"
"$PYTHON" - "$WORK" <<'PY'
import sys, numpy as np
w = sys.argv[1]
al = np.genfromtxt(w + "/alice/metrics.csv", delimiter=",", names=True)
for term in ("l_r", "l_dv", "l_st"):
    a, b = al[term][:10].mean(), al[term][-10:].mean()
    print(f"Alice {term}: first 10 {a:.4f}, last 10 {b:.4f}")
    assert b < a, f"FAIL: {term} did not decrease"
PY

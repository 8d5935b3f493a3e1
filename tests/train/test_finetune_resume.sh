#!/usr/bin/env bash
# A fine-tuning run preempted and resumed (no flag) reproduces the uninterrupted run exactly:
# the same losses in metrics.csv (bit for bit as printed, %.9g), the same validations in
# val.csv and the same final checkpoint (every tensor, AdamW moments included) and best
# checkpoint. The preemption is deterministic: alice starts with SIGUSR1 blocked and pending
# (as test_finetune_preempt.sh), so the first run checkpoints after step 1 and exits 3.
# test_pretrain_resume.sh checks the same for pre-training.
source "$(dirname "$0")/lib.sh"
cfg=$ROOT/jobs/finetune_tiny.cfg
args=(steps=5 warmup=1 val_every=2 ckpt_every=100 log_every=1 threads=1)
"$ALICE" finetune --config "$cfg" run_dir="$WORK/full" "${args[@]}" > "$WORK/full.log" 2>&1 ||
  { tail "$WORK/full.log"; fail "the uninterrupted run failed"; }
rc=0
"$PYTHON" - "$ALICE" "$cfg" run_dir="$WORK/split" "${args[@]}" > "$WORK/a.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])   # inherited by the child
p = subprocess.Popen([sys.argv[1], "finetune", "--config", sys.argv[2]] + sys.argv[3:])
os.kill(p.pid, signal.SIGUSR1)                                  # pending until alice unblocks it
sys.exit(p.wait())
PY
[ "$rc" = 3 ] || { tail "$WORK/a.log"; fail "the preempted run exited with $rc, expected 3"; }
[ -f "$WORK/split/ckpt_1.h5" ] || fail "the preempted run left no ckpt_1.h5"
"$ALICE" finetune --config "$cfg" run_dir="$WORK/split" "${args[@]}" > "$WORK/b.log" 2>&1 ||
  { tail "$WORK/b.log"; fail "the resumed run failed"; }
grep -q "resumed from .*ckpt_1.h5 at step 1" "$WORK/b.log" || fail "the second run did not resume at step 1"
# Losses: the columns before the timings.
for f in full split; do cut -d, -f1-6 "$WORK/$f/metrics.csv" > "$WORK/$f.csv"; done
diff "$WORK/full.csv" "$WORK/split.csv" || fail "resumed losses differ from the uninterrupted run"
diff "$WORK/full/val.csv" "$WORK/split/val.csv" || fail "resumed validations differ"
"$PYTHON" - "$WORK/full" "$WORK/split" <<'PY' || fail "the checkpoints differ"
import sys, h5py, numpy as np
for name in ("ckpt_5.h5", "ckpt_best.h5"):
    a, b = h5py.File(f"{sys.argv[1]}/{name}", "r"), h5py.File(f"{sys.argv[2]}/{name}", "r")
    names = []
    a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
    assert len(names) > 50 and any(n.startswith("adam_v/") for n in names), names[:5]
    assert int(a.attrs["step"]) == int(b.attrs["step"]), (name, a.attrs["step"], b.attrs["step"])
    for n in names:
        assert np.array_equal(a[n][()], b[n][()]), f"{name}: {n} differs after resume"
    print(f"{name}: step {int(a.attrs['step'])}, {len(names)} tensors identical")
PY
echo "ok: preempted after step 1 and resumed: losses, validations and checkpoints identical"
echo PASS

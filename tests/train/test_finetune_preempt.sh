#!/usr/bin/env bash
# A fine-tuning run preempted before a validation checkpoints and stops at once instead of
# validating first (a validation over whole volumes can outlast the 120 s --signal lead), then
# resumes, gives the skipped validation first and then validates on schedule. Deterministic:
# alice starts with SIGUSR1 blocked and already pending (the mask survives exec), so the signal
# is delivered when alice installs its handlers (src/core/preempt.c unblocks them), before step
# 1; with val_every = 1, step 1's validation is the first one due. Expected: exit status 3
# (requeue), "validation after step 1 skipped", ckpt_1.h5, no val.csv row; then the resumed run
# validates after step 1 (on ckpt_1's weights) before its first step and after steps 2 and 3:
# val.csv and ckpt_best.h5 equal an uninterrupted run's. Between the two, a start that is
# signalled as well (pending again) owes step 1's validation but must not give it (it may
# outlast the signal's lead) nor run a step (the validation would then be lost): it exits 3 at
# once, writing nothing; it had validated in full, then stepped and checkpointed.
source "$(dirname "$0")/lib.sh"
cfg=$ROOT/jobs/finetune_tiny.cfg
args=(run_dir="$WORK/ft" steps=3 warmup=1 val_every=1 ckpt_every=100 log_every=1)
signalled() { alice_signalled finetune --config "$cfg" "$@"; }   # SIGUSR1 pending at start
rc=0
signalled "${args[@]}" > "$WORK/a.log" 2>&1 || rc=$?
cat "$WORK/a.log" | tail -n 8
[ "$rc" = 3 ] || fail "the preempted run exited with $rc, expected 3 (checkpointed for requeue)"
grep -q "validation after step 1 skipped" "$WORK/a.log" || fail "step 1's validation was not skipped"
grep -q "validation after step 1:" "$WORK/a.log" && fail "step 1's validation ran although preempted"
[ -f "$WORK/ft/ckpt_1.h5" ] || fail "no checkpoint after step 1"
rows=$(grep -cE '^[0-9]' "$WORK/ft/val.csv" 2>/dev/null || true)
[ "${rows:-0}" = 0 ] || fail "val.csv has rows from the preempted run: $(cat "$WORK/ft/val.csv")"

rc=0
signalled "${args[@]}" > "$WORK/a2.log" 2>&1 || rc=$?
tail -n 3 "$WORK/a2.log"
[ "$rc" = 3 ] || fail "the start signalled again exited with $rc, expected 3"
grep -q "stopped again before the validation after step 1" "$WORK/a2.log" ||
  fail "the start signalled again did not say it left step 1's validation to the next start"
grep -q "validation after step 1:" "$WORK/a2.log" && fail "step 1's validation ran although stopped"
[ "$(cd "$WORK/ft" && ls ckpt_*.h5)" = "ckpt_1.h5" ] ||
  fail "the start signalled again ran a step: $(ls "$WORK/ft")"

"$ALICE" finetune --config "$cfg" "${args[@]}" > "$WORK/b.log" 2>&1 || { tail "$WORK/b.log"; fail "resumed run failed"; }
grep -q "resumed from .*ckpt_1.h5 at step 1" "$WORK/b.log" || fail "the second run did not resume at step 1"
grep -q "validation after step 1, which the preempted run skipped" "$WORK/b.log" ||
    fail "the resumed run did not give step 1's skipped validation"
steps=$(cut -d, -f1 "$WORK/ft/val.csv" | grep -E '^[0-9]+$' | tr '\n' ' ')
[ "$steps" = "1 2 3 " ] || fail "val.csv has validations after steps '$steps', expected '1 2 3 '"
"$ALICE" finetune --config "$cfg" "${args[@]}" run_dir="$WORK/whole" > "$WORK/c.log" 2>&1 ||
    { tail "$WORK/c.log"; fail "uninterrupted run failed"; }
diff "$WORK/whole/val.csv" "$WORK/ft/val.csv" ||
    fail "val.csv of the preempted and resumed run differs from the uninterrupted run's"
"$PYTHON" - "$WORK/whole/ckpt_best.h5" "$WORK/ft/ckpt_best.h5" <<'PY' ||
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = []
a["params"].visit(lambda n: names.append(n) if isinstance(a["params"][n], h5py.Dataset) else None)
assert len(names) > 20 and a.attrs["step"] == b.attrs["step"], (len(names), a.attrs["step"])
bad = [n for n in names if not np.array_equal(a["params"][n][()], b["params"][n][()])]
sys.exit(f"{len(bad)} tensors differ, e.g. {bad[:3]}" if bad else 0)
PY
    fail "ckpt_best.h5 differs from the uninterrupted run's"
echo "ok: preempted before step 1's validation -> checkpoint, status 3; resumed, validated" \
     "after 1, 2 and 3 as the uninterrupted run"

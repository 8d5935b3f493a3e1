#!/usr/bin/env bash
# A fine-tuning run preempted before a validation checkpoints and stops at once instead of
# validating first (a validation over whole volumes can outlast the 120 s --signal lead), then
# resumes and validates on schedule. Deterministic: alice starts with SIGUSR1 blocked and
# already pending (the mask survives exec), so the signal is delivered when alice installs its
# handlers (src/core/preempt.c unblocks them), before step 1; with val_every = 1, step 1's
# validation is the first one due. Expected: exit status 3 (requeue), "validation after step 1
# skipped", ckpt_1.h5, no val.csv row; then the resumed run finishes steps 2-3 with a validation
# after each (val.csv rows for steps 2 and 3, none for step 1).
source "$(dirname "$0")/lib.sh"
cfg=$ROOT/jobs/finetune_tiny.cfg
args=(run_dir="$WORK/ft" steps=3 warmup=1 val_every=1 ckpt_every=100 log_every=1)
rc=0
"$PYTHON" - "$ALICE" "$cfg" "${args[@]}" > "$WORK/a.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])   # inherited by the child
p = subprocess.Popen([sys.argv[1], "finetune", "--config", sys.argv[2]] + sys.argv[3:])
os.kill(p.pid, signal.SIGUSR1)                                  # pending until alice unblocks it
sys.exit(p.wait())
PY
cat "$WORK/a.log" | tail -n 8
[ "$rc" = 3 ] || fail "the preempted run exited with $rc, expected 3 (checkpointed for requeue)"
grep -q "validation after step 1 skipped" "$WORK/a.log" || fail "step 1's validation was not skipped"
grep -q "validation after step 1:" "$WORK/a.log" && fail "step 1's validation ran although preempted"
[ -f "$WORK/ft/ckpt_1.h5" ] || fail "no checkpoint after step 1"
rows=$(grep -cE '^[0-9]' "$WORK/ft/val.csv" 2>/dev/null || true)
[ "${rows:-0}" = 0 ] || fail "val.csv has rows from the preempted run: $(cat "$WORK/ft/val.csv")"

"$ALICE" finetune --config "$cfg" "${args[@]}" > "$WORK/b.log" 2>&1 || { tail "$WORK/b.log"; fail "resumed run failed"; }
grep -q "resumed from .*ckpt_1.h5 at step 1" "$WORK/b.log" || fail "the second run did not resume at step 1"
steps=$(cut -d, -f1 "$WORK/ft/val.csv" | grep -E '^[0-9]+$' | tr '\n' ' ')
[ "$steps" = "2 3 " ] || fail "val.csv has validations after steps '$steps', expected '2 3 '"
echo "ok: preempted before step 1's validation -> checkpoint, status 3; resumed, validated after 2 and 3"

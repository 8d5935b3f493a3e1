#!/usr/bin/env bash
# A preemption signal during a training run's start-up (model set-up, the resume checkpoint's
# load, the data source: phantoms generated in memory here, a data set opened on a cluster)
# is taken like one during the steps: the run checkpoints at its first step boundary and exits
# 3 for requeue. The handlers used to be installed only just before the loader started, so
# SIGUSR1 in that window ended the process (exit 138): Slurm saw a failure, no requeue.
# SIGUSR1 is sent as soon as the run prints its model line, in the window either way.
source "$(dirname "$0")/lib.sh"
rc=0
"$PYTHON" - "$ALICE" "$MICRO" "$WORK/run" > "$WORK/a.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys, time
alice, cfg, run = sys.argv[1:4]
log = open(run + ".out", "w")
p = subprocess.Popen([alice, "pretrain", "--config", cfg, f"run_dir={run}", "steps=4",
                      "ckpt_every=100", "synthetic_cases=12"], stdout=log, stderr=subprocess.STDOUT)
deadline = time.time() + 120
while time.time() < deadline and p.poll() is None:
    with open(run + ".out") as f:
        if any(line.startswith("model:") or " model: " in line for line in f):
            break
    time.sleep(0.01)
os.kill(p.pid, signal.SIGUSR1)
rc = p.wait()
print(open(run + ".out").read()[-600:])
sys.exit(rc if rc >= 0 else 128 - rc)
PY
tail -n 6 "$WORK/a.log"
[ "$rc" = 3 ] || fail "a signal during start-up: exit status $rc, expected 3 (checkpoint, requeue)"
ls "$WORK/run"/ckpt_*.h5 > /dev/null 2>&1 || fail "no checkpoint written after the signal"
echo "ok: a preemption signal during start-up checkpoints at the first step and exits 3"

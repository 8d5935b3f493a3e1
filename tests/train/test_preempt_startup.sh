#!/usr/bin/env bash
# A preemption signal during a training run's start-up (model set-up, the resume checkpoint's
# load, the data source: phantoms generated in memory here, a data set opened on a cluster)
# is taken like one during the steps: the run checkpoints at its first step boundary and exits
# 3 for requeue. The handlers used to be installed only just before the loader started, so
# SIGUSR1 in that window ended the process (exit 138): Slurm saw a failure, no requeue.
# SIGUSR1 is sent as soon as the run prints its model line, in the window either way.
# Earlier still: while the command line is read, before the backend and the model exist (the
# handlers now go in before MPI_Init, which at scale can take seconds; they had gone in only
# once the backend was chosen: exit 138). The run is held there deterministically by a job file
# that is a named pipe: signalled while it waits for the file's text, then given the text.
# A benchmark (--bench-steps), which never checks the flag, gets back what the process had: a
# launcher that blocked SIGUSR1 leaves it pending, and the benchmark finishes (status 0).
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

# the signal while the job file (a named pipe) is read: before the backend and the model exist
mkfifo "$WORK/job.fifo"
rc=0
"$PYTHON" - "$ALICE" "$MICRO" "$WORK/early" "$WORK/job.fifo" > "$WORK/b.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys, time
alice, cfg, run, fifo = sys.argv[1:5]
p = subprocess.Popen([alice, "pretrain", "--config", fifo, f"run_dir={run}", "steps=4",
                      "ckpt_every=100"], stdout=open(run + ".out", "w"), stderr=subprocess.STDOUT)
w = open(fifo, "w")   # returns once alice has opened the pipe to read its job file
os.kill(p.pid, signal.SIGUSR1)
time.sleep(0.2)       # delivered meanwhile: a default action would have ended the process
try:
    w.write(open(cfg).read())
    w.close()
except BrokenPipeError:
    pass              # the process ended: its status says so
rc = p.wait()
print(open(run + ".out").read()[-600:])
sys.exit(rc if rc >= 0 else 128 - rc)
PY
tail -n 4 "$WORK/b.log"
[ "$rc" = 3 ] || fail "a signal while the job file is read: exit status $rc, expected 3"
ls "$WORK/early"/ckpt_*.h5 > /dev/null 2>&1 || fail "no checkpoint written after the early signal"
echo "ok: a preemption signal before the model exists checkpoints at the first step and exits 3"

# a benchmark started with SIGUSR1 blocked, and sent it at once and while it runs (its threads
# too keep the launcher's mask): it stays pending, the benchmark ends 0
rc=0
"$PYTHON" - "$ALICE" "$MICRO" > "$WORK/c.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])   # inherited by the child
p = subprocess.Popen([sys.argv[1], "pretrain", "--config", sys.argv[2], "crop=64,64,32",
                      "--bench-steps", "60"])
os.kill(p.pid, signal.SIGUSR1)
time.sleep(1.5)
if p.poll() is None:
    os.kill(p.pid, signal.SIGUSR1)
rc = p.wait()
sys.exit(rc if rc >= 0 else 128 - rc)
PY
[ "$rc" = 0 ] ||
  { tail -n 4 "$WORK/c.log"; fail "a benchmark with SIGUSR1 blocked and sent: exit $rc, not 0"; }
echo "ok: a benchmark started with SIGUSR1 blocked keeps it pending and finishes"

# a benchmark takes no preemption signal: SIGTERM ends it as any process (143), whether sent
# while it runs or while it still reads its job file (the start-up handlers give the signal
# back when the benchmark uninstalls them); a benchmark that kept the handlers, or swallowed
# the early signal, ran to its end and exited 0
rc=0
"$PYTHON" - "$ALICE" "$MICRO" "$WORK/bench.fifo" > "$WORK/d.log" 2>&1 <<'PY' || rc=$?
import os, signal, subprocess, sys, time
alice, cfg, fifo = sys.argv[1:4]
bench = ["crop=64,64,32", "--bench-steps", "200"]
p = subprocess.Popen([alice, "pretrain", "--config", cfg] + bench)
time.sleep(2.0)
os.kill(p.pid, signal.SIGTERM)
mid = p.wait()
os.mkfifo(fifo)
p = subprocess.Popen([alice, "pretrain", "--config", fifo] + bench)
w = open(fifo, "w")   # alice reads its job file: the start-up handlers are in
os.kill(p.pid, signal.SIGTERM)
time.sleep(0.2)
try:
    w.write(open(cfg).read())
    w.close()
except BrokenPipeError:
    pass
early = p.wait()
print(f"SIGTERM mid-benchmark: {mid}; while its job file is read: {early}")
sys.exit(0 if mid == early == -signal.SIGTERM else 1)
PY
tail -n 2 "$WORK/d.log"
[ "$rc" = 0 ] || fail "a benchmark sent SIGTERM did not end by it (statuses above)"
echo "ok: SIGTERM ends a benchmark, sent while it runs or while it starts"

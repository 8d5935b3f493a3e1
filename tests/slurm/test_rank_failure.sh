#!/usr/bin/env bash
# Rank failure: `mpirun -np 2 alice pretrain` with one rank killed (SIGKILL) mid-run must end
# within a bounded time (no hang in a collective), non-zero, and leave the run directory's
# latest checkpoint loadable (h5py opens it and it holds tensors and a step). Then a new run in
# the same directory resumes from that checkpoint by itself.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_alice_command pretrain
cfg=$SLURM_TEST_REPO/jobs/pretrain_tiny.cfg
[ -r "$cfg" ] || { echo "FAIL: $cfg missing"; exit 1; }
slurm_test_tmp
run=$SLURM_TEST_TMP/run
limit=${RANK_FAILURE_LIMIT_S:-60}
steps=16

mpirun -np 2 --oversubscribe "$ALICE" pretrain --config "$cfg" run_dir="$run" steps=$steps \
  ckpt_every=2 threads=1 >"$SLURM_TEST_TMP/run.log" 2>&1 &
launcher=$!
# Wait for a checkpoint to exist, then kill the rank that does not write checkpoints.
t0=$SECONDS
until ls "$run"/ckpt_*.h5 >/dev/null 2>&1; do
  kill -0 $launcher 2>/dev/null || { cat "$SLURM_TEST_TMP/run.log"; echo "FAIL: run ended before a checkpoint"; exit 1; }
  [ $((SECONDS - t0)) -lt 180 ] || { echo "FAIL: no checkpoint after 180 s"; kill $launcher; exit 1; }
  sleep 0.2
done
victim=""
for pid in $(pgrep -P $launcher); do
  grep -q '^OMPI_COMM_WORLD_RANK=1$' <(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) && victim=$pid
done
[ -n "$victim" ] || { echo "FAIL: could not find rank 1 among the children of mpirun ($launcher)"; kill $launcher; exit 1; }
echo "killing rank 1 (pid $victim) with SIGKILL"
kill -KILL "$victim"
t_kill=$SECONDS
rc=0
timeout "$limit" tail --pid=$launcher -f /dev/null || rc=$?
if [ $rc = 124 ]; then
  kill -KILL $launcher 2>/dev/null; cat "$SLURM_TEST_TMP/run.log"
  echo "FAIL: the job did not end within ${limit}s of losing a rank (hang)"; exit 1
fi
wait $launcher && { echo "FAIL: the job exited 0 after losing a rank"; exit 1; } || rc=$?
echo "job ended $((SECONDS - t_kill)) s after the kill, status $rc"
tail -n 15 "$SLURM_TEST_TMP/run.log" | sed 's/^/  | /'

# The latest complete checkpoint, the one a restart would load (same rule as the scripts).
source "$SLURM_TEST_REPO/slurm/common.sh"
latest=$(alice_latest_ckpt "$run") || { echo "FAIL: no complete checkpoint left in $run"; exit 1; }
"$PYTHON" - "$latest" <<'PY'
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    names = []
    f.visit(names.append)
    datasets = [n for n in names if isinstance(f[n], h5py.Dataset)]
    attrs = dict(f.attrs)
    print(f"{path}: {len(datasets)} datasets, attributes {sorted(attrs)}")
    assert len(datasets) > 0, "checkpoint holds no tensors"
    for n in datasets[:3]:
        f[n][...]  # every byte readable
PY

# A fresh run in the same directory resumes from that checkpoint without any flag.
mpirun -np 2 --oversubscribe "$ALICE" pretrain --config "$cfg" run_dir="$run" steps=$steps \
  ckpt_every=1000 threads=1 >"$SLURM_TEST_TMP/resume.log" 2>&1 ||
  { tail -n 30 "$SLURM_TEST_TMP/resume.log"; echo "FAIL: the resumed run failed"; exit 1; }
grep -qi "resum" "$SLURM_TEST_TMP/resume.log" ||
  { tail -n 30 "$SLURM_TEST_TMP/resume.log"; echo "FAIL: the new run did not report resuming from $latest"; exit 1; }
echo PASS

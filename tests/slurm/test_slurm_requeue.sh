#!/usr/bin/env bash
# The batch side of preemption, on a real local Slurm cluster, independent of any model:
# slurm/pretrain.sbatch launches a stand-in training loop (tests/tools/preempt_probe, which
# uses preempt_agreed() as the real loops do) on 2 tasks; mid-run the batch shell is sent
# SIGUSR1 (`scancel --signal=USR1 --batch`, what --signal=B:USR1@T does before the time
# limit); the script must forward it to the ranks, which checkpoint and exit 3; the script
# requeues the job; the requeued job resumes from the checkpoint and finishes. The metrics rows
# must equal those of an uninterrupted run exactly. Done once with srun --mpi=pmix and once
# with the mpirun fallback. Then a plain `scancel` (SIGTERM): the ranks checkpoint and stop,
# and the job stays cancelled (CANCELLED, 0 restarts), not requeued back to life.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
probe=$BUILD/tools/preempt_probe
[[ $BUILD == /* ]] || probe=$PWD/$probe
[ -x "$probe" ] || { echo "FAIL: $probe not built (make tests-build)"; exit 1; }
slurm_test_cluster_up
tmp=$SLURM_TEST_TMP
steps=30
echo "# empty job config: the probe takes its settings from key=value" >"$tmp/probe.cfg"

# The reference: the same loop, uninterrupted, 2 ranks, outside Slurm.
mpirun -np 2 --oversubscribe "$probe" pretrain run_dir="$tmp/ref" steps=$steps step_ms=1 >/dev/null
[ "$(wc -l <"$tmp/ref/metrics.csv")" -eq $steps ] || { echo "FAIL: reference run incomplete"; exit 1; }

for launcher in srun mpirun; do
  run=$tmp/run-$launcher
  mkdir -p "$tmp/logs"
  id=$(cd "$SLURM_TEST_REPO" && ALICE_BIN=$probe ALICE_LAUNCHER=$launcher sbatch --parsable \
    --gpus-per-task=0 --ntasks-per-node=2 --cpus-per-task=1 --time=5 \
    --output="$tmp/logs/%x-%j.out" slurm/pretrain.sbatch "$tmp/probe.cfg" "$run" \
    steps=$steps step_ms=150 ckpt_every=100)
  echo "[$launcher] submitted job $id"
  wait_lines "$run/metrics.csv" 6 60
  scancel --signal=USR1 --batch "$id"
  echo "[$launcher] sent SIGUSR1 to the batch shell at step $(wc -l <"$run/metrics.csv")"
  states=$(slurm_wait_job "$id" 120)
  echo "[$launcher] final: $states"
  log=$tmp/logs/alice-pretrain-$id.out
  cat "$log" | sed "s/^/[$launcher] | /"
  read -r _ state code restarts <<<"$states"
  [ "$state" = COMPLETED ] && [ "$code" = 0:0 ] || { echo "FAIL: job $id ended $state $code"; exit 1; }
  [ "$restarts" = 1 ] || { echo "FAIL: job $id restarted $restarts times, expected 1 requeue"; exit 1; }
  grep -q "received SIGUSR1" "$log" || { echo "FAIL: the batch script did not see SIGUSR1"; exit 1; }
  grep -q "requeueing job $id" "$log" || { echo "FAIL: the batch script did not requeue"; exit 1; }
  resumed=$(sed -n 's/^probe: .*resuming at step \([0-9]*\) .*restart count 1.*/\1/p' "$log")
  [ -n "$resumed" ] && [ "$resumed" -gt 0 ] && [ "$resumed" -lt $steps ] ||
    { echo "FAIL: the requeued run did not resume mid-way (resumed at '${resumed}')"; exit 1; }
  if ! cmp -s "$tmp/ref/metrics.csv" "$run/metrics.csv"; then
    echo "FAIL: metrics of the preempted+requeued run differ from the uninterrupted run"
    diff "$tmp/ref/metrics.csv" "$run/metrics.csv" | head -20
    exit 1
  fi
  echo "[$launcher] ok: stopped and checkpointed at step $resumed, requeued, resumed, same $steps metrics rows"
done

run=$tmp/run-cancel
id=$(cd "$SLURM_TEST_REPO" && ALICE_BIN=$probe sbatch --parsable --gpus-per-task=0 \
  --ntasks-per-node=2 --cpus-per-task=1 --time=5 --output="$tmp/logs/%x-%j.out" \
  slurm/pretrain.sbatch "$tmp/probe.cfg" "$run" steps=$steps step_ms=150 ckpt_every=100)
wait_lines "$run/metrics.csv" 6 60
scancel "$id"
states=$(slurm_wait_job "$id" 120)
log=$tmp/logs/alice-pretrain-$id.out
sed "s/^/[scancel] | /" "$log"
read -r _ state code restarts <<<"$states"
[ "$state" = CANCELLED ] && [ "$restarts" = 0 ] ||
  { echo "FAIL: scancel'd job $id ended $state with $restarts restart(s): it came back"; exit 1; }
grep -q "not requeued: stopped on SIGTERM" "$log" ||
  { echo "FAIL: the batch script did not say why it did not requeue"; exit 1; }
[ -s "$run/probe_ckpt.txt" ] || { echo "FAIL: the cancelled run wrote no checkpoint"; exit 1; }
echo "[scancel] ok: checkpointed and stopped, CANCELLED with 0 restarts"
echo "PASS"

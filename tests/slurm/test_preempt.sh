#!/usr/bin/env bash
# Preemption of a real `alice pretrain` run on the local Slurm cluster: the tiny config on 2
# tasks via slurm/pretrain.sbatch; mid-run the batch shell gets SIGUSR1 (as
# --signal=B:USR1@120 delivers it before the time limit); the ranks checkpoint and exit 3,
# the script requeues the job, the requeued job resumes from the latest checkpoint by itself and
# finishes. Its metrics.csv must equal an uninterrupted run's (same steps, identical losses).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_alice_command pretrain
cfg=$SLURM_TEST_REPO/jobs/pretrain_tiny.cfg
[ -r "$cfg" ] || { echo "FAIL: $cfg missing"; exit 1; }
slurm_test_cluster_up
tmp=$SLURM_TEST_TMP
# The signal must land before the run ends: with 2 of 40 steps logged the margin is 38 steps
# (a few seconds even at tens of ms per step) against scancel -> slurmd -> batch shell -> ranks.
steps=${PREEMPT_TEST_STEPS:-40}
args=("steps=$steps" ckpt_every=1000 log_every=1)
opts=(--parsable --gpus-per-task=0 --ntasks-per-node=2 --cpus-per-task=1 --time=10
      --output="$tmp/logs/%x-%j.out")
mkdir -p "$tmp/logs"
cd "$SLURM_TEST_REPO"
export ALICE_BIN=$ALICE

# Both runs go through Slurm with the same layout (2 ranks x 1 thread) so the float order is
# the same. The uninterrupted reference first.
ref=$(sbatch "${opts[@]}" slurm/pretrain.sbatch "$cfg" "$tmp/ref" "${args[@]}")
states=$(slurm_wait_job "$ref" 240)
read -r _ state code _ <<<"$states"
[ "$state" = COMPLETED ] || { cat "$tmp"/logs/*-"$ref".out; echo "FAIL: reference job $state $code"; exit 1; }

id=$(sbatch "${opts[@]}" slurm/pretrain.sbatch "$cfg" "$tmp/run" "${args[@]}")
# Signal once a couple of steps are logged (header + 2 rows), well before the end.
wait_lines "$tmp/run/metrics.csv" 3 180
scancel --signal=USR1 --batch "$id"
echo "sent SIGUSR1 with $(($(wc -l <"$tmp/run/metrics.csv") - 1)) steps logged"
states=$(slurm_wait_job "$id" 300)
log=$tmp/logs/alice-pretrain-$id.out
sed 's/^/  | /' "$log" | grep -v '^  | #' | tail -n 40
read -r _ state code restarts <<<"$states"
[ "$state" = COMPLETED ] && [ "$code" = 0:0 ] || { echo "FAIL: job $id ended $state $code"; exit 1; }
[ "$restarts" = 1 ] || { echo "FAIL: job $id restarted $restarts times; expected exactly 1 requeue" \
  "(did the run finish before the signal? raise PREEMPT_TEST_STEPS)"; exit 1; }
grep -q "requeueing job $id" "$log" || { echo "FAIL: the batch script did not requeue"; exit 1; }
ls "$tmp/run"
"$PYTHON" "$SLURM_TEST_REPO/tests/slurm/compare_metrics.py" "$tmp/ref/metrics.csv" "$tmp/run/metrics.csv"
echo PASS

#!/usr/bin/env bash
# Each rank gets the cores its job asked for, through both launchers of slurm/common.sh, on a
# real local Slurm cluster: slurm/pretrain.sbatch with --cpus-per-task=2 launches a stand-in
# for alice that reports the CPUs it may run on (nproc: its affinity mask) and
# OMP_NUM_THREADS. Slurm 22.05 and later no longer pass the job's --cpus-per-task to srun (its
# release notes), so the script passes it itself; where a step would then bind each rank to one
# core, this test fails without it. The local cluster (Slurm 22.05.8, task/affinity, one task
# on 2 cores) happened to give the lone rank both cores with or without the flag (checked by
# removing it), so here it guards the end property through both launchers, not the flag.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
slurm_test_cluster_up
tmp=$SLURM_TEST_TMP
cpus=$(sinfo -h -N -o '%c' | head -n1)
[ "$cpus" -ge 2 ] || { echo "skip: the local node has $cpus CPU(s), the test needs 2"; exit 77; }
echo "# empty job config: the stand-in reads nothing" >"$tmp/probe.cfg"
cat >"$tmp/cpu_probe" <<'PROBE'
#!/usr/bin/env bash
echo "cpu-probe: cpus=$(nproc) omp=${OMP_NUM_THREADS:-unset}"
PROBE
chmod +x "$tmp/cpu_probe"

for launcher in srun mpirun; do
  mkdir -p "$tmp/logs"
  id=$(cd "$SLURM_TEST_REPO" && ALICE_BIN=$tmp/cpu_probe ALICE_LAUNCHER=$launcher sbatch \
    --parsable --gpus-per-task=0 --ntasks-per-node=1 --cpus-per-task=2 --time=2 \
    --output="$tmp/logs/%x-%j.out" slurm/pretrain.sbatch "$tmp/probe.cfg" "$tmp/run-$launcher")
  states=$(slurm_wait_job "$id" 90)
  log=$tmp/logs/alice-pretrain-$id.out
  sed "s/^/[$launcher] | /" "$log"
  read -r _ state code _ <<<"$states"
  [ "$state" = COMPLETED ] && [ "$code" = 0:0 ] || { echo "FAIL: job $id ended $state $code"; exit 1; }
  got=$(sed -n 's/^cpu-probe: cpus=\([0-9]*\) omp=\(.*\)$/\1 \2/p' "$log")
  [ "$got" = "2 2" ] || { echo "FAIL [$launcher]: the rank may run on '${got% *}' CPU(s) with" \
    "OMP_NUM_THREADS='${got#* }', expected 2 and 2 (--cpus-per-task=2)"; exit 1; }
  echo "[$launcher] ok: the rank runs on 2 CPUs with OMP_NUM_THREADS=2"
done
echo "PASS"

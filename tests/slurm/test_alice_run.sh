#!/usr/bin/env bash
# slurm/common.sh's alice_run, the batch shell's side of a run, without a cluster: a stand-in
# srun runs a stand-in alice (checkpoints and exits 3 on SIGUSR1, as alice does on a stop
# signal; else exits $CODE), a stand-in scontrol logs requeues. The batch shell
#  - passes alice's status on, also in POSIX mode (POSIXLY_CORRECT in the job's environment:
#    bash forgets a status once `wait` returned it, and a second wait answered 127);
#  - on SIGUSR1 (the time-limit warning) forwards it and requeues the job;
#  - on SIGTERM (scancel; preemption, which Slurm requeues by itself) forwards it but does not
#    requeue, unless ALICE_REQUEUE_ON_TERM=1;
#  - in a job array, requeues its own task (ARRAYID_TASK), never the whole array;
# and pack.sbatch's --force only when requeued over its own data set, the error of a script submitted outside the
# repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$T/bin"
printf '#!/usr/bin/env bash\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"\n' >"$T/bin/srun"
printf '#!/usr/bin/env bash\necho "$*" >>"$STUB/scontrol.log"\n' >"$T/bin/scontrol"
cat >"$T/alice" <<'SH'
#!/usr/bin/env bash
trap 'echo "alice: stop requested, checkpoint written"; exit 3' USR1
touch "$STUB/started"
for _ in $(seq 30); do sleep 0.05; done
exit "${CODE:-0}"
SH
chmod +x "$T/bin/srun" "$T/bin/scontrol" "$T/alice"
export STUB=$T PATH=$T/bin:$PATH ALICE_BIN=$T/alice SLURM_JOB_ID=4242

# run_case NAME SIGNAL(or -) [VAR=value ...]: the batch shell's status into $T/NAME.rc
# (alice's command: pretrain, or $COMMAND)
run_case() {
  local name=$1 sig=$2; shift 2
  rm -f "$T/started" "$T/scontrol.log"
  env "$@" bash -c 'source "$1/slurm/common.sh"; alice_run "${COMMAND:-pretrain}"; echo "rc=$?"' _ "$ROOT" \
    >"$T/$name.log" 2>&1 &
  local shell=$!
  if [ "$sig" != - ]; then
    for _ in $(seq 200); do [ -e "$T/started" ] && break; sleep 0.02; done
    kill -"$sig" "$shell"
  fi
  wait "$shell" || true
  sed -n 's/^rc=//p' "$T/$name.log"
}
requeued() { grep -q "^requeue 4242$" "$T/scontrol.log" 2>/dev/null; }

for mode in default posix; do
  posix=(); [ $mode = posix ] && posix=(POSIXLY_CORRECT=1)
  rc=$(run_case "ok-$mode" - ${posix[@]+"${posix[@]}"})
  [ "$rc" = 0 ] || { cat "$T/ok-$mode.log"; fail "$mode mode: a finished run gave status $rc"; }
  rc=$(run_case "err-$mode" - ${posix[@]+"${posix[@]}"} CODE=5)
  [ "$rc" = 5 ] || { cat "$T/err-$mode.log"; fail "$mode mode: a failed run gave $rc, not 5"; }
  rc=$(run_case "usr1-$mode" USR1 ${posix[@]+"${posix[@]}"})
  { [ "$rc" = 0 ] && requeued; } ||
    { cat "$T/usr1-$mode.log"; fail "$mode mode: SIGUSR1 did not end in a requeue (status $rc)"; }
  echo "ok ($mode mode): status 0 and 5 passed on; SIGUSR1 forwarded, job requeued"
done
rc=$(run_case term TERM)
[ "$rc" = 3 ] && ! requeued && grep -q "not requeued: stopped on SIGTERM" "$T/term.log" ||
  { cat "$T/term.log"; fail "SIGTERM (scancel): status $rc, requeues: $(cat "$T/scontrol.log")"; }
grep -q "stop requested, checkpoint written" "$T/term.log" ||
  fail "SIGTERM was not forwarded to alice"
rc=$(run_case term-requeue TERM ALICE_REQUEUE_ON_TERM=1)
[ "$rc" = 0 ] && requeued ||
  { cat "$T/term-requeue.log"; fail "ALICE_REQUEUE_ON_TERM=1: SIGTERM did not requeue ($rc)"; }
grep -q "received SIGTERM: asking the ranks to checkpoint and stop" "$T/term.log" ||
  { cat "$T/term.log"; fail "pretrain: the log does not say the ranks checkpoint"; }
echo "ok: SIGTERM forwarded, checkpointed, not requeued (status 3);" \
  "requeued with ALICE_REQUEUE_ON_TERM=1"
# a command without checkpoints (pack, infer, eval) is not said to checkpoint
run_case term-pack TERM COMMAND=pack > /dev/null
grep -q "received SIGTERM: stopping alice pack .*it keeps no checkpoint: a requeued job runs it again" \
  "$T/term-pack.log" && ! grep -q "checkpoint and stop" "$T/term-pack.log" ||
  { cat "$T/term-pack.log"; fail "pack: the stop message speaks of a checkpoint"; }
echo "ok: a stop of alice pack says it keeps no checkpoint"

# An array task requeues itself, never the whole array: the first task's SLURM_JOB_ID is the
# array's id, which scontrol would read as every task (finished folds started again).
rc=$(run_case usr1-array USR1 SLURM_ARRAY_JOB_ID=4242 SLURM_ARRAY_TASK_ID=1)
[ "$rc" = 0 ] && grep -qx "requeue 4242_1" "$T/scontrol.log" ||
  { cat "$T/usr1-array.log"; fail "array task: requeues '$(cat "$T/scontrol.log" 2>/dev/null)'," \
    "expected 'requeue 4242_1' (status $rc)"; }
echo "ok: an array task requeues only itself (4242_1)"


# pack.sbatch: --force only for a requeued job whose earlier start wrote the data set (its id
# in DATASET.slurm-job); a first start, and a requeued one facing a data set it never wrote
# (the one that made its first start fail, or another submission's), leave it to alice pack's
# refusal. Before, every requeued start passed --force and replaced such a data set.
cat >"$T/alice-args" <<'SH'
#!/usr/bin/env bash
echo "$*" >>"$STUB/alice-args.log"
# as alice pack: write --out (the stand-in of a finished pack)
while [ $# -gt 0 ]; do [ "$1" = --out ] && echo packed >"$2"; shift; done
SH
chmod +x "$T/alice-args"
mkdir -p "$T/nifti"
pack_start() {  # pack_start LABEL RESTART_COUNT [refused]: runs pack.sbatch as job 4242
  rm -f "$T/alice-args.log"
  touch "$T/alice-args.log"
  local rc=0
  (cd "$T" && ALICE_HOME=$ROOT ALICE_BIN=$T/alice-args SLURM_RESTART_COUNT=$2 \
     bash "$ROOT/slurm/pack.sbatch" "$T/nifti" "$T/out/ds.h5" > "$T/pack_$1.log" 2>&1) || rc=$?
  if [ "${3:-}" = refused ]; then
    [ "$rc" = 2 ] && grep -q "ds.h5 already exists; pass --force .*(nothing was generated or packed)" "$T/pack_$1.log" ||
      { cat "$T/pack_$1.log"; fail "pack.sbatch ($1): not refused before packing (status $rc)"; }
    [ ! -s "$T/alice-args.log" ] || fail "pack.sbatch ($1) ran alice although refused: $(cat "$T/alice-args.log")"
  else
    [ "$rc" = 0 ] || { cat "$T/pack_$1.log"; fail "pack.sbatch ($1) failed"; }
  fi
}
passed_force() { grep -q -- "pack --force --input" "$T/alice-args.log"; }
pack_start first 0
! passed_force || fail "a first pack.sbatch start passed --force"
[ "$(cat "$T/out/ds.h5.slurm-job")" = 4242 ] || fail "the first start did not record job 4242"
pack_start own-requeue 1     # the data set now exists, written by this job
passed_force || fail "a requeued start did not pass --force for its own data set: $(cat "$T/alice-args.log")"
echo 9999 > "$T/out/ds.h5.slurm-job"   # the data set another job wrote
pack_start other-requeue 1 refused
rm -f "$T/out/ds.h5.slurm-job"         # a data set from before any pack.sbatch (none recorded)
pack_start unowned-requeue 1 refused
[ ! -e "$T/out/ds.h5.slurm-job" ] || fail "a start facing an existing data set claimed it"
pack_start unowned-first 0 refused     # a first start facing it: refused the same way
echo "ok: pack.sbatch passes --force only when requeued over its own data set"

# pack.sbatch phantoms:N facing a data set it may not replace is refused before it deletes or
# generates any phantom (they are what that data set was packed from, and the chain's truth)
mkdir -p "$T/keep/phantoms/labelsTr" && echo packed > "$T/keep/ds.h5"
touch "$T/keep/phantoms/labelsTr/case0005.nii.gz"
rm -f "$T/alice-args.log"; touch "$T/alice-args.log"
if (cd "$T" && ALICE_HOME=$ROOT ALICE_BIN=$T/alice-args bash "$ROOT/slurm/pack.sbatch" phantoms:2 \
      "$T/keep/ds.h5" > "$T/pack_keep.log" 2>&1); then fail "phantoms:2 over an existing data set ran"; fi
[ -e "$T/keep/phantoms/labelsTr/case0005.nii.gz" ] && [ ! -s "$T/alice-args.log" ] ||
  fail "a refused phantoms:2 removed phantoms or ran alice: $(cat "$T/alice-args.log")"
echo "ok: a refused pack.sbatch phantoms:N leaves the phantoms alone"
mkdir -p "$T/adir.h5"
if (cd "$T" && ALICE_HOME=$ROOT ALICE_BIN=$T/alice-args bash "$ROOT/slurm/pack.sbatch" phantoms:2 \
      "$T/adir.h5" > "$T/pack_dir.log" 2>&1); then fail "a DATASET_H5 that is a directory was packed"; fi
grep -q "adir.h5' is a directory; name the data set file" "$T/pack_dir.log" ||
  { cat "$T/pack_dir.log"; fail "a DATASET_H5 directory: not named as one"; }

# pack.sbatch phantoms:N generates into DATASET's folder under phantoms/ and packs that folder:
# the phantoms an earlier, larger N left there must go first (they were packed too)
mkdir -p "$T/ph/phantoms/imagesTr" "$T/ph/phantoms/labelsTr"
touch "$T/ph/phantoms/imagesTr/case0007_0000.nii.gz" "$T/ph/phantoms/labelsTr/case0007.nii.gz"
rm -f "$T/alice-args.log"
(cd "$T" && ALICE_HOME=$ROOT ALICE_BIN=$T/alice-args bash "$ROOT/slurm/pack.sbatch" phantoms:2 \
   "$T/ph/ds.h5" > "$T/pack_phantoms.log" 2>&1) || { cat "$T/pack_phantoms.log"; fail "pack.sbatch phantoms:2 failed"; }
grep -q "^phantom --out $T/ph/phantoms --cases 2" "$T/alice-args.log" ||
  fail "pack.sbatch phantoms:2 did not generate 2 phantoms: $(cat "$T/alice-args.log")"
[ ! -e "$T/ph/phantoms/imagesTr/case0007_0000.nii.gz" ] && [ ! -e "$T/ph/phantoms/labelsTr/case0007.nii.gz" ] ||
  fail "pack.sbatch phantoms:2 left an earlier run's phantom to be packed"
echo "ok: pack.sbatch phantoms:N packs the N phantoms it generated, none left from before"

# a batch script that cannot find slurm/common.sh says where it looked and what to do
mkdir -p "$T/elsewhere"
if (cd "$T/elsewhere" && SLURM_SUBMIT_DIR=$T/elsewhere bash "$ROOT/slurm/pretrain.sbatch" x y \
      > "$T/nocommon.log" 2>&1); then fail "pretrain.sbatch ran without slurm/common.sh"; fi
want="slurm/common.sh not found under '$T/elsewhere': submit from the repository's root"
grep -q "$want, or set ALICE_HOME" "$T/nocommon.log" ||
  { cat "$T/nocommon.log"; fail "no clear error without slurm/common.sh"; }
echo "ok: a script submitted outside the repository names the fix"

# a script run outside Slurm with the default launcher: srun fails without an allocation, and
# the log says so and names the fix (it had said "alice failed with status 1")
mkdir -p "$T/nosrun"
printf '#!/usr/bin/env bash\necho "srun: fatal: Could not establish a configuration source" >&2\nexit 1\n' \
  > "$T/nosrun/srun"
chmod +x "$T/nosrun/srun"
if (cd "$T" && env -u SLURM_JOB_ID PATH="$T/nosrun:$PATH" ALICE_HOME=$ROOT ALICE_BIN=$T/alice-args \
      bash "$ROOT/slurm/pack.sbatch" "$T/nifti" "$T/out2/ds.h5" > "$T/nosrun.log" 2>&1); then
  fail "pack.sbatch succeeded although srun failed"; fi
grep -q "alice failed with status 1 (see the messages above); outside a Slurm job.*srun itself may have failed.*ALICE_LAUNCHER=mpirun" \
  "$T/nosrun.log" || { cat "$T/nosrun.log"; fail "no launcher hint outside Slurm"; }
echo "ok: srun failing outside a Slurm job is named, with ALICE_LAUNCHER=mpirun as the fix"

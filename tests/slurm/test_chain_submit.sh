#!/usr/bin/env bash
# slurm/chain.sh's submission as a whole, with stand-in sbatch, scontrol, scancel and squeue
# (no cluster needed; each logs its arguments):
#  - every job is submitted held, and all are released together (one scontrol release of the
#    five ids) once all five are queued;
#  - a submission that fails (the third: fine-tuning) cancels the two held jobs before it,
#    releases nothing, and jobs.txt says the chain was cancelled;
#  - a second chain into a run directory whose jobs.txt lists jobs still in the queue is
#    refused before any sbatch; once they have left the queue it is submitted;
#  - every stage gets the job files (and overlays) copied into RUN_DIR/jobs/ at submission.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir -p "$T/bin"
# sbatch: the ids 101, 102, ... in order; the call numbered $FAIL_AT fails as a submit limit does
cat >"$T/bin/sbatch" <<'SH'
#!/usr/bin/env bash
n=$(( $(cat "$STUB/count" 2>/dev/null || echo 0) + 1 )); echo "$n" >"$STUB/count"
echo "$*" >>"$STUB/sbatch.log"
if [ "$n" = "${FAIL_AT:-0}" ]; then
  echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1
fi
echo "$((100 + n))"
SH
for tool in scontrol scancel; do
  printf '#!/usr/bin/env bash\necho "$*" >>"$STUB/%s.log"\n' "$tool" >"$T/bin/$tool"
done
# squeue -h -j ID -o %i: the ID when $STUB/queue lists it
cat >"$T/bin/squeue" <<'SH'
#!/usr/bin/env bash
while [ $# -gt 0 ]; do [ "$1" = -j ] && id=$2; shift; done
grep -qx "${id:-none}" "$STUB/queue" 2>/dev/null && echo "$id"
exit 0
SH
chmod +x "$T/bin/"*
export STUB=$T PATH=$T/bin:$PATH ALICE_GPUS=0 ALICE_BIN=$ALICE
chain() {
  bash "$ROOT/slurm/chain.sh" --run-dir "$T/run" --input phantoms:5 \
    --pretrain-config "$ROOT/jobs/pretrain_tiny.cfg" \
    --finetune-config "$ROOT/jobs/finetune_tiny.cfg" "$@"
}
reset() { rm -f "$T"/*.log "$T/count" "$T/queue"; }

# 1. The third submission fails.
reset
rc=0; FAIL_AT=3 chain >"$T/out1" 2>&1 || rc=$?
[ "$rc" != 0 ] || { cat "$T/out1"; fail "a failed submission left chain.sh with status 0"; }
[ "$(cat "$T/scancel.log" 2>/dev/null)" = "101 102" ] ||
  { cat "$T/out1"; fail "the held pack and pretrain jobs were not cancelled"; }
[ ! -s "$T/scontrol.log" ] ||
  fail "jobs were released although the chain failed: $(cat "$T/scontrol.log")"
grep -q "^# cancelled" "$T/run/jobs.txt" || fail "jobs.txt does not say the chain was cancelled"
grep -q "cancelling the held jobs 101 102" "$T/out1" ||
  { cat "$T/out1"; fail "no message names the cancelled jobs"; }
echo "ok: a failed third submission cancels jobs 101 and 102 and releases nothing"

# 2. All five submitted held, released together.
reset
chain >"$T/out2" 2>&1 || { cat "$T/out2"; fail "the chain was not submitted"; }
[ "$(wc -l <"$T/sbatch.log")" = 5 ] || fail "$(wc -l <"$T/sbatch.log") submissions, expected 5"
[ "$(grep -c -- '--hold' "$T/sbatch.log")" = 5 ] || fail "not every job was submitted held"
[ "$(cat "$T/scontrol.log")" = "release 101,102,103,104,105" ] ||
  fail "release: '$(cat "$T/scontrol.log")', expected 'release 101,102,103,104,105'"
[ ! -s "$T/scancel.log" ] || fail "a successful chain cancelled jobs: $(cat "$T/scancel.log")"
echo "ok: five held submissions, one release of all five"

# 3. The same run directory again while its jobs are queued: refused; after they left: submitted.
rm -f "$T/sbatch.log" "$T/count"
printf '102\n104\n' >"$T/queue"
rc=0; chain >"$T/out3" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "jobs still in the queue: pretrain=102 infer=104" "$T/out3" ||
  { cat "$T/out3"; fail "a second chain into a run directory with queued jobs ran ($rc)"; }
[ ! -e "$T/sbatch.log" ] || fail "the refused chain submitted jobs"
rm -f "$T/queue"
chain >"$T/out4" 2>&1 ||
  { cat "$T/out4"; fail "the chain was refused after its jobs had left the queue"; }
echo "ok: a chain still queued is not submitted twice into its run directory"

# 4. The job files as they were at submission: every stage gets the copies in RUN_DIR/jobs/
# (overlays given among a stage's arguments too), so an edit while the chain waits changes
# none of them (the fine-tuning folds had read the job file at each task's first start).
reset
cp "$ROOT/jobs/finetune_tiny.cfg" "$T/ft.cfg"
cp "$ROOT/jobs/pretrain_tiny.cfg" "$T/overlay.cfg"
bash "$ROOT/slurm/chain.sh" --run-dir "$T/run5" --input phantoms:5 \
  --pretrain-config "$ROOT/jobs/pretrain_tiny.cfg" --finetune-config "$T/ft.cfg" \
  --pretrain-args "--config $T/overlay.cfg steps=3" >"$T/out5" 2>&1 ||
  { cat "$T/out5"; fail "the chain with an overlay was not submitted"; }
echo "lr = 0.5" >>"$T/ft.cfg"   # edited after submission
grep "finetune.sbatch" "$T/sbatch.log" | grep -q "finetune.sbatch $T/run5/jobs/finetune.cfg " ||
  fail "fine-tuning was not given the frozen copy: $(grep finetune.sbatch "$T/sbatch.log")"
grep "pretrain.sbatch" "$T/sbatch.log" |
  grep -q "pretrain.sbatch $T/run5/jobs/pretrain.cfg .*--config $T/run5/jobs/pretrain_overlay0.cfg steps=3" ||
  fail "pre-training was not given frozen copies: $(grep pretrain.sbatch "$T/sbatch.log")"
grep "eval.sbatch" "$T/sbatch.log" | grep -q "eval.sbatch $T/run5/jobs/eval.cfg " ||
  fail "eval was not given the frozen copy: $(grep eval.sbatch "$T/sbatch.log")"
! grep -q "lr = 0.5" "$T/run5/jobs/finetune.cfg" || fail "the frozen copy followed the edit"
cmp -s "$T/overlay.cfg" "$T/run5/jobs/pretrain_overlay0.cfg" || fail "the overlay's copy differs"
echo "ok: every stage reads the job files copied at submission (overlays too); a later edit changes none"
# a missing overlay, or a --config without a file, refuses the chain before anything is copied
reset
for args in "--config $T/none.cfg" "steps=3 --config"; do
  rm -rf "$T/run6"
  rc=0
  bash "$ROOT/slurm/chain.sh" --run-dir "$T/run6" --input phantoms:5 \
    --pretrain-config "$ROOT/jobs/pretrain_tiny.cfg" --finetune-config "$T/ft.cfg" \
    --finetune-args "$args" >"$T/out6" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "none.cfg' (--config in the finetune arguments) not found\|--config needs a job file after it (in the finetune arguments)" "$T/out6" ||
    { cat "$T/out6"; fail "--finetune-args '$args': status $rc"; }
  [ ! -e "$T/run6/jobs" ] && [ ! -e "$T/sbatch.log" ] || fail "--finetune-args '$args': copied or submitted"
done
echo "ok: a missing overlay or a bare --config refuses the chain before any copy"

#!/usr/bin/env bash
# slurm/chain.sh's argument checks, as dry runs (nothing submitted or written, no cluster
# needed): the eval stage's ground truth is given once. With --input phantoms:N the chain finds
# the phantoms' labelsTr by itself; --eval-args naming its own truth (--data) must then take
# no automatic --labels beside it (alice eval refuses two sources of truth, which showed only
# after the whole chain had run), and an explicit --labels beside it is refused at once. The
# phantoms are scored with label_set=flare (their numbering) unless --eval-args names one.
# Stage arguments are split as a shell splits them (quotes keep a path with spaces one word;
# an unmatched quote is refused), and --mem-per-cpu reaches every job.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$ROOT"
chain() {
  ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run" --input phantoms:5 \
    --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
    --dry-run "$@"
}
chain > "$tmp/auto.log" 2>&1 || { cat "$tmp/auto.log"; echo "FAIL: dry run"; exit 1; }
# no stage argument given: no empty word handed to any job (alice refuses an argument '')
! grep -q "''" "$tmp/auto.log" ||
  { cat "$tmp/auto.log"; echo "FAIL: an empty argument in a job's command"; exit 1; }
grep "eval.sbatch" "$tmp/auto.log" | grep -q -- "--labels $tmp/run/data/phantoms/labelsTr" ||
  { cat "$tmp/auto.log"; echo "FAIL: the phantoms' labels were not the eval's truth"; exit 1; }
# the phantoms number their organs FLARE's way: scored with label_set=flare although
# finetune_tiny.cfg (as finetune_btcv.cfg) may name another, unless --eval-args names one
grep "eval.sbatch" "$tmp/auto.log" | grep -q "label_set=flare" ||
  { cat "$tmp/auto.log"; echo "FAIL: phantoms not scored with label_set=flare"; exit 1; }
chain --eval-args "label_set=btcv" > "$tmp/set.log" 2>&1 || { cat "$tmp/set.log"; exit 1; }
line=$(grep "eval.sbatch" "$tmp/set.log")
[[ $line == *"label_set=btcv"* && $line != *"label_set=flare"* ]] ||
  { echo "$line"; echo "FAIL: --eval-args label_set=btcv not kept alone"; exit 1; }
chain --eval-args "--data $tmp/other.h5" > "$tmp/own.log" 2>&1 ||
  { cat "$tmp/own.log"; echo "FAIL: dry run with --eval-args --data"; exit 1; }
line=$(grep "eval.sbatch" "$tmp/own.log")
[[ $line == *"--data $tmp/other.h5"* && $line != *"--labels"* ]] ||
  { echo "$line"; echo "FAIL: --eval-args --data got an automatic --labels beside it"; exit 1; }
if chain --labels "$tmp" --eval-args "--data $tmp/other.h5" > "$tmp/both.log" 2>&1 ||
  ! grep -q "give the ground truth once" "$tmp/both.log"; then
  cat "$tmp/both.log"; echo "FAIL: --labels with --eval-args --data not refused"; exit 1
fi
if chain --eval-args "--data 'unclosed" > "$tmp/quote.log" 2>&1 ||
  ! grep -q "cannot split .* (an unmatched quote?)" "$tmp/quote.log"; then
  cat "$tmp/quote.log"; echo "FAIL: an unmatched quote in --eval-args not refused"; exit 1
fi
[ ! -e "$tmp/run" ] || { echo "FAIL: a dry run wrote $tmp/run"; exit 1; }
# --dataset without --labels: eval scores against the data set's labels (--data), its path
# one word even with a space in it
mkdir -p "$tmp/my data"
"$ALICE" phantom --out "$tmp/ph" --cases 2 --size small --seed 2 > /dev/null
"$ALICE" pack --input "$tmp/ph/imagesTr" --out "$tmp/my data/ds.h5" spacing=6,6,6 num_folds=2 \
  > /dev/null 2>&1 || { echo "FAIL: packing the test data set"; exit 1; }
if command -v h5dump > /dev/null; then
  ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run2" \
    --dataset "$tmp/my data/ds.h5" --pretrain-config jobs/pretrain_tiny.cfg \
    --finetune-config jobs/finetune_tiny.cfg --dry-run > "$tmp/ds.log" 2>&1 ||
    { cat "$tmp/ds.log"; echo "FAIL: dry run with --dataset"; exit 1; }
  line=$(grep "eval.sbatch" "$tmp/ds.log")
  [[ $line == *"--data $tmp/my\ data/ds.h5"* && $line != *"--labels"* ]] ||
    { echo "$line"; echo "FAIL: --dataset without --labels: eval's truth is not --data"; exit 1; }
  echo "ok: --dataset without --labels scores against the data set's labels"
  # a stage's arguments are split as a shell splits them: a quoted path with a space stays one
  # word; --mem-per-cpu reaches every job
  ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run3" \
    --dataset "$tmp/my data/ds.h5" --pretrain-config jobs/pretrain_tiny.cfg \
    --finetune-config jobs/finetune_tiny.cfg --mem-per-cpu 2G --dry-run \
    --finetune-args "lr=1e-3 'pretrained=$tmp/my data/ckpt.h5'" > "$tmp/q.log" 2>&1 ||
    { cat "$tmp/q.log"; echo "FAIL: dry run with quoted --finetune-args"; exit 1; }
  line=$(grep "finetune.sbatch" "$tmp/q.log")
  [[ $line == *" lr=1e-3 pretrained=$tmp/my\ data/ckpt.h5"* ]] ||
    { echo "$line"; echo "FAIL: a quoted --finetune-args word was split or lost"; exit 1; }
  [ "$(grep -c -- "--mem-per-cpu=2G" "$tmp/q.log")" = 4 ] ||
    { cat "$tmp/q.log"; echo "FAIL: --mem-per-cpu not on all 4 jobs (no pack)"; exit 1; }
  echo "ok: stage arguments split as a shell would; --mem-per-cpu on every job"
else
  echo "(h5dump not found: the --dataset dry run is not checked)"
fi
echo "ok: the eval's truth is the automatic labels, or --eval-args' own alone; both refused;" \
  "phantoms scored as FLARE"
# Fewer labelled cases than folds: refused at submission, naming the empty folds and the fix
# (it had gone through, and the folds without a labelled case failed after the pre-training).
if ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run3" --input phantoms:3 \
     --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
     --dry-run > "$tmp/few.log" 2>&1 ||
   ! grep -q "phantoms:3 holds 3 labelled case(s) for 5 folds: folds 3-4 would hold none.*give --folds 3," "$tmp/few.log"; then
  cat "$tmp/few.log"; echo "FAIL: 3 labelled phantoms for 5 folds not refused with the fix"; exit 1
fi
ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run3" --input phantoms:3 --folds 3 \
  --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
  --dry-run > "$tmp/few3.log" 2>&1 || { cat "$tmp/few3.log"; echo "FAIL: phantoms:3 --folds 3 refused"; exit 1; }
# one fold, or one labelled case, cannot be cross-validated: refused without suggesting either
for args in "--input phantoms:4 --folds 1" "--input phantoms:1 --folds 2"; do
  # shellcheck disable=SC2086
  if ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run1" $args \
       --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
       --dry-run > "$tmp/one.log" 2>&1 ||
     ! grep -q "2 folds at the least\|2 labelled cases at the least" "$tmp/one.log"; then
    cat "$tmp/one.log"; echo "FAIL: $args not refused as too few to cross-validate"; exit 1
  fi
done
echo "ok: fewer labelled cases than folds refused at submission; --folds to match accepted;" \
  "one fold or one labelled case refused"
# keys a stage's script or the chain sets itself, given again in its arguments: refused at
# once (the command line's last value won: fold=0 sent array task 2 to train fold 0 into
# fold2/, num_folds=3 packed 3 folds under 5 fine-tuning tasks)
for args in "--pack-args num_folds=3" "--finetune-args fold=1" "--finetune-args run_dir=$tmp/x" \
            "--pretrain-args run_dir=$tmp/x" "--finetune-args --fold 1" \
            "--finetune-args data=$tmp/other.h5" "--pretrain-args data=$tmp/other.h5" \
            "--infer-args --cases all" "--infer-args --data $tmp/other.h5"; do
  rc=0
  chain ${args%% *} "${args#* }" > "$tmp/owned.log" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "the chain sets .* itself" "$tmp/owned.log" ||
    { cat "$tmp/owned.log"; echo "FAIL: chain.sh $args: exit $rc"; exit 1; }
done
for given in fold=0 "--fold 0"; do   # alice finetune takes the key and its --fold flag
  rc=0
  # shellcheck disable=SC2086 # "--fold 0": two words
  SLURM_ARRAY_TASK_ID=2 ALICE_BIN=$ALICE bash slurm/finetune.sbatch jobs/finetune_tiny.cfg \
    "$tmp/ft" $given > "$tmp/ft.log" 2>&1 || rc=$?
  [ "$rc" = 2 ] && grep -q "finetune.sbatch sets fold itself.*remove '${given%% *}" "$tmp/ft.log" &&
    [ ! -e "$tmp/ft" ] ||
    { cat "$tmp/ft.log"; echo "FAIL: finetune.sbatch with $given: exit $rc"; exit 1; }
done
rc=0
ALICE_BIN=$ALICE bash slurm/pretrain.sbatch jobs/pretrain_tiny.cfg "$tmp/pt" run_dir="$tmp/x" \
  > "$tmp/pt.log" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "pretrain.sbatch sets run_dir itself" "$tmp/pt.log" &&
  [ ! -e "$tmp/pt" ] || { cat "$tmp/pt.log"; echo "FAIL: pretrain.sbatch with run_dir="; exit 1; }
echo "ok: keys a script or the chain sets itself are refused among the passed-on arguments"

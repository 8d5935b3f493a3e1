#!/usr/bin/env bash
# slurm/chain.sh's argument checks, as dry runs (nothing submitted or written, no cluster
# needed): the eval stage's ground truth is given once. With --input phantoms:N the chain finds
# the phantoms' labelsTr by itself; --eval-args naming its own truth (--data) must then take
# no automatic --labels beside it (alice eval refuses two sources of truth, which showed only
# after the whole chain had run), and an explicit --labels beside it is refused at once. The
# phantoms are scored with label_set=flare (their numbering) unless --eval-args names one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$ROOT"
chain() {
  ALICE_GPUS=0 ALICE_BIN=$ALICE bash slurm/chain.sh --run-dir "$tmp/run" --input phantoms:4 \
    --pretrain-config jobs/pretrain_tiny.cfg --finetune-config jobs/finetune_tiny.cfg \
    --dry-run "$@"
}
chain > "$tmp/auto.log" 2>&1 || { cat "$tmp/auto.log"; echo "FAIL: dry run"; exit 1; }
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
[ ! -e "$tmp/run" ] || { echo "FAIL: a dry run wrote $tmp/run"; exit 1; }
echo "ok: the eval's truth is the automatic labels, or --eval-args' own alone; both refused;" \
  "phantoms scored as FLARE"

#!/usr/bin/env bash
# Config keys crop_sampler / class_ratios end to end through `alice finetune`: a class_ratios
# list of the wrong length, a non-number and all-zero weights each stop the run with exit 2
# and a message naming the key and the fix (so does a batch that crops_per_case does not
# divide); crop_sampler = classes with explicit weights and crops_per_case = 2 fine-tunes two
# steps on synthetic phantoms, and the resolved config keeps the keys.
set -u
ALICE=${ALICE:-bin/alice}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -x "$ALICE" ]; then echo "skip: $ALICE is not built"; exit 77; fi
T=$(mktemp -d /tmp/alice_sampler_cfg.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fail() { echo "FAIL: $*"; exit 1; }
# A small UNETR so that each run costs a second or two.
SMALL="embed_dim=24 depth=3 heads=2 mlp_dim=48 feature_size=4 synthetic_cases=2 fold=-1 threads=1
       steps=2 warmup=1 val_every=100 ckpt_every=100 log_every=1"

expect_error() {  # name, expected message part, extra key=value...
  local name=$1 want=$2; shift 2
  local rc=0
  "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$T/$name" $SMALL \
      crop_sampler=classes "$@" >"$T/$name.log" 2>&1 || rc=$?
  [ $rc -eq 2 ] || { tail -5 "$T/$name.log"; fail "$name: exit $rc, expected 2 (a user error)"; }
  grep -q -- "$want" "$T/$name.log" || { tail -5 "$T/$name.log"; fail "$name: no '$want' in the message"; }
  echo "ok: $name -> $(grep -m1 'error' "$T/$name.log")"
}
expect_error short_list "class_ratios = '1,2' has 2 weights but num_classes = 14" class_ratios=1,2
expect_error not_number "entry 3 is not a non-negative number" class_ratios=1,1,x,1,1,1,1,1,1,1,1,1,1,1
expect_error negative "entry 2 is not a non-negative number" class_ratios=1,-1,1,1,1,1,1,1,1,1,1,1,1,1
expect_error all_zero "every weight is 0" class_ratios=0,0,0,0,0,0,0,0,0,0,0,0,0,0
expect_error crops_per_case "batch = 2 is not a multiple of crops_per_case = 3" crops_per_case=3

RATIOS=2,1,1,1,1,1,1,1,1,1,1,1,1,1
"$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" run_dir="$T/ok" $SMALL \
    crop_sampler=classes class_ratios=$RATIOS crops_per_case=2 >"$T/ok.log" 2>&1 ||
  { tail -20 "$T/ok.log"; fail "classes run failed"; }
grep -q "crops: 2 per case drawn, 1 case(s) per rank and step" "$T/ok.log" ||
  fail "the log does not say how many crops each case drawn gives"
grep -q "^crops_per_case = 2$" "$T/ok/config.txt" || fail "config.txt lacks crops_per_case = 2"
rows=$(($(wc -l < "$T/ok/metrics.csv") - 1))
[ "$rows" -eq 2 ] || fail "metrics.csv has $rows step rows, expected 2"
grep -q "^crop_sampler = classes$" "$T/ok/config.txt" || fail "config.txt lacks crop_sampler = classes"
grep -q "^class_ratios = $RATIOS$" "$T/ok/config.txt" || fail "config.txt lacks class_ratios = $RATIOS"
echo "ok: crop_sampler = classes fine-tuned $rows steps"

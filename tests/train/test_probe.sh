#!/usr/bin/env bash
# It learns useful features: after 150 steps of Alice on phantoms (micro model), a k-NN probe
# of the encoder's patch features against the organ labels (leave one case out, balanced
# accuracy over the classes present) beats the same encoder at its random initialisation.
source "$(dirname "$0")/lib.sh"
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/p" steps=150 ckpt_every=150 warmup=10 \
  synthetic_cases=6 log_every=50 > "$WORK/p.log"
"$ALICE" probe --checkpoint "$WORK/p/ckpt_150.h5" --cases 6 | tee "$WORK/probe.log" | grep -v "^#"
line=$(grep probe_result "$WORK/probe.log")
pre=$(echo "$line" | sed 's/.*pretrained=\([0-9.]*\).*/\1/'); rnd=$(echo "$line" | sed 's/.*random=\([0-9.]*\).*/\1/')
awk -v a="$pre" -v b="$rnd" 'BEGIN { exit !(a > b) }' || fail "probe after pre-training ($pre) not above random init ($rnd)"

#!/usr/bin/env bash
# It learns useful features: after 150 steps of Alice on phantoms (micro model), a k-NN probe
# of the encoder's patch features against the organ labels (leave one case out, balanced
# accuracy over the classes present) beats the same encoder at its random initialisation; a
# checkpoint of another kind is refused; key=value given before --checkpoint still applies (a
# data set that does not exist is not silently replaced by the checkpoint's synthetic data).
source "$(dirname "$0")/lib.sh"
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/p" steps=150 ckpt_every=150 warmup=10 \
  synthetic_cases=6 log_every=50 > "$WORK/p.log"
"$ALICE" probe --checkpoint "$WORK/p/ckpt_150.h5" --cases 6 | tee "$WORK/probe.log" | grep -v "^#"
line=$(grep probe_result "$WORK/probe.log")
pre=$(echo "$line" | sed 's/.*pretrained=\([0-9.]*\).*/\1/'); rnd=$(echo "$line" | sed 's/.*random=\([0-9.]*\).*/\1/')
# numbers, or awk compares strings and a NaN accuracy (read as "") passes
[[ $pre =~ ^[0-9]+([.][0-9]+)?$ && $rnd =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  fail "no accuracies read from '$line' (pretrained '$pre', random '$rnd')"
awk -v a="$pre" -v b="$rnd" 'BEGIN { exit !(a > b) }' || fail "probe after pre-training ($pre) not above random init ($rnd)"
# A checkpoint of another kind (a fine-tuning run's keeps the encoder under other names, so the
# probe would compare the random encoder with itself): refused.
cp "$WORK/p/ckpt_150.h5" "$WORK/ft.h5"
"$PYTHON" -c "import h5py,sys; f=h5py.File(sys.argv[1],'a'); f.attrs['kind']=b'finetune'" "$WORK/ft.h5"
if "$ALICE" probe --checkpoint "$WORK/ft.h5" --cases 6 > "$WORK/ft.log" 2>&1; then fail "probe accepted a finetune checkpoint"; fi
grep -q "is a finetune checkpoint, not a pre-training one" "$WORK/ft.log" || { cat "$WORK/ft.log"; fail "no clear refusal"; }
echo "ok: probe refuses a fine-tuning checkpoint"
# key=value before --checkpoint: the checkpoint's keys used to reset it (data = synthetic)
if "$ALICE" probe data="$WORK/nowhere.h5" --checkpoint "$WORK/p/ckpt_150.h5" --cases 6 \
    > "$WORK/order.log" 2>&1; then fail "probe ignored data= given before --checkpoint"; fi
grep -q "nowhere.h5" "$WORK/order.log" ||
  { cat "$WORK/order.log"; fail "no message naming the data"; }
echo "ok: probe applies key=value given before --checkpoint"

#!/usr/bin/env bash
# `alice finetune --bench-steps N` (src/train/finetune.c run_bench, src/train/step_bench.c): on
# device = cpu with the tiny fine-tuning config it needs no data (data points at a missing
# file), writes nothing (run_dir is not created), and prints one alice_step line whose figures
# are positive and finite, whose crop and batch are the configuration's, and whose
# flop_per_step (unetr_step_flops, C) equals the independent counts of
# tests/reference/unetr_flops_ref.py: the layer-by-layer formula AND the convolutions and
# matmuls that one PyTorch forward + backward of unetr_ref.UNETR dispatches. A second, odd
# configuration (non-cubic crop, depth 6, batch 1, 3 classes) checks the count's geometry; a
# third (batch 1, accum_steps 2) that a step is the optimiser's: batch 2 and twice the count.
# A non-positive step count is refused with a message.
source "$(dirname "$0")/lib.sh"
TINY=$ROOT/jobs/finetune_tiny.cfg

check_case() {   # name, then key=value overrides of jobs/finetune_tiny.cfg
    local name=$1; shift
    "$ALICE" finetune --config "$TINY" threads=2 data="$WORK/missing.h5" run_dir="$WORK/run_$name" \
        "$@" --bench-steps 2 > "$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log"; fail "$name: bench exited non-zero"; }
    local line
    line=$(grep -o 'alice_step .*' "$WORK/$name.log") || { cat "$WORK/$name.log"; fail "$name: no alice_step line"; }
    echo "$name: $line"
    [ ! -e "$WORK/run_$name" ] || fail "$name: the benchmark created run_dir"
    local ref
    ref=$("$PYTHON" "$ROOT/tests/reference/unetr_flops_ref.py" --config "$TINY" "$@" --measure) ||
        fail "$name: unetr_flops_ref.py failed"
    echo "$ref" | sed "s/^/$name: /"
    "$PYTHON" - "$line" "$ref" "$TINY" "$name" "$@" <<'PY' || fail "$name: figures (above)"
import math, re, sys
line, ref, tiny, name = sys.argv[1:5]
over = dict(kv.split("=", 1) for kv in sys.argv[5:])
kv = dict(re.findall(r"(\w+)=(\S+)", line))
bad = []
cfg = {}
for raw in open(tiny):
    raw = raw.split("#", 1)[0]
    if "=" in raw:
        k, v = raw.split("=", 1)
        cfg[k.strip()] = v.strip()
cfg.update(over)
accum = int(cfg.get("accum_steps", "1"))
want = {"method": "unetr", "device": "cpu", "precision": "fp32", "crop": cfg["crop"],
        "batch": str(int(cfg["batch"]) * accum), "accum_steps": str(accum), "cuda_graph": "0",
        "graph_replays": "0"}
for k, v in want.items():
    if kv.get(k) != v:
        bad.append("%s=%s, want %s" % (k, kv.get(k), v))
for k in ("s_per_step", "peak_rss_mb", "gflop_per_step", "gflops", "flop_per_step"):
    x = float(kv.get(k, "nan"))
    if not (math.isfinite(x) and x > 0):
        bad.append("%s=%s is not positive and finite" % (k, kv.get(k)))
c = int(kv["flop_per_step"])
analytic = int(re.search(r"unetr_flops batch=.* flop_per_step=(\d+)", ref).group(1))
measured = int(re.search(r"measured flop_per_step=(\d+)", ref).group(1))
if not c == analytic * accum == measured * accum:   # the references count one micro-batch
    bad.append("flop_per_step: C %d, analytic %d, PyTorch-measured %d, accum_steps %d"
               % (c, analytic, measured, accum))
gf = float(kv["gflops"]) if "gflops" in kv else 0.0
expect = c / 1e9 / float(kv["s_per_step"])
if abs(gf - expect) > 0.05 * expect + 0.1:   # the line's rounding of s_per_step (4 decimals)
    bad.append("gflops=%s vs flop_per_step / s_per_step = %.1f" % (kv.get("gflops"), expect))
for b in bad:
    print("FAIL:", name, b)
sys.exit(1 if bad else 0)
PY
}

check_case tiny
check_case odd crop=32,48,16 depth=6 feature_size=4 embed_dim=48 heads=4 num_classes=3 batch=1
check_case accum batch=1 accum_steps=2

if "$ALICE" finetune --config "$TINY" --bench-steps 0 > "$WORK/zero.log" 2>&1; then
    fail "--bench-steps 0 was accepted"
fi
grep -q "not a positive step count" "$WORK/zero.log" || { cat "$WORK/zero.log"; fail "--bench-steps 0: no clear message"; }
echo "ok: finetune bench line, FLOP count = reference (formula and PyTorch)"

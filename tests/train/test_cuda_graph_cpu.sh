#!/usr/bin/env bash
# The config key cuda_graph where no GPU is needed:
#   1. it is auto|1|0, default auto: cuda_graph = 2 (file or command line) is an error naming
#      the key and the valid values; the former boolean spellings still mean 1 and 0 (job
#      files written for the boolean keep working) and are stored as 1 and 0, so the resolved
#      configuration (`alice config`) prints a value that parses back;
#   2. device = cpu with cuda_graph = 1 is ignored with one warning saying so (the CPU backend
#      cannot record graphs), with auto (the default) silently; either way training reaches
#      exactly the parameters and logged losses of cuda_graph = 0 (bit for bit: the same eager
#      steps run), for pre-training and for UNETR fine-tuning (whose step goes through the
#      same StepGraph);
#   3. the benchmark path (--bench-steps) accepts it too and reports cuda_graph=0 (not used).
# The choice of auto against a backend with graphs (one rank: a graph; an overlapped
# all-reduce: none, the overlap kept) is tests/unit/test_step_graph.c; the GPU half (recorded
# and replayed steps bit-identical to eager ones) is tests/unit/test_cuda_graph_step.c, run by
# tests/gpu/run.sh.
source "$(dirname "$0")/lib.sh"

# ---- 1. auto|1|0 ----
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/bad" cuda_graph=2 > "$WORK/bad.log" 2>&1 \
  && fail "cuda_graph=2 was accepted"
grep -q "cuda_graph = '2' is not valid: expected one of auto|1|0 (1 and 0 also spelt true|false, yes|no, on|off)" "$WORK/bad.log" \
  || { cat "$WORK/bad.log"; fail "cuda_graph=2: no error naming the key and the valid values"; }
printf 'cuda_graph = maybe\n' > "$WORK/bad.cfg"
"$ALICE" pretrain --config "$WORK/bad.cfg" run_dir="$WORK/bad2" > "$WORK/bad2.log" 2>&1 \
  && fail "cuda_graph = maybe in a job file was accepted"
grep -q "bad.cfg:1: cuda_graph = 'maybe' is not valid" "$WORK/bad2.log" \
  || { cat "$WORK/bad2.log"; fail "cuda_graph = maybe: no error naming the file and line"; }
"$ALICE" config > "$WORK/resolved.txt" 2>&1 || fail "alice config failed"
grep -qx "cuda_graph = auto" "$WORK/resolved.txt" || fail "cuda_graph: the default is not auto"
# every spelling, from a job file and from the command line, resolves to the canonical value,
# and the resolved configuration parses back to the same value
for spelling in auto:auto 1:1 0:0 true:1 yes:1 on:1 false:0 no:0 off:0; do
  printf 'cuda_graph = %s\n' "${spelling%%:*}" > "$WORK/spelt.cfg"
  "$ALICE" config --config "$WORK/spelt.cfg" > "$WORK/spelt.txt" 2>&1 \
    || { cat "$WORK/spelt.txt"; fail "cuda_graph = ${spelling%%:*} in a job file was refused"; }
  grep -qx "cuda_graph = ${spelling#*:}" "$WORK/spelt.txt" \
    || fail "cuda_graph = ${spelling%%:*} resolved to '$(grep '^cuda_graph' "$WORK/spelt.txt")', expected ${spelling#*:}"
  grep -v '^#' "$WORK/spelt.txt" | grep ' = ' > "$WORK/back.cfg"
  "$ALICE" config --config "$WORK/back.cfg" > "$WORK/back.txt" 2>&1 \
    || { cat "$WORK/back.txt"; fail "the resolved configuration of cuda_graph = ${spelling%%:*} does not parse back"; }
  grep -qx "cuda_graph = ${spelling#*:}" "$WORK/back.txt" || fail "cuda_graph = ${spelling#*:} did not survive a round trip"
  "$ALICE" config cuda_graph="${spelling%%:*}" > "$WORK/spelt_cli.txt" 2>&1 \
    || { cat "$WORK/spelt_cli.txt"; fail "cuda_graph=${spelling%%:*} on the command line was refused"; }
  grep -qx "cuda_graph = ${spelling#*:}" "$WORK/spelt_cli.txt" || fail "cuda_graph=${spelling%%:*} (command line) resolved wrongly"
done

# ---- 2. device = cpu: ignored with a warning, same training ----
# same_training <off dir> <other dir> <what>: the checkpoints after 3 steps hold the same tensors
# (parameters, AdamW moments, EMA target) and metrics.csv the same losses, bit for bit.
same_training() {
  PYTHONPATH="$ROOT/tests/train" "$PYTHON" - "$1" "$2" "$3" <<'PY' \
    || fail "$3: cuda_graph on the cpu changed the training"
import sys, numpy as np
from run_compare import compare_states, metrics
a_dir, b_dir, what = sys.argv[1:4]
count, _, _, _, diff = compare_states(f"{a_dir}/ckpt_3.h5", f"{b_dir}/ckpt_3.h5")
la, lb = metrics(a_dir), metrics(b_dir)
print(f"{what}: cuda_graph = 0 vs the other on the cpu: {count} tensors, {len(diff)} differ; "
      f"losses {la['loss']} vs {lb['loss']}")
assert count > 50, f"only {count} tensors compared"
assert not diff, f"tensors differ: {diff[:5]}"
assert len(la["loss"]) == 3, f"{len(la['loss'])} logged steps, expected 3"
for col in la.dtype.names:
    if col in ("step", "loss", "ce", "dice", "l_r", "l_dv", "l_st", "grad_norm"):
        assert np.array_equal(la[col], lb[col]), f"logged {col} differs"
PY
}
# check_warned <log>: the one warning that the cpu backend ignores cuda_graph = 1
check_warned() {
  grep -q "cuda_graph = 1 is ignored: the cpu backend cannot record graphs" "$1" \
    || { cat "$1"; fail "device = cpu, cuda_graph = 1: no warning that it is ignored ($1)"; }
  test "$(grep -c 'cuda_graph = 1 is ignored' "$1")" = 1 || fail "the warning is not said once ($1)"
}
run() {  # run <name> <extra args...>
  local name=$1; shift
  "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/$name" steps=3 ckpt_every=3 "$@" \
    > "$WORK/$name.log" 2>&1 || { tail -20 "$WORK/$name.log"; fail "pretrain $name failed"; }
}
# check_silent <log> <what>: auto on the cpu says nothing about graphs (the log's opening
# dump of the configuration, '#' lines, names the key)
check_silent() {
  grep -v '^#' "$1" | grep "cuda_graph" && fail "$2: cuda_graph = auto on the cpu said something"
  return 0
}
run off cuda_graph=0
run on cuda_graph=1
run auto            # the default
check_warned "$WORK/on.log"
grep -q "cuda_graph = 1 is ignored" "$WORK/off.log" && fail "cuda_graph = 0 warned"
check_silent "$WORK/auto.log" "pre-training"
same_training "$WORK/off" "$WORK/on" "pre-training"
same_training "$WORK/off" "$WORK/auto" "pre-training, auto"

# UNETR fine-tuning (random encoder, synthetic phantoms, no validation): the loss is read back
# after the step (unetr_read_losses), the same values as the former mid-step read.
FT=(--config "$ROOT/jobs/finetune_tiny.cfg" data=synthetic synthetic_cases=4 crop=32,32,32
    patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48 feature_size=4 batch=1 steps=3 warmup=1
    val_every=1000 ckpt_every=3 log_every=1 threads=1 prefetch=1 fold=-1)
run_ft() {  # run_ft <name> <extra args...>
  local name=$1; shift
  "$ALICE" finetune "${FT[@]}" run_dir="$WORK/$name" "$@" > "$WORK/$name.log" 2>&1 \
    || { tail -20 "$WORK/$name.log"; fail "finetune $name failed"; }
}
run_ft ft_off cuda_graph=0
run_ft ft_on cuda_graph=1
run_ft ft_auto
check_warned "$WORK/ft_on.log"
grep -q "cuda_graph = 1 is ignored" "$WORK/ft_off.log" && fail "fine-tuning: cuda_graph = 0 warned"
check_silent "$WORK/ft_auto.log" "fine-tuning"
same_training "$WORK/ft_off" "$WORK/ft_on" "fine-tuning"
same_training "$WORK/ft_off" "$WORK/ft_auto" "fine-tuning, auto"

# ---- 3. the benchmark path ----
"$ALICE" pretrain --config "$MICRO" cuda_graph=1 --bench-steps 2 > "$WORK/bench.log" 2>&1 \
  || { tail -20 "$WORK/bench.log"; fail "--bench-steps with cuda_graph = 1 failed"; }
grep -q "alice_step .* cuda_graph=0 graph_replays=0" "$WORK/bench.log" \
  || { cat "$WORK/bench.log"; fail "bench: the alice_step line does not say the graph was not used"; }
grep -q "cuda_graph = 1 is ignored" "$WORK/bench.log" || fail "bench: no warning that cuda_graph is ignored"
"$ALICE" pretrain --config "$MICRO" --bench-steps 2 > "$WORK/bench_auto.log" 2>&1 \
  || { tail -20 "$WORK/bench_auto.log"; fail "--bench-steps with cuda_graph = auto failed"; }
grep -q "alice_step .* cuda_graph=0 graph_replays=0" "$WORK/bench_auto.log" \
  || { cat "$WORK/bench_auto.log"; fail "bench, auto: the alice_step line does not say the graph was not used"; }
grep -q "cuda_graph = 1 is ignored" "$WORK/bench_auto.log" && fail "bench: cuda_graph = auto warned on the cpu"
echo "ok: cuda_graph is auto|1|0 (default auto, boolean spellings kept), 1 ignored with one warning on the cpu, auto silent, same training (pre-training and fine-tuning)"

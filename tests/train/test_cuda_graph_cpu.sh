#!/usr/bin/env bash
# The config key cuda_graph where no GPU is needed:
#   1. it is a boolean: cuda_graph = 2 (file or command line) is an error naming the key and
#      the valid values; the default is 0;
#   2. device = cpu with cuda_graph = 1 is ignored with one warning saying so (the CPU backend
#      cannot record graphs), and training reaches exactly the parameters and logged losses of
#      cuda_graph = 0 (bit for bit: the same eager steps run);
#   3. the benchmark path (--bench-steps) accepts it too and reports cuda_graph=0 (not used).
# The GPU half (recorded and replayed steps bit-identical to eager ones) is
# tests/unit/test_cuda_graph_step.c, run by tests/gpu/run.sh.
source "$(dirname "$0")/lib.sh"

# ---- 1. a boolean key ----
"$ALICE" pretrain --config "$MICRO" run_dir="$WORK/bad" cuda_graph=2 > "$WORK/bad.log" 2>&1 \
  && fail "cuda_graph=2 was accepted"
grep -q "cuda_graph = '2' is not valid: expected one of 1|0|true|false|yes|no|on|off" "$WORK/bad.log" \
  || { cat "$WORK/bad.log"; fail "cuda_graph=2: no error naming the key and the valid values"; }
printf 'cuda_graph = maybe\n' > "$WORK/bad.cfg"
"$ALICE" pretrain --config "$WORK/bad.cfg" run_dir="$WORK/bad2" > "$WORK/bad2.log" 2>&1 \
  && fail "cuda_graph = maybe in a job file was accepted"
grep -q "bad.cfg:1: cuda_graph = 'maybe' is not valid" "$WORK/bad2.log" \
  || { cat "$WORK/bad2.log"; fail "cuda_graph = maybe: no error naming the file and line"; }
"$ALICE" config > "$WORK/resolved.txt" 2>&1 || fail "alice config failed"
grep -qx "cuda_graph = 0" "$WORK/resolved.txt" || fail "cuda_graph: the default is not 0"

# ---- 2. device = cpu: ignored with a warning, same training ----
run() {  # run <name> <extra args...>
  local name=$1; shift
  "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/$name" steps=3 ckpt_every=3 "$@" \
    > "$WORK/$name.log" 2>&1 || { tail -20 "$WORK/$name.log"; fail "pretrain $name failed"; }
}
run off cuda_graph=0
run on cuda_graph=1
grep -q "cuda_graph = 1 is ignored: the cpu backend cannot record graphs" "$WORK/on.log" \
  || { cat "$WORK/on.log"; fail "device = cpu, cuda_graph = 1: no warning that it is ignored"; }
test "$(grep -c 'cuda_graph = 1 is ignored' "$WORK/on.log")" = 1 || fail "the warning is not said once"
grep -q "cuda_graph = 1 is ignored" "$WORK/off.log" && fail "cuda_graph = 0 warned"
"$PYTHON" - "$WORK/off" "$WORK/on" <<'PY' || fail "cuda_graph = 1 on the cpu changed the training"
import sys, h5py, numpy as np
a_dir, b_dir = sys.argv[1:3]
a, b = h5py.File(f"{a_dir}/ckpt_3.h5"), h5py.File(f"{b_dir}/ckpt_3.h5")
count, diff = 0, []
def visit(name, obj):
    global count
    if isinstance(obj, h5py.Dataset) and name.startswith(("params/", "target/", "adam_m/", "adam_v/")):
        count += 1
        if not np.array_equal(obj[()], b[name][()]): diff.append(name)
a.visititems(visit)
la = np.genfromtxt(f"{a_dir}/metrics.csv", delimiter=",", names=True)
lb = np.genfromtxt(f"{b_dir}/metrics.csv", delimiter=",", names=True)
print(f"cuda_graph 0 vs 1 on the cpu: {count} tensors, {len(diff)} differ; losses {la['loss']} vs {lb['loss']}")
assert count > 50, f"only {count} tensors compared"
assert not diff, f"tensors differ: {diff[:5]}"
assert np.array_equal(la["loss"], lb["loss"]), "logged losses differ"
PY

# ---- 3. the benchmark path ----
"$ALICE" pretrain --config "$MICRO" cuda_graph=1 --bench-steps 2 > "$WORK/bench.log" 2>&1 \
  || { tail -20 "$WORK/bench.log"; fail "--bench-steps with cuda_graph = 1 failed"; }
grep -q "alice_step .* cuda_graph=0 graph_replays=0" "$WORK/bench.log" \
  || { cat "$WORK/bench.log"; fail "bench: the alice_step line does not say the graph was not used"; }
grep -q "cuda_graph = 1 is ignored" "$WORK/bench.log" || fail "bench: no warning that cuda_graph is ignored"
echo "ok: cuda_graph is a boolean (default 0), ignored with one warning on the cpu, same training"

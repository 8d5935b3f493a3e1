#!/usr/bin/env bash
# A run stopped at step 3 and resumed (no flag) reproduces the uninterrupted run exactly:
# the same losses in metrics.csv (bit for bit as printed, %.9g) and the same final parameters.
# feat_spread is logged at the same (log) steps either way (log_every = 3 in the dino case, so the
# resumed run's first step 3 is no log step). Checked with the paper's cosine losses and with
# align_loss = dino, whose teacher centers are
# state that the checkpoint must carry (/buffers); and with freeze_last_layer = 2, whose head
# last layer has its own AdamW step count (2 behind the others), which the checkpoint must carry
# too (attribute adam_steps of its /adam_m dataset, and format_version 2 so that an older alice
# refuses the file); that case also has drop-path, whose draws after the resume must be the
# uninterrupted run's (keyed by step and sample, like the masks); and with gradient accumulation
# (accum_steps = 2: the resumed loader starts at the step's first micro-batch).
source "$(dirname "$0")/lib.sh"
check_resume() {
    local tag=$1; shift
    "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/$tag.full" "$@" > "$WORK/$tag.full.log"
    "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/$tag.split" "$@" --stop-after 3 > "$WORK/$tag.a.log"
    grep -q "stopped after 3 steps" "$WORK/$tag.a.log" || fail "$tag: first half did not stop at step 3"
    [ -f "$WORK/$tag.split/ckpt_3.h5" ] || fail "$tag: no checkpoint at step 3"
    "$ALICE" pretrain --config "$MICRO" run_dir="$WORK/$tag.split" "$@" > "$WORK/$tag.b.log"
    grep -q "resumed from .*ckpt_3.h5 at step 3" "$WORK/$tag.b.log" || fail "$tag: second half did not resume"
    # Losses: columns step..grad_norm (timings differ).
    cut -d, -f1-7 "$WORK/$tag.full/metrics.csv" > "$WORK/$tag.full.csv"
    cut -d, -f1-7 "$WORK/$tag.split/metrics.csv" > "$WORK/$tag.split.csv"
    diff "$WORK/$tag.full.csv" "$WORK/$tag.split.csv" || fail "$tag: resumed losses differ from the uninterrupted run"
    # feat_spread (column 10) at the same steps: log steps only, resumed or not
    for run in full split; do
      awk -F, 'NR > 1 {print $1, ($10 == "" ? "-" : "spread")}' "$WORK/$tag.$run/metrics.csv" \
        > "$WORK/$tag.$run.spread"
    done
    diff "$WORK/$tag.full.spread" "$WORK/$tag.split.spread" ||
      fail "$tag: the resumed run logs feat_spread at other steps than the uninterrupted run"
    "$PYTHON" - "$WORK/$tag.full/ckpt_6.h5" "$WORK/$tag.split/ckpt_6.h5" "$tag" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
tag = sys.argv[3]
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
assert len(names) > 50, names
if tag in ("dino", "freeze", "accum"):
    for c in ("buffers/center.cls", "buffers/center.tokens"):
        if c not in names:
            sys.exit(f"FAIL: dino checkpoint has no {c}")
        if not np.any(a[c][()] != 0):
            sys.exit(f"FAIL: {c} is still zero after 6 steps (centers not updated)")
elif any(n.startswith("buffers/") for n in names):
    sys.exit("FAIL: a cosine checkpoint carries /buffers")
last = a["adam_m/head.last.weight"].attrs["adam_steps"]
first = a["adam_m/encoder.norm.weight"].attrs["adam_steps"]
want = 4 if tag == "freeze" else 6
if (last, first, a.attrs["adam_steps"]) != (want, 6, 6):
    sys.exit(f"FAIL: {tag}: adam_steps head.last.weight {last}, encoder.norm.weight {first}, "
             f"file {a.attrs['adam_steps']}; expected {want}, 6, 6")
# format 2 exactly when a tensor's own t differs (an older alice must refuse such a file)
if a.attrs["format_version"] != (2 if tag == "freeze" else 1):
    sys.exit(f"FAIL: {tag}: format_version {a.attrs['format_version']}")
for n in names:
    if not np.array_equal(a[n][()], b[n][()]):
        sys.exit(f"FAIL: {tag}: {n} differs after resume")
print(f"resume ({tag}): {len(names)} tensors identical, losses identical")
PY
}
check_resume cosine
check_resume dino align_loss=dino log_every=3
check_resume freeze align_loss=dino freeze_last_layer=2 drop_path=0.5
# gradient accumulation: the loader resumes at micro-step 3 x 2 (its first_step)
check_resume accum align_loss=dino accum_steps=2 batch=1

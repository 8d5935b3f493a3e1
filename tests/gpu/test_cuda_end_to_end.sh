#!/usr/bin/env bash
# `device = cuda` end to end (issue 6, deliverable 4), tiny sizes (well under a minute on an
# H100): phantoms -> `alice pack` -> `alice pretrain device=cuda` (4 steps) -> `alice finetune
# device=cuda` from that checkpoint (4 steps) -> `alice infer` of the held-out fold with the
# SAME fine-tuned checkpoint on device=cuda and on device=cpu -> `alice eval` of both.
# Asserted:
#   - every command exits 0; the fine-tuning loads every encoder tensor of the cuda checkpoint;
#   - the cuda pre-training checkpoint resumes on the cpu (`--resume ckpt_2.h5 device=cpu`) and
#     the cpu steps 3-4 log finite losses (their difference to the cuda run's steps is printed);
#   - the cuda fine-tuning checkpoint loads in a cpu run (the cpu inference);
#   - both inferences run with --probs; the cuda and cpu class probabilities
#     (<case>_probs.nii.gz, float32, X x Y x Z x K) agree within 1e-3 (max abs difference) at
#     every voxel and class. Why 1e-3: the fp32 logits differ by ~1e-6..1e-5 relative (below),
#     and a softmax moves p_k by at most 2 max|dlogit| p_k (1 - p_k) <= max|dlogit| / 2, so
#     with this model's O(1) logits the expected difference is ~1e-5; 1e-3 leaves a ~100x
#     margin, while a wrong window weight, start or original-grid mapping on one backend moves
#     probabilities by 1e-2 and more (unlike labels, probabilities need no flip allowance);
#   - cuda and cpu labels agree on all but at most 0.1% of the voxels of every case. Why not
#     all: in fp32 the backends sum in other orders (cuBLAS/cuDNN vs OpenBLAS/own loops), so
#     the logits differ by ~1e-6..1e-5 relative, and the argmax flips only where the two best
#     classes are closer than that. Measured on the cpu with this script's model (near
#     untrained: flat logits): perturbing every weight by 1e-5 relative flips 36 and 47 of
#     1.3M and 1.5M voxels (3e-5), so 0.1% leaves a 30x margin;
#   - the mean DSC of the two evaluations differs by < 1e-3;
#   - instance norm through cuDNN (instnorm_kernel = cudnn): a 2-step fine-tuning logs the
#     choice, and the device inference with it gives the cpu's probabilities within the same
#     1e-3 (cuDNN's batch norm on the (b, c) planes sums in another order: fp32 rounding only);
#   - with the GPU hidden (CUDA_VISIBLE_DEVICES=""), device = cuda is a clear error in
#     pretrain, finetune and infer (tests/gpu/test_cuda_unavailable.sh).
# Math: fp32 (precision = fp32, tf32 = 0, attention_kernel = gemm are forced on the command
# line, whatever the job files say), the mode kept for parity with the cpu.
# Skips (77) when no GPU is visible (nvidia-smi, as the other GPU scripts) or when $ALICE was
# built without CUDA. E2E_DEVICE=cpu rehearses the whole script without a GPU (both sides cpu;
# the agreement checks are then trivially exact): it is how the script is checked here.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-python3}
DEV=${E2E_DEVICE:-cuda}
if [ "$DEV" = cuda ]; then
  command -v nvidia-smi > /dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU \
    || { echo "skip: no GPU visible (nvidia-smi -L)"; exit 77; }
fi
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
command -v "$PYTHON" > /dev/null || { echo "skip: no $PYTHON for the comparisons"; exit 77; }
T=$(mktemp -d /tmp/alice_cuda_e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc 2>/dev/null || echo 2)}
fail() { echo "FAIL: $*"; exit 1; }
# run LOG cmd...: the command's output goes to $T/LOG.log; a non-zero exit fails the test
# (or skips it when this alice has no CUDA compiled in).
run() {
  local log="$T/$1.log" rc=0; shift
  echo "+ ${*#"$ALICE" }"
  local t0=$SECONDS
  "$@" > "$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ]; then
    tail -25 "$log"
    grep -q 'built without CUDA' "$log" && { echo "skip: $ALICE was built without CUDA"; exit 77; }
    fail "$2 exited with $rc"
  fi
  echo "  ok, $(( SECONDS - t0 )) s"
}
FP32="precision=fp32 tf32=0 attention_kernel=gemm"
ENC="patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48"

run phantom "$ALICE" phantom --out "$T/ph" --cases 4 --size small --seed 5
run pack "$ALICE" pack --input "$T/ph" --out "$T/ds.h5" spacing=3,3,3 num_folds=2 seed=1

# ---- pre-training on the device, then resumed on the cpu from its step-2 checkpoint ----
PT="pretrain --config $ROOT/jobs/pretrain_tiny.cfg data=$T/ds.h5 $ENC crop=32,32,32 dec_dim=12
    dec_heads=2 dec_mlp_dim=24 casa_dim=12 head_hidden=32 head_bottleneck=8 head_out=16
    steps=4 warmup=1 ckpt_every=2 log_every=1 $FP32"
# shellcheck disable=SC2086
run pretrain_dev "$ALICE" $PT device="$DEV" run_dir="$T/pt_dev"
for f in ckpt_2.h5 ckpt_4.h5 metrics.csv; do [ -f "$T/pt_dev/$f" ] || fail "pre-training wrote no $T/pt_dev/$f"; done
# shellcheck disable=SC2086
run pretrain_resume_cpu "$ALICE" $PT device=cpu run_dir="$T/pt_cpu" --resume "$T/pt_dev/ckpt_2.h5"
grep -q "resumed from .*ckpt_2.h5 at step 2" "$T/pretrain_resume_cpu.log" || fail "the cpu run did not resume at step 2"

# ---- fine-tuning on the device from the device's pre-training checkpoint ----
run finetune_dev "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" data="$T/ds.h5" \
    run_dir="$T/ft_dev" $ENC pretrained="$T/pt_dev/ckpt_4.h5" fold=0 steps=4 warmup=1 \
    val_every=4 ckpt_every=2 log_every=1 $FP32 device="$DEV"
line=$(grep -E "loaded [0-9]+ of [0-9]+ vit" "$T/finetune_dev.log") || fail "no encoder loading line in the fine-tuning log"
echo "  $line"
loaded=$(echo "$line" | sed -E 's/.*loaded ([0-9]+) of ([0-9]+).*/\1/')
total=$(echo "$line" | sed -E 's/.*loaded ([0-9]+) of ([0-9]+).*/\2/')
[ "$loaded" = "$total" ] && [ "$loaded" -gt 0 ] || fail "loaded $loaded of $total encoder tensors"
CKPT="$T/ft_dev/ckpt_best.h5"
[ -f "$CKPT" ] || fail "fine-tuning wrote no $CKPT"

# ---- inference with the same checkpoint on both backends, and evaluation of both ----
for d in "$DEV" cpu; do
  run "infer_$d" "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 \
      --out "$T/pred_$d" --probs $FP32 device="$d"
  run "eval_$d" "$ALICE" eval --pred "$T/pred_$d" --labels "$T/ph/labelsTr" --out "$T/results_$d"
done
# Instance norm through cuDNN (UNETR's res blocks): fine-tuning runs and logs it; inference
# with it is compared with the cpu's below.
run "finetune_${DEV}_cudnn_in" "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" \
    data="$T/ds.h5" run_dir="$T/ft_cudnn_in" $ENC fold=0 steps=2 warmup=1 val_every=2 \
    ckpt_every=2 log_every=1 $FP32 instnorm_kernel=cudnn device="$DEV"
if [ "$DEV" = cuda ]; then
  grep -q "cuda math:.*instance norm cudnn" "$T/finetune_${DEV}_cudnn_in.log" \
    || fail "finetune instnorm_kernel=cudnn did not log the cuDNN instance norm"
fi
run "infer_${DEV}_cudnn_in" "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 \
    --out "$T/pred_cudnn_in" --probs $FP32 instnorm_kernel=cudnn device="$DEV"
# The mixed-precision modes reach inference too (train_apply_device_math): it must run, log
# the mode, and stay close to fp32 (the disagreement is printed, not bounded: bf16 operands
# round to 8 bits, so near-untrained flat logits may flip more than fp32's 0.1%).
run "infer_${DEV}_bf16" "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 \
    --out "$T/pred_bf16" precision=bf16 tf32=1 attention_kernel=fused device="$DEV"
if [ "$DEV" = cuda ]; then
  grep -q "cuda math: linear/attention GEMMs bf16 operands.*attention kernel fused" "$T/infer_${DEV}_bf16.log" \
    || fail "infer precision=bf16 attention_kernel=fused did not set the cuda math mode"
fi

"$PYTHON" - "$T" "$DEV" <<'PY' || fail "comparisons"
# Standard library only: the lent GPU machine's Python may lack numpy, h5py and nibabel.
import array, csv, glob, gzip, math, operator, os, struct, sys
T, dev = sys.argv[1], sys.argv[2]

def losses(run):
    rows = list(csv.DictReader(open(os.path.join(T, run, "metrics.csv"))))
    return {int(r["step"]): float(r["loss"]) for r in rows}
dev_loss, cpu_loss = losses("pt_dev"), losses("pt_cpu")
resumed = sorted(s for s in cpu_loss if s not in (0, 1))
assert resumed, "the cpu run resumed from the %s checkpoint logged no step: %r" % (dev, cpu_loss)
for s in resumed:
    assert math.isfinite(cpu_loss[s]), "cpu step %d after resuming: loss %r" % (s, cpu_loss[s])
    print("pretrain step index %d: %s loss %.6f, cpu (resumed from the %s checkpoint) %.6f, "
          "relative difference %.1e" % (s, dev, dev_loss[s], dev, cpu_loss[s],
                                        abs(dev_loss[s] - cpu_loss[s]) / max(abs(dev_loss[s]), 1e-30)))

def nifti_labels(path):
    """(dim, voxel bytes) of a uint8 NIfTI-1 or NIfTI-2 file (.nii.gz)."""
    raw = gzip.open(path).read()
    for end in "<>":
        size = struct.unpack(end + "i", raw[:4])[0]
        if size == 348:   # NIfTI-1: dim int16[8] at 40, datatype int16 at 70, vox_offset float at 108
            dim = struct.unpack(end + "8h", raw[40:56]); dtype = struct.unpack(end + "h", raw[70:72])[0]
            offset = int(struct.unpack(end + "f", raw[108:112])[0]); break
        if size == 540:   # NIfTI-2: datatype int16 at 12, dim int64[8] at 16, vox_offset int64 at 168
            dtype = struct.unpack(end + "h", raw[12:14])[0]; dim = struct.unpack(end + "8q", raw[16:80])
            offset = struct.unpack(end + "q", raw[168:176])[0]; break
    else:
        raise AssertionError(path + ": not a NIfTI file")
    assert dtype == 2, "%s: datatype %d, expected uint8 (2)" % (path, dtype)
    shape = tuple(dim[1:1 + dim[0]])
    n = 1
    for d in shape: n *= d
    data = raw[offset:offset + n]
    assert len(data) == n, path + ": truncated"
    return shape, data

def nifti_floats(path):
    """(shape, array('f') in file order) of a float32 NIfTI-1 file (.nii.gz) in this machine's
    byte order (what alice writes)."""
    raw = gzip.open(path).read()
    end = next((e for e in "<>" if struct.unpack(e + "i", raw[:4])[0] == 348), None)
    assert end, path + ": not a NIfTI-1 file"
    dim = struct.unpack(end + "8h", raw[40:56]); dtype = struct.unpack(end + "h", raw[70:72])[0]
    offset = int(struct.unpack(end + "f", raw[108:112])[0])
    assert dtype == 16, "%s: datatype %d, expected float32 (16)" % (path, dtype)
    assert (end == "<") == (sys.byteorder == "little"), path + ": foreign byte order"
    shape = tuple(dim[1:1 + dim[0]])
    n = 1
    for d in shape: n *= d
    data = array.array("f")
    data.frombytes(raw[offset:offset + 4 * n])
    assert len(data) == n, path + ": truncated"
    return shape, data

MAX_PROB_DIFF = 1e-3       # fp32 logits through softmax, see the header of this script
MAX_FLIP_FRACTION = 1e-3   # argmax ties/rounding, see the header of this script
preds = sorted(p for p in glob.glob(os.path.join(T, "pred_" + dev, "*.nii.gz"))
               if not p.endswith("_probs.nii.gz"))
assert preds, "the %s inference wrote no predictions" % dev
worst = worst_prob = 0.0
for p in preds:
    name = os.path.basename(p)
    q = os.path.join(T, "pred_cpu", name)
    assert os.path.exists(q), "the cpu inference wrote no " + name
    (sa, la), (sb, lb) = nifti_labels(p), nifti_labels(q)
    assert sa == sb, "%s: shapes differ: %s %s, cpu %s" % (name, dev, sa, sb)
    flips = 0 if la == lb else sum(1 for a, b in zip(la, lb) if a != b)
    print("%s: %d of %d voxels labelled differently by %s and cpu (%.2e; bound %.0e), labels %s"
          % (name, flips, len(la), dev, flips / len(la), MAX_FLIP_FRACTION, sorted(set(la))))
    assert flips <= MAX_FLIP_FRACTION * len(la), name + ": too many labels differ"
    worst = max(worst, flips / len(la))
    probs = name[:-len(".nii.gz")] + "_probs.nii.gz"
    for d in (dev, "cpu"):
        assert os.path.exists(os.path.join(T, "pred_" + d, probs)), "the %s inference wrote no %s" % (d, probs)
    (qa, pa), (qb, pb) = (nifti_floats(os.path.join(T, "pred_" + d, probs)) for d in (dev, "cpu"))
    assert qa == qb and qa[:3] == sa, "%s: probability shapes %s %s, cpu %s, labels %s" % (probs, dev, qa, qb, sa)
    # map() keeps the ~2e7 differences per case in C (a few seconds, no numpy on the lent machine)
    diff = 0.0 if pa == pb else max(map(abs, map(operator.sub, pa, pb)))
    print("%s: %d classes, max |%s - cpu| probability %.2e (bound %.0e)" % (probs, qa[3], dev, diff, MAX_PROB_DIFF))
    assert diff <= MAX_PROB_DIFF, probs + ": probabilities differ by more than the bound"
    worst_prob = max(worst_prob, diff)

for p in preds:   # the device inference with instance norm through cuDNN
    probs = os.path.basename(p)[:-len(".nii.gz")] + "_probs.nii.gz"
    (qa, pa), (qb, pb) = (nifti_floats(os.path.join(T, d, probs)) for d in ("pred_cudnn_in", "pred_cpu"))
    assert qa == qb, "%s: probability shapes %s with cuDNN instance norm, cpu %s" % (probs, qa, qb)
    diff = 0.0 if pa == pb else max(map(abs, map(operator.sub, pa, pb)))
    print("%s: max |%s with cuDNN instance norm - cpu| probability %.2e (bound %.0e)"
          % (probs, dev, diff, MAX_PROB_DIFF))
    assert diff <= MAX_PROB_DIFF, probs + ": cuDNN instance norm moves probabilities beyond the bound"

for p in sorted(glob.glob(os.path.join(T, "pred_bf16", "*.nii.gz"))):
    (sa, la), (sb, lb) = nifti_labels(p), nifti_labels(os.path.join(T, "pred_cpu", os.path.basename(p)))
    flips = 0 if la == lb else sum(1 for a, b in zip(la, lb) if a != b)
    print("%s: %s bf16/tf32/fused labels differ from cpu fp32 on %.2e of the voxels (not bounded)"
          % (os.path.basename(p), dev, flips / len(la)))

def mean_dsc(stem):
    rows = list(csv.DictReader(open(os.path.join(T, stem + ".csv"))))
    assert rows, stem + ".csv is empty"
    vals = [float(r["dsc"]) for r in rows]
    vals = [v for v in vals if math.isfinite(v)]
    assert vals, stem + ".csv has no finite DSC"
    return sum(vals) / len(vals), len(vals)
(dd, nd), (dc, nc) = mean_dsc("results_" + dev), mean_dsc("results_cpu")
print("mean DSC: %s %.6f (%d case x organ rows), cpu %.6f (%d): difference %.1e (bound 1e-3)"
      % (dev, dd, nd, dc, nc, abs(dd - dc)))
assert nd == nc, "the evaluations scored different numbers of case x organ pairs"
assert abs(dd - dc) < 1e-3, "mean DSC differs by %.3g" % abs(dd - dc)
print("summary: labels differ on %.1e of voxels, probs by <= %.1e, mean DSC by %.1e, %d cases"
      % (worst, worst_prob, abs(dd - dc), len(preds)))
PY
# ---- and with the GPU hidden, device = cuda is a clear error in all three commands ----
ALICE="$ALICE" bash "$ROOT/tests/gpu/test_cuda_unavailable.sh" > "$T/unavailable.log" 2>&1 \
  || { cat "$T/unavailable.log"; fail "device = cuda without a visible GPU is not a clear error"; }
grep -c 'exit 2: alice: error: device = cuda' "$T/unavailable.log" | grep -qx 3 \
  || { cat "$T/unavailable.log"; fail "expected the device error from pretrain, finetune and infer"; }
echo "PASS: device=$DEV pretrain -> cpu resume, finetune, infer (labels, probabilities) on $DEV and cpu agree, eval;" \
  "device = cuda with the GPU hidden is a clear error"

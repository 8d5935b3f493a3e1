#!/usr/bin/env bash
# `alice infer --probs` (the class probabilities beside the labels), on a tiny fine-tuned UNETR:
# phantoms -> pack -> `alice finetune` (4 steps, random encoder) -> `alice infer --probs` of
# fold 0 with overlapping windows (sw_overlap = 0.25, so the Gaussian blending matters) and the
# same inference without --probs. Asserted with nibabel/numpy on every case:
#   - <case>_probs.nii.gz is float32, shape = the label file's shape x K, affine equal to the
#     label file's (and to the source image's);
#   - every probability in [0, 1], every voxel's K probabilities sum to 1 within 1e-5;
#   - argmax over classes == the label file, at every voxel;
#   - the labels are the same with and without --probs;
#   - the probabilities are soft somewhere (a voxel whose largest probability is < 0.5);
#   - nearest-neighbour structure, from the data set's affines recomputed in numpy: original
#     voxels outside the packed box are one-hot class 0;
#   - --probs-type uint8: the stored values are round(255 p) of the float32 file (ties to even),
#     scl_slope 1/255, same grid, labels unchanged; an unknown type is refused with a message;
#   - provenance: both files carry "alice infer: <checkpoint's real path> (step 4)" in a NIfTI
#     comment extension (the label file's descrip its first 79 characters), and alice eval's
#     results.h5 lists it per case (/prediction_sources) and as its checkpoint attribute.
# --cases fold:0 predicts exactly the index's fold-0 cases, and val.csv's Dice at step 4 is the
# reference's (below) on those held-out cases at the run's sw_overlap, within 2e-3.
# Independent reference (first case): the fine-tuned checkpoint's weights loaded into the
# PyTorch UNETR of tests/reference/unetr_ref.py (MONAI's block by block), MONAI's sliding
# window rewritten in numpy (padding, dense_patch_slices starts, MONAI 1.x's Gaussian map,
# weighted average of the window logits), softmax in float64, mapped to the original grid by
# the numpy index map; the file must match it within 1e-4 (C is fp32: logits differ from the
# float64 reference by ~1e-6 relative, so 1e-4 on probabilities leaves a wide margin while a
# wrong weight, start or mapping moves probabilities by 1e-2 and more).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ALICE=${ALICE:-$ROOT/bin/alice}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$ALICE" ] || { echo "skip: $ALICE is not built"; exit 77; }
"$PYTHON" -c 'import nibabel, numpy, h5py, scipy, torch' 2>/dev/null \
  || { echo "skip: $PYTHON lacks nibabel/numpy/h5py/scipy/torch"; exit 77; }
T=$(mktemp -d /tmp/alice_infer_probs.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# shellcheck source=../lib/steps.sh
. "$ROOT/tests/lib/steps.sh"

run "$ALICE" phantom --out "$T/ph" --cases 4 --size small --seed 5
run "$ALICE" pack --input "$T/ph" --out "$T/ds.h5" spacing=3,3,3 num_folds=2 seed=1
run "$ALICE" finetune --config "$ROOT/jobs/finetune_tiny.cfg" data="$T/ds.h5" run_dir="$T/ft" \
    patch=16 embed_dim=24 depth=4 heads=2 mlp_dim=48 fold=0 steps=4 warmup=1 val_every=4 \
    ckpt_every=4
CKPT="$T/ft/ckpt_4.h5"
[ -f "$CKPT" ] || fail "fine-tuning wrote no $CKPT"
run "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 --out "$T/pred" --probs sw_overlap=0.25
grep -E "case|done" "$T/last.log"
run "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 --out "$T/plain" sw_overlap=0.25
ls "$T/plain" | grep -q _probs && fail "infer without --probs wrote a probability file"
run "$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --cases fold:0 --out "$T/q8" --probs-type uint8 sw_overlap=0.25
"$ALICE" infer --checkpoint "$CKPT" --data "$T/ds.h5" --out "$T/bad" --probs-type float16 > "$T/bad.log" 2>&1 &&
  fail "--probs-type float16 was accepted"
grep -q "probs-type 'float16' is not a storage type; use float32 or uint8" "$T/bad.log" ||
  { cat "$T/bad.log"; fail "--probs-type float16: no clear message"; }
# eval records what made each prediction (the files' descriptions, below)
run "$ALICE" eval --pred "$T/pred" --data "$T/ds.h5" --out "$T/res"

"$PYTHON" - "$T" "$ROOT" <<'PY' || fail "python checks"
import glob, math, os, sys
import h5py, nibabel as nib, numpy as np, torch
T, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import alice_ref, unetr_ref  # noqa: E402

ckpt_path = os.path.join(T, "ft", "ckpt_4.h5")
with h5py.File(ckpt_path, "r") as f:
    cfg = alice_ref.Cfg(alice_ref.parse_config_text(alice_ref._attr_text(f.attrs["config"])))
    params = {}
    f["params"].visititems(lambda n, o: params.__setitem__(n, np.array(o)) if isinstance(o, h5py.Dataset) else None)
K = cfg.i("num_classes")
ds = h5py.File(os.path.join(T, "ds.h5"), "r")


def index_map(name):
    """Original voxel -> flat packed index (-1 outside), nearest neighbour through
    inv(affine) @ original_affine (docs/FORMAT.md), computed here independently of the C code."""
    g = ds["cases"][name]
    pdim = np.array(g["image"].shape)
    odim = tuple(int(v) for v in g.attrs["original_shape"])
    m = np.linalg.inv(np.array(g.attrs["affine"], dtype=np.float64)) @ np.array(g.attrs["original_affine"], dtype=np.float64)
    ijk = np.indices(odim).reshape(3, -1).astype(np.float64)
    c = m[:3, :3] @ ijk + m[:3, 3:4]
    p = np.floor(c + 0.5).astype(np.int64)
    # docs/FORMAT.md: within [n - 0.5, n + 0.5) the face voxel n - 1, along the axes whose high
    # face the body crop left alone (crop_box's end = the resampled grid's round(n in/out))
    aff = np.array(g.attrs["original_affine"], dtype=np.float64)
    ras_axis = [int(a) for a in g.attrs["ras_axis"]]
    in_sp = [float(np.float32(np.linalg.norm(aff[:3, ax]))) for ax in ras_axis]
    out_sp = [float(np.float32(s)) for s in g.attrs["spacing"]]
    resampled = [max(1, math.floor(odim[ax] * i / o + 0.5)) for ax, i, o in zip(ras_axis, in_sp, out_sp)]
    edge_high = np.array([int(g.attrs["crop_box"][1][a]) == resampled[a] for a in range(3)])[:, None]
    n = pdim[:, None]
    p = np.where(edge_high & (p >= n) & (c < n + 0.5), n - 1, p)
    inside = np.all((p >= 0) & (p < n), axis=0)
    flat = np.where(inside, (p[0] * pdim[1] + p[1]) * pdim[2] + p[2], -1)
    return flat.reshape(odim), odim


def starts(size, roi, overlap):
    """MONAI _get_scan_interval + dense_patch_slices along one axis."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    num = int(math.ceil(size / interval))
    scan = next((d for d in range(num) if d * interval + roi >= size), None)
    n = scan + 1 if scan is not None else 1
    return [min(d * interval, size - roi) for d in range(n)]


def importance(roi, sigma_scale=0.125):
    """MONAI (>= 1.0) compute_importance_map(mode='gaussian'): per axis
    exp(-x^2 / (2 sigma^2)) at x = i - (roi - 1) / 2, sigma = sigma_scale * roi, the product,
    clamped from below by max(its minimum, 1e-3)."""
    axes = []
    for r in roi:
        sigma = sigma_scale * r
        x = np.arange(r) - (r - 1) / 2.0
        axes.append(np.exp(-x * x / (2.0 * sigma * sigma)))
    m = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return np.maximum(m, max(m.min(), 1e-3))


def reference_probs(name, overlap):
    model = unetr_ref.UNETR(cfg).double()
    own = dict(model.named_parameters())
    assert set(own) == set(params), "checkpoint params differ from MONAI's UNETR names: %s" % (set(own) ^ set(params))
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(torch.from_numpy(params[n].astype(np.float64)))
    lo, hi = float(cfg.s("window_lo")), float(cfg.s("window_hi"))
    hu = np.array(ds["cases"][name]["image"]).astype(np.float32)
    img = np.clip((hu - np.float32(lo)) * np.float32(1.0 / (hi - lo)), 0, 1).astype(np.float64)
    roi = cfg.i3("crop")
    dim = img.shape
    diff = [max(r - s, 0) for r, s in zip(roi, dim)]
    pad = [(d // 2, d - d // 2) for d in diff]
    x = np.pad(img, pad)
    imp = importance(roi)
    acc = np.zeros((K,) + x.shape)
    cnt = np.zeros(x.shape)
    wins = [(a, b, c) for a in starts(x.shape[0], roi[0], overlap)
            for b in starts(x.shape[1], roi[1], overlap) for c in starts(x.shape[2], roi[2], overlap)]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with torch.no_grad():
        for i in range(0, len(wins), 4):
            chunk = wins[i:i + 4]
            batch = np.stack([x[a:a + roi[0], b:b + roi[1], c:c + roi[2]] for a, b, c in chunk])[:, None]
            out = model(torch.from_numpy(batch)).numpy()
            for (a, b, c), o in zip(chunk, out):
                acc[:, a:a + roi[0], b:b + roi[1], c:c + roi[2]] += o * imp
                cnt[a:a + roi[0], b:b + roi[1], c:c + roi[2]] += imp
    logits = (acc / cnt)[:, pad[0][0]:pad[0][0] + dim[0], pad[1][0]:pad[1][0] + dim[1], pad[2][0]:pad[2][0] + dim[2]]
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0), len(wins)


labels = sorted(p for p in glob.glob(os.path.join(T, "pred", "*.nii.gz")) if not p.endswith("_probs.nii.gz"))
assert labels, "alice infer wrote no predictions"
# --cases fold:0 predicts exactly the cases the data set's index puts in fold 0
fold0 = sorted(n.decode().rstrip("\0") for n, k in zip(ds["index/name"][()], ds["index/fold"][()])
               if k == 0)
got_cases = [os.path.basename(p)[:-len(".nii.gz")] for p in labels]
assert got_cases == fold0, \
    "--cases fold:0 predicted %s; the index's fold 0 is %s" % (got_cases, fold0)
print("--cases fold:0: exactly the index's fold-0 cases %s" % fold0)
source = "alice infer: %s (step 4)" % os.path.realpath(ckpt_path)


def comments(img):
    return [e.get_content().rstrip(b"\0").decode() for e in img.header.extensions
            if e.get_code() == 6]


with h5py.File(os.path.join(T, "res.h5"), "r") as f:
    got = [s.decode() for s in f["prediction_sources"][()]]
    names = [s.decode() for s in f["case_names"][()]]
    attr = f.attrs["checkpoint"]
    attr = attr.decode() if isinstance(attr, bytes) else attr
assert names and got == [source] * len(names), "results.h5 prediction_sources %s" % got
assert attr == source, "results.h5 checkpoint attribute %r, expected %r" % (attr, source)
print("results.h5: %d cases from %r" % (len(names), source))
for n, lp in enumerate(labels):
    name = os.path.basename(lp)[:-len(".nii.gz")]
    pp = os.path.join(T, "pred", name + "_probs.nii.gz")
    assert os.path.exists(pp), "no " + pp
    li, pi = nib.load(lp), nib.load(pp)
    assert comments(li) == [source], "%s: comment extensions %s" % (lp, comments(li))
    assert li.header["descrip"].item().decode() == source[:79], "%s: descrip" % lp
    assert len(comments(pi)) == 1 and comments(pi)[0].endswith("; " + source), \
        "%s: comment extensions %s" % (pp, comments(pi))
    src = nib.load(os.path.join(T, "ph", "imagesTr", name + "_0000.nii.gz"))
    lab = np.asarray(li.dataobj)
    assert pi.header.get_data_dtype() == np.float32, "%s: dtype %s" % (pp, pi.header.get_data_dtype())
    assert pi.shape == lab.shape + (K,), "%s: shape %s, labels %s, K %d" % (pp, pi.shape, lab.shape, K)
    assert np.array_equal(pi.affine, li.affine), "%s: affine\n%s\nlabels\n%s" % (pp, pi.affine, li.affine)
    assert np.allclose(pi.affine, src.affine, atol=1e-4), "%s: affine differs from the source image" % pp
    p = np.asarray(pi.dataobj)
    assert p.min() >= 0.0 and p.max() <= 1.0, "%s: probabilities in [%g, %g]" % (pp, p.min(), p.max())
    s = p.sum(-1, dtype=np.float64)
    assert np.abs(s - 1).max() <= 1e-5, "%s: sums in [%.8f, %.8f]" % (pp, s.min(), s.max())
    am = p.argmax(-1)
    assert np.array_equal(am, lab), "%s: argmax differs from the labels at %d voxels" % (pp, (am != lab).sum())
    plain = np.asarray(nib.load(os.path.join(T, "plain", name + ".nii.gz")).dataobj)
    assert np.array_equal(plain, lab), "%s: labels differ with and without --probs" % name
    top = p.max(-1)
    assert top.min() < 0.5, "%s: not soft anywhere (smallest top probability %.3f)" % (pp, top.min())
    flat, odim = index_map(name)
    assert odim == lab.shape, "%s: original_shape %s, labels %s" % (name, odim, lab.shape)
    out = flat < 0
    if out.any():
        onehot = np.zeros(K, np.float32); onehot[0] = 1
        assert (p[out] == onehot).all(), "%s: voxels outside the packed box are not one-hot class 0" % pp
    print("%s: probs %s float32, affine == labels, sums 1 +- %.1e, argmax == labels, top probability "
          "%.3f..%.3f, %d voxels outside the packed box one-hot background"
          % (name, pi.shape, np.abs(s - 1).max(), top.min(), top.max(), int(out.sum())))
    if n == 0:
        ref, nwin = reference_probs(name, 0.25)
        ref_orig = np.where(out[..., None], np.eye(K)[0], np.moveaxis(ref.reshape(K, -1)[:, np.maximum(flat, 0)], 0, -1))
        err = np.abs(ref_orig - p).max()
        agree = (ref_orig.argmax(-1) == lab).mean()
        print("%s: PyTorch UNETR + numpy sliding window (%d windows, float64): max |probs - reference| "
              "%.2e (bound 1e-4), labels agree on %.6f of the voxels" % (name, nwin, err, agree))
        assert err <= 1e-4, "%s: probabilities differ from the reference by %.2e" % (name, err)
    # --probs-type uint8: round(255 p) (ties to even, as C's lrintf and numpy's rint) of the
    # float32 file's values, scl_slope 1/255; the labels are the same file's.
    qi = nib.load(os.path.join(T, "q8", name + "_probs.nii.gz"))
    assert qi.header.get_data_dtype() == np.uint8, "%s uint8: dtype %s" % (name, qi.header.get_data_dtype())
    slope, inter = qi.dataobj.slope, qi.dataobj.inter   # nibabel moves the header's scl_* here
    assert abs(slope - np.float32(1 / 255)) < 1e-9 and inter == 0, "%s uint8: slope %s inter %s" % (name, slope, inter)
    assert qi.shape == pi.shape and np.array_equal(qi.affine, pi.affine), "%s uint8: grid differs" % name
    raw = np.asarray(qi.dataobj.get_unscaled())
    want = np.rint(p.astype(np.float32) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(raw, want), "%s uint8: %d stored values differ from round(255 p)" % (name, (raw != want).sum())
    scaled = qi.get_fdata()
    assert np.abs(scaled - p).max() <= 0.5 / 255 + 1e-6, "%s uint8: |p - q/255| = %g" % (name, np.abs(scaled - p).max())
    q_lab = np.asarray(nib.load(os.path.join(T, "q8", name + ".nii.gz")).dataobj)
    assert np.array_equal(q_lab, lab), "%s uint8: labels differ from the float32 run's" % name
    fsize, qsize = os.path.getsize(pp), os.path.getsize(os.path.join(T, "q8", name + "_probs.nii.gz"))
    print("%s: uint8 probs == round(255 p) of the float32 file at every value, max |p - q/255| %.4f, "
          "%d of %d bytes gzipped" % (name, np.abs(scaled - p).max(), qsize, fsize))


# val.csv's mean Dice at step 4 (validation with the weights of ckpt_4.h5), recomputed: the
# reference's sliding window at the run's sw_overlap on each held-out (fold 0) case's packed
# image, argmax, then MONAI's DiceMetric(include_background=False, ignore_empty=True) against
# the packed label, averaged over the cases that have an organ. They agree within 1e-6 here;
# C's fp32 logits could flip an argmax tie at a voxel or two (about 1e-5 each), so 1e-4, while
# validating on the training cases too or at another sw_overlap moves it by 1.7e-3 and more.
import csv  # noqa: E402
val = {int(r["step"]): float(r["mean_dice"])
       for r in csv.DictReader(open(os.path.join(T, "ft", "val.csv")))}
assert 4 in val, "val.csv has no row of step 4: %s" % val
scores = []
for name in fold0:
    pred = reference_probs(name, cfg.f("sw_overlap"))[0].argmax(0)
    truth = np.array(ds["cases"][name]["label"])
    organs = [2.0 * ((pred == k) & (truth == k)).sum() / ((pred == k).sum() + (truth == k).sum())
              for k in range(1, K) if (truth == k).any()]
    if organs:
        scores.append(np.mean(organs))
want = float(np.mean(scores))
print("val.csv step 4: mean Dice %.6f; the reference on the %d held-out cases %.6f"
      % (val[4], len(fold0), want))
assert abs(val[4] - want) <= 1e-4, \
    "val.csv's validation Dice %.6f, the reference's %.6f" % (val[4], want)
print("ok: %d cases" % len(labels))
PY
echo "PASS"

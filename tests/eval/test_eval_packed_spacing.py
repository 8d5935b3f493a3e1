"""The spacing alice eval --data measures NSD with when a case's truth is the packed label mapped
back to the source grid (the source label file gone; TRUTH_PACKED_MAPPED): the prediction's
header voxel size (pixdim, what the FLARE 2022 script's get_zooms() reads; alice infer writes
the source's), not the float affine's column lengths.

The source is rotated 20 degrees about z with 1.5 mm voxels: its float32 sform columns measure
1.50000006 mm, while pixdim says 1.5. It is packed twice: at 1.5 mm (pack reorients, never
rotates, so the file's own voxels are kept and no flag is needed) and at 3 mm (resampled:
--allow-packed-truth). The prediction is the packed label mapped back to the source grid
(tests/tools/label_roundtrip, the inference output path, so the source's header) shifted by
exactly 2 voxels along the first in-plane axis: for the 3 mm organs (kidneys, spleen,
esophagus) the faces across the shift lie exactly at the tolerance, which NSD counts as within
at 1.5 mm and as outside at 1.50000006 mm. Every organ's DSC and NSD in results.h5 must equal
the independent reference (tests/reference/metrics_ref.py) at spacing (1.5, 1.5, 1.5) within
1e-6 (before the fix eval took the column lengths: NSD 0.69-0.96 instead of 1 for those
organs); the reference at the column lengths must lose the ties of exactly the 3 mm organs
(the test exercises them), and the case must have been scored against the mapped-back packed
label (truth_sources)."""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
try:
    import h5py
    import metrics_ref   # numpy and scipy
    import nibabel as nib
    import numpy as np
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ALICE = os.environ.get("ALICE", os.path.join(ROOT, "bin", "alice"))
TOOL = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tools", "label_roundtrip")
if not os.access(ALICE, os.X_OK) or not os.path.exists(TOOL):
    print(f"skip: {ALICE} or {TOOL} not built")
    sys.exit(77)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def ellipsoid(shape, centre, radii):
    g = np.indices(shape, dtype=np.float64)
    return sum(((g[a] - centre[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0


shape = (40, 36, 22)
label = np.zeros(shape, np.uint8)
for lid, centre, radii in ((1, (12, 12, 11), (7, 8, 6)),        # liver, 5 mm
                           (2, (28, 10, 8), (4, 5, 4)),         # right kidney, 3 mm
                           (13, (28, 25, 14), (4, 5, 4)),       # left kidney, 3 mm
                           (3, (12, 27, 11), (5, 4, 5)),        # spleen, 3 mm
                           (5, (20, 18, 11), (2, 2, 7))):       # aorta, 2 mm
    label[ellipsoid(shape, centre, radii)] = lid
label[30:34, 16:20, 4:18] = 10                                    # esophagus, 3 mm (a box)
image = np.full(shape, -900, np.int16)
image[3:37, 3:33, 2:20] = 40                 # the body: the crop keeps every organ
image[label > 0] = 60

t = np.radians(20.0)
affine = np.eye(4)
affine[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) * 1.5
affine[:3, 3] = [-25.0, 10.0, 40.0]


def scored_at_pixdim(tmp, spacing):
    """The data set packed at `spacing`: its label mapped back, shifted, scored by alice eval
    --data (the source label gone) and checked against the reference."""
    tag = f"spacing {spacing}"
    ds = os.path.join(tmp, f"ds_{spacing}.h5")
    before = len(failures)
    back = os.path.join(tmp, f"back_{spacing}")
    os.makedirs(back)
    r = subprocess.run([TOOL, ds, back], capture_output=True, text=True)
    check(r.returncode == 0, f"{tag}: label_roundtrip {r.stderr.strip()[-300:]}")
    if len(failures) > before:
        return
    mapped = nib.load(os.path.join(back, "rot.nii.gz"))
    truth = np.asarray(mapped.dataobj).astype(np.uint8)
    check(tuple(float(z) for z in mapped.header.get_zooms()) == (1.5, 1.5, 1.5)
          and np.array_equal(mapped.affine, written.affine),
          f"{tag}: the mapped-back label carries the source's pixdim and sform "
          f"({mapped.header.get_zooms()})")
    kept = spacing == "1.5,1.5,1.5"   # the file's own voxels (pack reorients, never rotates)
    check(np.array_equal(truth, label) == kept,
          f"{tag}: the mapped-back label {'equals' if kept else 'differs from'} the source label")

    # the prediction: the mapped-back truth 2 voxels further along axis 0, with its header
    pred = np.zeros_like(truth)
    pred[2:] = truth[:-2]
    check(not truth[-2:].any(), f"{tag}: no organ at the far edge (the shift keeps every voxel)")
    pdir = os.path.join(tmp, f"pred_{spacing}")
    os.makedirs(pdir)
    nib.save(nib.Nifti1Image(pred, mapped.affine, mapped.header), os.path.join(pdir, "rot.nii.gz"))

    stem = os.path.join(tmp, f"r_{spacing}")
    # resampled by the packing: scored against the packed label only when allowed
    r = subprocess.run([ALICE, "eval", "--pred", pdir, "--data", ds, "--out", stem,
                        "label_set=flare", "eval_protocol=plain"]
                       + ([] if kept else ["--allow-packed-truth"]), capture_output=True, text=True)
    check(r.returncode == 0 and "packed label mapped back" in r.stderr,
          f"{tag}: eval --data without the source label "
          f"({(r.stderr.strip().splitlines() or [''])[-1][-400:]})")
    if r.returncode != 0:
        return
    with h5py.File(stem + ".h5", "r") as f:
        sources = [s.decode() for s in f["truth_sources"][()]]
        organs = [s.decode() for s in f["organ_names"][()]]
        dsc, nsd = f["dsc"][0], f["nsd"][0]
        voxels = f["truth_voxels"][0]
    check(sources == [f"{ds} (case rot, packed label mapped back to the source grid)"],
          f"{tag}: scored against the packed label mapped back: {sources}")

    def reference(spacing):
        return {o: (d, n) for o, d, n in metrics_ref.case_scores(truth, pred, spacing, "flare")}
    exact, lengths = reference((1.5, 1.5, 1.5)), reference(columns)
    tol = {name: t for _, name, t in metrics_ref.FLARE}
    ties = [o for o in exact if exact[o][1] - lengths[o][1] > 1e-3]
    check(sorted(ties) == sorted(o for o in exact if tol[o] == 3 and voxels[organs.index(o)] > 0),
          f"{tag}: the reference at the sform's column lengths loses the ties of every 3 mm "
          f"organ present, and only those: {sorted(ties)}")
    worst = 0.0
    for j, o in enumerate(organs):
        d, n = exact[o]
        gap = max(abs(dsc[j] - d), abs(nsd[j] - n))
        worst = max(worst, gap)
        if gap > 1e-6 or o in ties:
            print(f"     {o:14s} tol {tol[o]} mm: alice DSC {dsc[j]:.9f} NSD {nsd[j]:.9f}; "
                  f"reference at 1.5 mm {d:.9f} {n:.9f}, at the column lengths {lengths[o][1]:.9f}")
    check(worst <= 1e-6, f"{tag}: every organ's DSC and NSD as the reference's at 1.5 mm "
                         f"(max |alice - reference| = {worst:.3g})")


with tempfile.TemporaryDirectory(prefix="alice_eval_packed_spacing_") as tmp:
    tmp = os.path.realpath(tmp)   # pack records its sources through realpath
    src = os.path.join(tmp, "src")
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(src, sub))
    for data, file in ((image, "imagesTr/rot_0000.nii.gz"), (label, "labelsTr/rot.nii.gz")):
        nib.save(nib.Nifti1Image(data, affine), os.path.join(src, file))
    written = nib.load(os.path.join(src, "labelsTr/rot.nii.gz"))
    columns = np.linalg.norm(written.affine[:3, :3], axis=0)   # the float32 sform's (alice's)
    check(tuple(float(z) for z in written.header.get_zooms()) == (1.5, 1.5, 1.5)
          and columns[0] > 1.5 and abs(columns[0] - 1.5) < 1e-6,
          f"source: pixdim 1.5, sform columns {columns.tolist()} (just above 1.5)")
    # both packings first: the source label must be there to pack, and gone to be scored without
    for spacing in ("1.5,1.5,1.5", "3,3,3"):
        ds = os.path.join(tmp, f"ds_{spacing}.h5")
        r = subprocess.run([ALICE, "pack", "--input", src, "--out", ds, "spacing=" + spacing,
                            "num_folds=1"], capture_output=True, text=True)
        check(r.returncode == 0, f"spacing {spacing}: pack {r.stderr.strip()[-300:]}")
    shutil.move(os.path.join(src, "labelsTr/rot.nii.gz"), os.path.join(tmp, "rot.gone"))
    if not failures:
        for spacing in ("1.5,1.5,1.5", "3,3,3"):
            scored_at_pixdim(tmp, spacing)
print("FAIL" if failures else "PASS")
sys.exit(1 if failures else 0)

"""alice eval --data when a case's source label is gone (its prediction on the source grid):
 - a file whose voxel axes are permuted against RAS (axis 0 superior at 2 mm, axis 1 right and
   axis 2 anterior at 1 mm), packed at RAS spacing 1,1,2 (the file's own voxels, only
   reordered): the packed label mapped back is the source label, so a prediction equal to the
   source label scores DSC 1 on every organ it has (a one-voxel-thick organ included), with a
   warning, without --allow-packed-truth; truth_sources names the packed label;
 - the same file packed at 2,1,1 (each axis resampled, though the three numbers are the file's
   in another order): refused, naming the missing label and --allow-packed-truth, nothing
   written;
 - a data set case without a label, predicted as alice infer predicts every case: not scored
   and not called a prediction of no case (the warning is for files that name no case)."""
import csv
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import h5py
    import nibabel as nib
    import numpy as np
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ALICE = os.environ.get("ALICE", "bin/alice")
if not os.access(ALICE, os.X_OK):
    print(f"skip: {ALICE} is not built")
    sys.exit(77)
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def run(*args):
    return subprocess.run([ALICE, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    tmp = os.path.realpath(tmp)
    src = os.path.join(tmp, "src")
    os.makedirs(os.path.join(src, "imagesTr"))
    os.makedirs(os.path.join(src, "labelsTr"))
    aff = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    shape = (12, 21, 19)
    label = np.zeros(shape, np.uint8)
    label[2:9, 3:10, 2:8] = 1
    label[5:11, 11:18, 9:16] = 2
    label[3:7, 1:2, 10:18] = 3   # one voxel thick along R
    image = np.where(label > 0, 60, -100).astype(np.int16)
    for name, data in (("imagesTr/p_0000", image), ("labelsTr/p", label),
                       ("imagesTr/u_0000", image)):      # u: an image without a label
        nib.save(nib.Nifti1Image(data, aff), os.path.join(src, name + ".nii.gz"))
    pred = os.path.join(tmp, "pred")
    os.makedirs(pred)
    for case in ("p", "u"):
        nib.save(nib.Nifti1Image(label, aff), os.path.join(pred, case + ".nii.gz"))
    for sp in ("1,1,2", "2,1,1"):
        r = run("pack", "--input", src, "--out", os.path.join(tmp, f"ds_{sp}.h5"), "spacing=" + sp,
                "num_folds=1")
        check(r.returncode == 0, f"pack at {sp} ({r.stderr.strip()[-200:]})")
    os.rename(os.path.join(src, "labelsTr", "p.nii.gz"), os.path.join(tmp, "p.gone"))

    stem = os.path.join(tmp, "kept")
    r = run("eval", "--pred", pred, "--data", os.path.join(tmp, "ds_1,1,2.h5"), "--out", stem)
    ok = r.returncode == 0 and "the packing kept the source's voxels" in r.stderr
    rows = list(csv.DictReader(open(stem + ".csv"))) if ok else []
    present = [row for row in rows if int(row["truth_voxels"]) > 0]
    ok = ok and len(present) == 3 and all(float(row["dsc"]) == 1.0 for row in present)
    check(ok, f"packed at the file's own voxels (1,1,2): the mapped-back truth is the source's, "
              f"DSC 1 on its 3 organs ({[(x['organ'], x['dsc']) for x in present]} "
              f"{r.stderr.strip()[-200:]})")
    if ok:
        with h5py.File(stem + ".h5", "r") as f:
            src_used = [s.decode() for s in f["truth_sources"][()]]
        check(src_used == [os.path.join(tmp, "ds_1,1,2.h5") +
                           " (case p, packed label mapped back to the source grid)"],
              f"truth_sources names the packed label: {src_used}")
    check("name no case" not in r.stderr,
          f"the unlabelled case's prediction is not called a prediction of no case "
          f"({r.stderr.strip()[-160:]})")

    stem = os.path.join(tmp, "resampled")
    r = run("eval", "--pred", pred, "--data", os.path.join(tmp, "ds_2,1,1.h5"), "--out", stem)
    check(r.returncode == 2 and "source label" in r.stderr and "p.nii.gz is not readable" in
          r.stderr and "--allow-packed-truth" in r.stderr and not os.path.exists(stem + ".h5"),
          f"packed at 2,1,1 (resampled on every axis): refused ({r.stderr.strip()[-200:]})")
print("FAIL" if failures else "PASS")
sys.exit(1 if failures else 0)

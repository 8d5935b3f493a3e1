"""alice pack on the real CT scan (../shared/data/ct or $ALICE_CT_DIR; skipped when absent):
geometry (spacing, RAS affine, world position of the packed grid) and organ label volumes in mL
preserved within resampling error (5% for organs of >= 500 source voxels)."""
import os
import subprocess
import sys
import tempfile

import h5py
import nibabel as nib
import numpy as np

ALICE = os.environ.get("ALICE", "bin/alice")
ct = os.environ.get("ALICE_CT_DIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data", "ct")
img_p, lab_p = os.path.join(ct, "example_ct.nii.gz"), os.path.join(ct, "example_ct_label_flare13.nii.gz")
if not (os.path.exists(img_p) and os.path.exists(lab_p)):
    print(f"skip: real CT scan not found in {ct} (set ALICE_CT_DIR)")
    sys.exit(77)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


tmp_dir = tempfile.TemporaryDirectory(prefix="alice_realct_")  # removed at exit
tmp = tmp_dir.name
lst = os.path.join(tmp, "list.txt")
open(lst, "w").write(f"{img_p} {lab_p}\n")
out = os.path.join(tmp, "ct.h5")
r = subprocess.run([ALICE, "pack", "--list", lst, "--out", out], capture_output=True, text=True)
check(r.returncode == 0, f"pack runs {r.stderr[-400:]}")
if r.returncode != 0:
    sys.exit(1)
src = nib.load(img_p)
lab = np.asarray(nib.load(lab_p).dataobj)
with h5py.File(out, "r") as f:
    g = f["cases/example_ct"]
    A = np.asarray(g.attrs["affine"])
    check(np.allclose(np.abs(A[:3, :3]), np.diag([1.5, 1.5, 2.0]), atol=1e-6) and (np.diag(A)[:3] > 0).all(),
          f"packed affine is RAS 1.5,1.5,2.0 mm: {np.diag(A)[:3]}")
    check(np.allclose(g.attrs["original_affine"], src.affine, atol=1e-4), "original affine stored (sform)")
    # world position of packed voxel 0 = source RAS grid at crop_lo * step
    canon = nib.as_closest_canonical(src)
    lo = g.attrs["crop_box"][0]
    step = np.array([1.5, 1.5, 2.0]) / np.array(canon.header.get_zooms())
    expect = canon.affine @ np.append(lo * step, 1)
    check(np.allclose(A[:, 3], expect, atol=1e-3), f"packed origin {A[:3, 3]} = {expect[:3]}")
    pl = g["label"][()]
    img = g["image"][()]
    vox_src = np.prod(src.header.get_zooms())
    for k in range(1, 14):
        n = int((lab == k).sum())
        if n < 500:
            continue
        v_src = n * vox_src / 1e3
        v_pk = (pl == k).sum() * 1.5 * 1.5 * 2.0 / 1e3
        check(abs(v_pk - v_src) / v_src < 0.05, f"organ {k}: {v_pk:.1f} mL packed vs {v_src:.1f} mL source")
    liver = np.median(img[pl == 1])
    check(0 < liver < 200, f"liver median {liver:.0f} HU")
print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)

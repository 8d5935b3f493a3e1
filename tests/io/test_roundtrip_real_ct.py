"""Geometry round trip on the real scan (issue 5): its FLARE label volume, pushed through
`alice pack` (reorient, resample to 1.5 x 1.5 x 2 mm, body crop) and mapped back by the inference
output path, scores DSC >= 0.95 against the original for every organ of >= 500 voxels.
Skips when the scan is absent (ALICE_CT_DIR overrides ../shared/data/ct)."""
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CT = os.environ.get("ALICE_CT_DIR", os.path.join(ROOT, "..", "shared", "data", "ct"))
ALICE = os.environ.get("ALICE", os.path.join(ROOT, "bin", "alice"))
TOOL = os.path.join(ROOT, os.environ.get("BUILD", "build"), "tools", "label_roundtrip")
image = os.path.join(CT, "example_ct.nii.gz")
label = os.path.join(CT, "example_ct_label_flare13.nii.gz")
if not os.path.exists(image):
    print(f"skip: real scan not found at {CT} (set ALICE_CT_DIR)")
    sys.exit(77)
if not os.path.exists(TOOL):
    print(f"FAIL: {TOOL} not built (run make tests-build)")
    sys.exit(1)

with tempfile.TemporaryDirectory() as tmp:
    lst = os.path.join(tmp, "list.txt")
    with open(lst, "w") as f:
        f.write(f"{image} {label}\n")
    ds = os.path.join(tmp, "ds.h5")
    subprocess.run([ALICE, "pack", "--list", lst, "--out", ds, "num_folds=1"], check=True,
                   stdout=subprocess.DEVNULL)
    out = os.path.join(tmp, "back")
    os.makedirs(out)
    subprocess.run([TOOL, ds, out], check=True)
    (back_path,) = [os.path.join(out, p) for p in os.listdir(out)]
    orig, back = nib.load(label), nib.load(back_path)
    assert back.shape == orig.shape, (back.shape, orig.shape)
    assert np.allclose(back.affine, orig.affine, atol=1e-3), (back.affine, orig.affine)
    a = np.asarray(orig.dataobj).astype(int)
    b = np.asarray(back.dataobj).astype(int)
    worst = 1.0
    for k in range(1, 14):
        n = int((a == k).sum())
        if n < 500:
            continue
        dice = 2 * int(((a == k) & (b == k)).sum()) / (n + int((b == k).sum()))
        worst = min(worst, dice)
        print(f"organ {k:2d}: {n:6d} voxels, DSC after pack + map back {dice:.4f}")
        assert dice >= 0.95, f"organ {k}: DSC {dice:.4f} < 0.95"
    print(f"worst DSC {worst:.4f}")

"""Evaluation time per case: `alice eval` beside the numpy/scipy reference
(tests/reference/metrics_ref.py) on the same phantom-sized case (200x200x120, 13 ellipsoid
organs, anisotropic spacing, prediction = truth shifted / dilated). Prints seconds per case and
the ratio reference / alice; checks the two agree (1e-5) so the timing compares equal work."""
import csv
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import metrics_ref  # noqa: E402
import nibabel as nib  # noqa: E402
from scipy import ndimage  # noqa: E402

ALICE = os.environ.get("ALICE", "bin/alice")
SHAPE = (200, 200, 120)
SPACING = (0.8, 0.8, 2.5)


def phantom(rng):
    lab = np.zeros(SHAPE, np.uint8)
    x, y, z = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    for k in range(1, 14):
        c = rng.uniform([40, 40, 20], [160, 160, 100])
        r = rng.uniform([6, 6, 3], [40, 35, 22]) if k in (1, 11) else rng.uniform([4, 4, 2], [18, 16, 10])
        lab[((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1] = k
    return lab


def main():
    if not os.access(ALICE, os.X_OK):
        print(f"skip: {ALICE} not built")
        return 0
    rng = np.random.default_rng(0)
    gt = phantom(rng)
    pred = np.zeros_like(gt)
    for k in range(1, 14):
        m = np.roll(gt == k, 1, axis=k % 3)
        if k % 2:
            m = ndimage.binary_dilation(m)
        pred[m] = k
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("labels", "pred"):
            os.makedirs(os.path.join(tmp, d))
        aff = np.diag(list(SPACING) + [1.0])
        nib.save(nib.Nifti1Image(gt, aff), os.path.join(tmp, "labels", "case0.nii.gz"))
        nib.save(nib.Nifti1Image(pred, aff), os.path.join(tmp, "pred", "case0.nii.gz"))
        t0 = time.perf_counter()
        r = subprocess.run([ALICE, "eval", "--pred", f"{tmp}/pred", "--labels", f"{tmp}/labels", "--out",
                            f"{tmp}/res"], capture_output=True, text=True)
        t_alice = time.perf_counter() - t0
        if r.returncode:
            print(r.stdout, r.stderr)
            return 1
        t0 = time.perf_counter()
        img_gt = np.asarray(nib.load(os.path.join(tmp, "labels", "case0.nii.gz")).dataobj)
        img_pred = np.asarray(nib.load(os.path.join(tmp, "pred", "case0.nii.gz")).dataobj)
        ref = metrics_ref.case_scores(img_gt, img_pred, np.array(SPACING), "flare")
        t_ref = time.perf_counter() - t0
        with open(f"{tmp}/res.csv") as f:
            got = {row["organ"]: (float(row["dsc"]), float(row["nsd"])) for row in csv.DictReader(f)}
        worst = max(max(abs(got[o][0] - d), abs(got[o][1] - n)) for o, d, n in ref)
    import re
    m = re.search(r"\(([0-9.]+) s per case\)", r.stdout)
    t_case = float(m.group(1)) if m else float("nan")
    threads = os.environ.get("OMP_NUM_THREADS", "all cores")
    print(f"case {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}, 13 organs, spacing {SPACING} mm; OpenMP threads: {threads}")
    print(f"alice eval, per case (NIfTI read + scoring, its own log): {t_case:.2f} s")
    print(f"alice eval, whole command (adds MPI start-up, results):  {t_alice:.2f} s")
    print(f"python reference (numpy/scipy, NIfTI read + scoring):    {t_ref:.2f} s per case")
    print(f"ratio reference / alice per case: {t_ref / t_case:.1f}x; whole command: {t_ref / t_alice:.1f}x "
          f"(max |difference| {worst:.2g})")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`alice eval` against the independent numpy/scipy reference (metrics_ref.py) on random
multi-organ blob masks with anisotropic spacing, written as NIfTI with nibabel: every DSC and
NSD must agree to 1e-5, in results.csv and results.h5 alike (the CSV's truth_voxels equal to
numpy's counts, a case name with a comma and quotes read back whole by Python's csv; a case
with a rotated sform scored at the header's voxel size, as the FLARE script reads it, and one in
metres as the same file in mm); then with
eval_protocol=flare22 (aorta, IVC and esophagus on the truth's labelled slices, the reference
cropping the arrays as the FLARE 2022 script does), whose scores must differ from plain ones
for some of those organs and for no other; and on 2 MPI ranks (cases split, rank 0 listing
them), whose results.csv must equal the 1-rank one byte for byte."""
import csv
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import metrics_ref  # noqa: E402

try:
    import h5py
    import nibabel as nib
    from scipy import ndimage
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

ALICE = os.environ.get("ALICE", "bin/alice")
CASE_B = 'case,"B"'   # results.csv must quote it (RFC 4180)


def blobs(rng, shape, organs, absent=()):
    lab = np.zeros(shape, np.uint8)
    for k in organs:
        if k in absent:
            continue
        field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
        lab[field > np.quantile(field, 0.93)] = k
    return lab


def perturb(rng, lab, organs):
    pred = lab.copy()
    for k in organs:
        m = lab == k
        op = rng.integers(4)
        if op == 0:
            m = ndimage.binary_dilation(m, iterations=1)
        elif op == 1:
            m = ndimage.binary_erosion(m, iterations=1)
        elif op == 2:
            m = np.roll(m, int(rng.integers(1, 3)), axis=int(rng.integers(3)))
        pred[pred == k] = 0
        pred[m] = k
    flip = rng.random(lab.shape) < 0.01
    pred[flip] = rng.integers(0, 14, size=int(flip.sum()))
    return pred


def main():
    if not os.access(ALICE, os.X_OK):
        print(f"{ALICE} is not built (make)")
        return 1
    rng = np.random.default_rng(7)
    organs = list(range(1, 14))
    # caseD: an sform rotated 20 degrees about z with 1.5 mm voxels, so two voxels are exactly a
    # 3 mm organ's tolerance; the affine's float entries give columns of 1.5000001 mm, and NSD
    # must still take the header's 1.5 (pixdim, what the FLARE script reads: get_zooms())
    cases = [("caseA", (36, 30, 22), (0.75, 1.25, 2.5), (), 0.0),
             (CASE_B, (28, 34, 18), (0.8, 1.1, 3.0), (7,), 0.0),
             ("caseC", (30, 26, 20), (1.5, 0.6, 2.0), (9,), 0.0),
             ("caseD", (30, 28, 24), (1.5, 1.5, 1.5), (), 20.0),
             ("caseE", (26, 30, 22), (1.5, 1.5, 1.5), (), 0.0)]
    # caseE: the same voxels in a file whose unit is the metre (pixdim 0.0015 as a float is
    # 1.500000013 mm): scored as the file written in mm would be, at 1.5 mm
    in_metres = {"caseE"}
    with tempfile.TemporaryDirectory() as tmp:
        ldir, pdir = os.path.join(tmp, "labels"), os.path.join(tmp, "pred")
        os.makedirs(ldir)
        os.makedirs(pdir)
        ref = {"plain": {}, "flare22": {}}
        truth_voxels = {}
        for name, shape, spacing, absent, degrees in cases:
            gt = blobs(rng, shape, organs, absent)
            pred = perturb(rng, gt, organs)
            for k in absent:
                pred[pred == k] = 0      # organ absent from both: scores (1, 1)
            if name == "caseC":
                pred[pred == 4] = 0      # organ present in truth, missing in prediction
                gt[gt == 5] = 0          # aorta: a truth one slice thick, which flare22
                gt[8:14, 8:14, 10] = 5   # cannot score (NaN), plain scores against pred's
            t = np.radians(degrees)
            rotation = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0],
                                 [0.0, 0.0, 1.0]])
            affine = np.eye(4)
            affine[:3, :3] = rotation @ np.diag(spacing)
            affine[:3, 3] = [-10.0, 5.0, 30.0]
            for data, folder in ((gt, ldir), (pred, pdir)):
                img = nib.Nifti1Image(data, affine)
                if name in in_metres:
                    img = nib.Nifti1Image(data, np.diag([1e-3, 1e-3, 1e-3, 1.0]) @ affine)
                    img.header.set_xyzt_units(xyz="meter")
                nib.save(img, os.path.join(folder, name + ".nii.gz"))
            # the spacing as the FLARE 2022 script reads it: the header's voxel size
            sp = np.array(nib.load(os.path.join(ldir, name + ".nii.gz")).header.get_zooms()[:3],
                          dtype=np.float64)
            if name in in_metres:
                sp = np.array(spacing)
            for protocol in ref:
                ref[protocol][name] = {o: (d, n) for o, d, n in
                                       metrics_ref.case_scores(gt, pred, sp, "flare", protocol)}
            truth_voxels[name] = {o: int((gt == lid).sum())
                                  for lid, o, _ in metrics_ref.LABEL_SETS["flare"]}
        # a truth case without a prediction: warned about and left out
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), os.path.join(ldir, "orphan.nii.gz"))
        for protocol in ref:
            if not scored_as_reference(tmp, ldir, pdir, protocol, ref[protocol], truth_voxels):
                return 1
        # two ranks split the cases (rank 0 lists them) and give the same table
        out2 = os.path.join(tmp, "results_2ranks")
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        r = subprocess.run(["mpirun", "-np", "2", "--oversubscribe", ALICE, "eval", "--pred", pdir,
                            "--labels", ldir, "--out", out2, "--checkpoint", "runs/x/ckpt_10.h5",
                            "label_set=flare", "eval_protocol=plain"],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0 or open(out2 + ".csv").read() != open(
                os.path.join(tmp, "results_plain.csv")).read():
            print("2 ranks: status", r.returncode, r.stderr[-2000:])
            print("alice eval on 2 ranks does not give the 1-rank table")
            return 1
        print("2 ranks: the same results table as 1 rank")
        p, f = ref["plain"], ref["flare22"]
        moved = {o for c in p for o in p[c] if p[c][o] != f[c][o]}
        print(f"flare22 moved the scores of: {sorted(moved)}")
        if not moved or not moved <= set(metrics_ref.LABELLED_SLICES):
            print("flare22 must change some labelled-slices organ's scores and nothing else")
            return 1
        return 0


def scored_as_reference(tmp, ldir, pdir, protocol, ref, truth_voxels):
    """alice eval under `protocol` against the reference's scores; True when they agree."""
    out = os.path.join(tmp, "results_" + protocol)
    r = subprocess.run([ALICE, "eval", "--pred", pdir, "--labels", ldir, "--out", out,
                        "--checkpoint", "runs/x/ckpt_10.h5", "label_set=flare",
                        "eval_protocol=" + protocol], capture_output=True, text=True)
    print(r.stdout[-3000:], r.stderr[-3000:])
    if r.returncode != 0:
        print("alice eval failed")
        return False
    if "orphan" not in r.stderr:
        print("missing prediction was not reported")
        return False
    def gap(c, r):   # NaN (flare22's unscoreable cell) must meet NaN
        if math.isnan(c) or math.isnan(r):
            return 0.0 if math.isnan(c) and math.isnan(r) else math.inf
        return abs(c - r)

    worst, rows = 0.0, 0
    with open(out + ".csv") as f:
        for row in csv.DictReader(f):
            if None in row or row["case"] not in ref:
                print(f"results.csv row read as {row}: a case name not quoted?")
                return False
            d, n = ref[row["case"]][row["organ"]]
            worst = max(worst, gap(float(row["dsc"]), d), gap(float(row["nsd"]), n))
            if max(gap(float(row["dsc"]), d), gap(float(row["nsd"]), n)) > 1e-5:
                print(f"  {row['case']} {row['organ']}: C {row['dsc']}, {row['nsd']}; "
                      f"reference {d:.9g}, {n:.9g}")
            if int(row["truth_voxels"]) != truth_voxels[row["case"]][row["organ"]]:
                print(f"results.csv truth_voxels {row['truth_voxels']} for {row['case']} "
                      f"{row['organ']}, numpy counts {truth_voxels[row['case']][row['organ']]}")
                return False
            rows += 1
    with h5py.File(out + ".h5", "r") as h:
        names = [s.decode() for s in h["case_names"][:]]
        organ_names = [s.decode() for s in h["organ_names"][:]]
        for i, c in enumerate(names):
            for j, o in enumerate(organ_names):
                d, n = ref[c][o]
                worst = max(worst, gap(float(h["dsc"][i, j]), d), gap(float(h["nsd"][i, j]), n))
        attr = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h.attrs.items()}
        ok_attrs = (attr["label_set"] == "flare" and attr["checkpoint"] == "runs/x/ckpt_10.h5"
                    and "label_set = flare" in attr["config"]
                    and f"eval_protocol = {protocol}" in attr["config"]
                    and list(h["tolerance_mm"][:3]) == [5, 3, 3])
    nsd_values = [v[1] for c in ref.values() for v in c.values() if not math.isnan(v[1])]
    print(f"{protocol}: rows {rows}, max |C - reference| = {worst:.3g}; reference NSD range "
          f"{min(nsd_values):.3f}..{max(nsd_values):.3f}")
    if rows != 5 * 13 or names != sorted(["caseA", CASE_B, "caseC", "caseD", "caseE"]) \
            or not ok_attrs:
        print("results files incomplete or attributes wrong")
        return False
    aorta_c = ref["caseC"]["aorta"]
    if (ref[CASE_B]["right_adrenal"] != (1.0, 1.0) or ref["caseC"]["pancreas"] != (0.0, 0.0)
            or math.isnan(aorta_c[0]) != (protocol == "flare22")):
        print("empty-mask conventions not exercised as intended")
        return False
    return worst <= 1e-5


if __name__ == "__main__":
    sys.exit(main())

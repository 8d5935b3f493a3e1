"""alice eval --data decides which grid each prediction is on by its shape AND its affine
(src/cli/cmd_eval.c on_grid). The case that shape alone got wrong: a source already at the
packing spacing whose body crop removes nothing (its body fills the volume) has the packed
grid's shape, yet another orientation (LPS here, packed RAS). Asserted, against hand-made
label maps (nibabel writes them; the truth of every check is known by construction):
  - a prediction on the source grid (the source label itself, LPS affine, as alice infer
    writes predictions) scores DSC = NSD = 1 for both organs (before the fix: refused,
    "different affines");
  - the same organs on the packed grid (the packed label with the data set's RAS affine)
    score 1 too;
  - a source-grid prediction missing organ 2 scores organ 1 at 1 and organ 2 at 0 (scored at
    the right places, not trivially);
  - a prediction of the packed shape whose affine matches neither grid is refused, naming
    the affine mismatch; one within alice pack's image/label tolerance (1% of the smallest
    voxel) is on the grid, one just beyond it is refused;
  - results.h5 records each organ's voxels in the truth (truth_voxels: 294 and 441, else 0)."""
import csv
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import nibabel as nib
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

ALICE = os.environ.get("ALICE", "bin/alice")
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(*args):
    return subprocess.run([ALICE, *args], capture_output=True, text=True)


def scores(stem):
    rows = list(csv.DictReader(open(stem + ".csv")))
    return {r["organ"]: (float(r["dsc"]), float(r["nsd"])) for r in rows}


def evaluate(tmp, name, label, affine):
    pred = os.path.join(tmp, name)
    os.makedirs(pred)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), os.path.join(pred, "lps.nii.gz"))
    stem = os.path.join(tmp, name + "_res")
    r = run("eval", "--pred", pred, "--data", os.path.join(tmp, "ds.h5"), "--out", stem)
    return r, stem


def main():
    if not os.access(ALICE, os.X_OK):
        print(f"skip: {ALICE} is not built")
        return 77
    with tempfile.TemporaryDirectory(prefix="alice_eval_grid_") as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "imagesTr"))
        os.makedirs(os.path.join(src, "labelsTr"))
        # LPS at the default packing spacing 1.5, 1.5, 2 mm; soft tissue everywhere, so the body
        # crop keeps the whole volume and the packed grid has the source's shape
        lps = np.diag([-1.5, -1.5, 2.0, 1.0])
        lps[:3, 3] = [30.0, 24.0, -10.0]
        image = np.full((20, 16, 12), 40, np.int16)
        label = np.zeros(image.shape, np.uint8)
        label[2:9, 3:10, 2:8] = 1      # liver (FLARE 1)
        label[11:18, 5:14, 4:11] = 2   # right kidney (FLARE 2)
        nib.save(nib.Nifti1Image(image, lps), os.path.join(src, "imagesTr", "lps_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, lps), os.path.join(src, "labelsTr", "lps.nii.gz"))
        r = run("pack", "--input", src, "--out", os.path.join(tmp, "ds.h5"))
        check(r.returncode == 0, f"pack {r.stderr[-300:]}")
        with h5py.File(os.path.join(tmp, "ds.h5"), "r") as f:
            g = f["cases/lps"]
            packed_label = np.asarray(g["label"])
            packed_affine = np.asarray(g.attrs["affine"])
        check(packed_label.shape == label.shape and packed_affine[0, 0] > 0,
              f"packed grid: shape {packed_label.shape} (the source's), RAS "
              f"(affine[0][0] {packed_affine[0, 0]})")

        def expect_scores(name, pred, affine, liver, kidney, what):
            r, stem = evaluate(tmp, name, pred, affine)
            check(r.returncode == 0, f"{what}: accepted {r.stderr[-300:]}")
            if r.returncode == 0:
                s = scores(stem)
                check(s["liver"] == liver and s["right_kidney"] == kidney,
                      f"{what}: liver {s['liver']} ({liver}), right kidney "
                      f"{s['right_kidney']} ({kidney})")

        expect_scores("source_grid", label, lps, (1.0, 1.0), (1.0, 1.0), "source grid")
        # results.h5's truth_voxels: each organ's voxels in the truth, 0 for the other 11
        with h5py.File(os.path.join(tmp, "source_grid_res.h5"), "r") as f:
            organs = [n.decode() for n in f["organ_names"][()]]
            voxels = dict(zip(organs, f["truth_voxels"][0]))
        check(voxels["liver"] == 7 * 7 * 6 and voxels["right_kidney"] == 7 * 9 * 7 and
              sum(voxels.values()) == 7 * 7 * 6 + 7 * 9 * 7,
              f"truth_voxels: liver {voxels['liver']} (294), right kidney "
              f"{voxels['right_kidney']} (441), the rest 0")
        expect_scores("packed_grid", packed_label, packed_affine, (1.0, 1.0), (1.0, 1.0),
                      "packed grid")
        expect_scores("source_partial", np.where(label == 2, 0, label), lps, (1.0, 1.0),
                      (0.0, 0.0), "source grid, organ 2 missing")

        # alice pack accepts a label whose origin is within 1% of the smallest voxel (1.5 mm)
        # of its image's; a prediction written on the image's grid is then that far from its
        # truth, and eval scores it (it had refused anything beyond 1e-3 mm)
        near = lps.copy()
        near[2, 3] += 0.012
        expect_scores("near_grid", label, near, (1.0, 1.0), (1.0, 1.0),
                      "source grid within pack's tolerance (0.012 mm off)")
        beyond = lps.copy()
        beyond[2, 3] += 0.018
        r, _ = evaluate(tmp, "beyond_grid", label, beyond)
        check(r.returncode != 0 and "different affines (entry [2][3]" in r.stderr,
              f"0.018 mm off (beyond 1% of 1.5 mm) refused: {r.stderr.strip()[-200:]}")

        shifted = lps.copy()
        shifted[:3, 3] += [7.0, 0.0, 0.0]
        r, _ = evaluate(tmp, "other_grid", label, shifted)
        check(r.returncode != 0 and "different affines" in r.stderr,
              f"a prediction on neither grid refused: {r.stderr.strip()[-200:]}")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

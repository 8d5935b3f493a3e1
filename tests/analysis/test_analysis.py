"""analysis/*.py on fake results and run logs: the table numbers against means/stds computed
here, and the plots written as non-trivial PNGs; methods scored on different organs and a
file that is not a results file are refused with a message, not lined up or a traceback;
methods scored on different cases are named in a warning; --ignore-empty leaves out the cells
whose truth lacks the organ, and NaN cells (flare22's unscoreable ones) are always left out
(hand-computed means)."""
import os
import subprocess
import sys
import tempfile

import numpy as np

try:
    import h5py
    import matplotlib  # noqa: F401
    import nibabel as nib
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANALYSIS = os.path.join(ROOT, "analysis")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_fixture import ORGANS, write_results  # noqa: E402


def run(args):
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=ANALYSIS)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"{args[0]} failed")
    return r.stdout


def png_ok(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def main():
    rng = np.random.default_rng(3)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        a = rng.uniform(0.6, 0.95, (5, 3)), rng.uniform(0.6, 0.95, (5, 3))
        folds = [(rng.uniform(0.5, 0.9, (4, 3)), rng.uniform(0.5, 0.9, (4, 3))) for _ in range(2)]
        write_results(os.path.join(tmp, "a.h5"), *a)
        for k, f in enumerate(folds):
            write_results(os.path.join(tmp, f"b{k}.h5"), *f)
        args = [f"alice={tmp}/a.h5", f"scratch={tmp}/b0.h5", f"scratch={tmp}/b1.h5"]
        out = run(["tables.py", "--format", "both"] + args)
        print(out)
        # alice: one file -> mean/std across cases of the organ-averaged scores
        case_means = a[0].mean(1)
        want = f"| alice | {100 * case_means.mean():.2f} ± {100 * case_means.std():.2f}"
        if want not in out:
            failures.append(f"missing '{want}'")
        # scratch: two folds -> mean/std across the fold means
        fold_means = np.array([f[1].mean() for f in folds])
        want = f"{100 * fold_means.mean():.2f} ± {100 * fold_means.std():.2f} | 2 folds"
        if want not in out:
            failures.append(f"missing '{want}'")
        # per organ: spleen DSC of alice across cases
        want = f"| spleen | {100 * a[0][:, 1].mean():.2f} ± {100 * a[0][:, 1].std():.2f}"
        if want not in out:
            failures.append(f"missing '{want}'")
        per_fold = np.array([f[0][:, 2].mean() for f in folds])
        want = f"{100 * per_fold.mean():.2f} $\\pm$ {100 * per_fold.std():.2f}"
        if "\\begin{tabular}" not in out or want not in out:
            failures.append(f"LaTeX table missing or without '{want}'")

        # methods scored on different organs (another label set, a subset): refused, not
        # lined up by position; a file that is not a results file: refused naming it
        write_results(os.path.join(tmp, "other.h5"), *a, organs=["spleen", "liver", "pancreas"])
        for script in (["tables.py"], ["plot_organs.py", "--out", os.path.join(tmp, "x.png")]):
            r = subprocess.run([sys.executable] + script
                               + [f"alice={tmp}/a.h5", f"btcv={tmp}/other.h5"],
                               capture_output=True, text=True, cwd=ANALYSIS)
            if r.returncode == 0 or "scored different organs" not in r.stderr:
                failures.append(f"{script[0]}: different organ lists not refused: "
                                f"{r.stderr[-200:]}")
        # methods scored on different cases (alice: case0-4, scratch's folds: case0-3): a
        # warning naming the case only one of them has; the same cases: none
        for pair, warned in (([f"alice={tmp}/a.h5", f"scratch={tmp}/b0.h5"], True),
                             ([f"one={tmp}/b0.h5", f"two={tmp}/b1.h5"], False)):
            r = subprocess.run([sys.executable, "tables.py", "--format", "md"] + pair,
                               capture_output=True, text=True, cwd=ANALYSIS)
            said = "scored on different cases" in r.stderr and "only in alice: case4" in r.stderr
            if r.returncode != 0 or said != warned or (not warned and r.stderr):
                failures.append(f"tables.py case-set warning {'missing' if warned else 'spurious'}"
                                f": {r.stderr[-300:]}")
        # --ignore-empty: cells whose truth lacks the organ left out of every mean (MONAI's
        # ignore_empty); hand-computed here on a 3-case table with two absent organs
        d = np.array([[0.9, 1.0, 0.8], [0.7, 0.6, 0.0], [0.5, 0.4, 0.3]])
        v = np.array([[100, 0, 50], [80, 60, 0], [70, 40, 30]], float)
        write_results(os.path.join(tmp, "empty.h5"), d, d, truth_voxels=v)
        out = run(["tables.py", "--format", "md", "--ignore-empty", f"m={tmp}/empty.h5"])
        spleen = np.array([0.6, 0.4])          # case 0's spleen (absent, scored 1) left out
        case_means = np.array([(0.9 + 0.8) / 2, (0.7 + 0.6) / 2, (0.5 + 0.4 + 0.3) / 3])
        # the overall mean: over organs of the organ means (0.7, 0.5, 0.55), as alice eval
        # prints it and as for folds; its spread: across cases of their organ-averaged scores
        organ_means = np.array([0.7, 0.5, 0.55])
        for want in (f"| spleen | {100 * spleen.mean():.2f} ± {100 * spleen.std():.2f}",
                     f"| m | {100 * organ_means.mean():.2f} ± {100 * case_means.std():.2f}"):
            if want not in out:
                failures.append(f"--ignore-empty: missing '{want}'")
        plain = run(["tables.py", "--format", "md", f"m={tmp}/empty.h5"])
        want = f"| spleen | {100 * d[:, 1].mean():.2f} ± {100 * d[:, 1].std():.2f}"
        if want not in plain:
            failures.append(f"without --ignore-empty: missing '{want}'")
        # NaN cells (flare22's one-slice truth: the script's 0/0) left out of every mean, with
        # or without --ignore-empty; the same NaN in a fold's file: that fold's organ mean only
        n = d.copy()
        n[2, 0] = np.nan
        write_results(os.path.join(tmp, "nan.h5"), n, n, truth_voxels=v)
        liver = np.array([0.9, 0.7])
        organ_means = np.array([liver.mean(), d[:, 1].mean(), d[:, 2].mean()])
        case_means = np.array([d[0].mean(), d[1].mean(), (0.4 + 0.3) / 2])
        out = run(["tables.py", "--format", "md", f"m={tmp}/nan.h5"])
        for want in (f"| liver | {100 * liver.mean():.2f} ± {100 * liver.std():.2f}",
                     f"| m | {100 * organ_means.mean():.2f} ± {100 * case_means.std():.2f}"):
            if want not in out or "nan" in out:
                failures.append(f"NaN cell: missing '{want}' (or a nan printed)")
        out = run(["tables.py", "--format", "md", f"f={tmp}/nan.h5", f"f={tmp}/empty.h5"])
        liver_folds = np.array([liver.mean(), d[:, 0].mean()])
        want = f"| liver | {100 * liver_folds.mean():.2f} ± {100 * liver_folds.std():.2f}"
        if want not in out:
            failures.append(f"NaN cell in a fold: missing '{want}'")
        run(["plot_organs.py", "--out", os.path.join(tmp, "nan.png"), f"m={tmp}/nan.h5"])
        r = subprocess.run([sys.executable, "tables.py", "--ignore-empty", f"x={tmp}/a.h5"],
                           capture_output=True, text=True, cwd=ANALYSIS)
        if r.returncode == 0 or "no truth_voxels" not in r.stderr:
            failures.append(f"--ignore-empty on a file without truth_voxels: {r.stderr[-200:]}")
        open(os.path.join(tmp, "junk.h5"), "w").write("not hdf5")
        r = subprocess.run([sys.executable, "tables.py", f"x={tmp}/junk.h5"], capture_output=True,
                           text=True, cwd=ANALYSIS)
        if r.returncode == 0 or "junk.h5: cannot read it as HDF5" not in r.stderr or "Traceback" in r.stderr:
            failures.append(f"tables.py on a non-HDF5 file: {r.stderr[-200:]}")

        organs_png = os.path.join(tmp, "organs.png")
        run(["plot_organs.py", "--out", organs_png] + args)
        if not png_ok(organs_png):
            failures.append("organ bars PNG missing or trivial")

        pre, fine = os.path.join(tmp, "pre"), os.path.join(tmp, "fine")
        os.makedirs(pre)
        os.makedirs(fine)
        with open(os.path.join(pre, "metrics.csv"), "w") as f:
            f.write("step,loss,l_r,l_dv,l_st,lr,grad_norm,ms_per_step,samples_per_s\n")
            for s in range(1, 31):
                f.write(f"{s},{3 / s + 1},{1 / s},,{2 / s + 1},1e-4,1.0,50,40\n")   # no l_dv term
        with open(os.path.join(fine, "metrics.csv"), "w") as f:
            f.write("step,loss,ce,dice,lr,grad_norm,ms_per_step,samples_per_s\n")
            for s in range(1, 31):
                f.write(f"{s},{2 / s},{1 / s},{1 / s},1e-4,1.0,80,10\n")
        with open(os.path.join(fine, "val.csv"), "w") as f:
            f.write("step,mean_dice\n10,0.3\n20,0.5\n30,0.6\n")
        empty = os.path.join(tmp, "empty")
        os.makedirs(empty)
        with open(os.path.join(empty, "metrics.csv"), "w") as f:
            f.write("step,loss,l_r,l_dv,l_st,lr,grad_norm,ms_per_step,samples_per_s\n")
        r = subprocess.run([sys.executable, "plot_losses.py", "--out", os.path.join(tmp, "e.png"), empty],
                           capture_output=True, text=True, cwd=ANALYSIS)
        if r.returncode == 0 or "no logged step yet" not in r.stderr:
            failures.append(f"plot_losses.py on a header-only metrics.csv: {r.returncode} {r.stderr[-200:]}")
        loss_png = os.path.join(tmp, "losses.png")
        run(["plot_losses.py", "--out", loss_png, pre, fine])
        if not png_ok(loss_png):
            failures.append("loss curves PNG missing or trivial")

        shape = (48, 40, 12)
        image = rng.normal(40, 30, shape).astype(np.int16)
        truth = np.zeros(shape, np.uint8)
        truth[10:30, 8:25, 2:9] = 1
        truth[32:44, 20:35, 4:10] = 3
        pred = np.roll(truth, 2, axis=0)
        for arr, name in ((image, "img"), (truth, "truth"), (pred, "pred")):
            nib.save(nib.Nifti1Image(arr, np.diag([0.8, 0.8, 2.5, 1])), os.path.join(tmp, name + ".nii.gz"))
        ov = os.path.join(tmp, "overlay.png")
        run(["plot_overlay.py", "--image", f"{tmp}/img.nii.gz", "--truth", f"{tmp}/truth.nii.gz",
             "--pred", f"{tmp}/pred.nii.gz", "--out", ov, "--slices", "2"])
        if not png_ok(ov):
            failures.append("overlay PNG missing or trivial")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

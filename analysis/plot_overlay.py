#!/usr/bin/env python3
"""Slice overlays of a prediction against the ground truth on the CT image.

usage: plot_overlay.py --image ct.nii.gz --truth label.nii.gz --pred pred.nii.gz --out overlay.png
                       [--slices 3] [--window -125 225]

Axial slices (third voxel axis) with the most labelled voxels in truth and prediction together
are shown (a prediction's false positives count too); each row: image, truth overlay,
prediction overlay. All three files must share one grid. --slices: a positive count (fewer
when the volume has fewer slices). --out: .png, .pdf or .svg (the format is taken from the
extension), in an existing folder; written atomically (analysis/outputs.py)."""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from outputs import IMAGE_FORMATS, check_out, save_figure  # noqa: E402


def load(path, what):
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises several types
        raise SystemExit(f"{path}: cannot read the {what} ({e})")
    return np.asarray(img.dataobj), img.affine


def positive_int(text):
    """argparse type: --slices 0 would plot no row (and subplots(0, 3) raise a traceback)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive whole number")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--out", required=True, help="overlay.png, .pdf or .svg")
    ap.add_argument("--slices", type=positive_int, default=3, help="slices shown (rows)")
    ap.add_argument("--window", type=float, nargs=2, default=(-125, 225))
    a = ap.parse_args(argv)
    fmt = check_out(a.out, IMAGE_FORMATS)
    image, aff = load(a.image, "image")
    truth, taff = load(a.truth, "ground truth")
    pred, paff = load(a.pred, "prediction")
    for arr, af, p in ((truth, taff, a.truth), (pred, paff, a.pred)):
        if arr.shape != image.shape or not np.allclose(af, aff, atol=1e-3):
            raise SystemExit(f"{p}: grid {arr.shape} differs from the image {a.image} "
                             f"{image.shape}; "
                             "overlays need the same grid and affine")
    truth = truth.astype(np.int32)
    pred = pred.astype(np.int32)
    counts = (truth > 0).sum((0, 1)) + (pred > 0).sum((0, 1))
    zs = sorted(np.argsort(counts)[::-1][:a.slices])
    lo, hi = a.window
    n_labels = max(int(truth.max()), int(pred.max()), 1)
    cmap = plt.get_cmap("tab20", n_labels + 1)
    fig, axes = plt.subplots(len(zs), 3, figsize=(10, 3.4 * len(zs)), squeeze=False)
    for row, z in enumerate(zs):
        sl = np.clip((image[:, :, z].astype(float) - lo) / (hi - lo), 0, 1).T   # rows = y, cols = x
        for col, (lab, title) in enumerate(((None, "image"), (truth, "ground truth"),
                                            (pred, "prediction"))):
            ax = axes[row][col]
            ax.imshow(sl, cmap="gray", origin="lower")
            if lab is not None:
                m = np.ma.masked_equal(lab[:, :, z].T, 0)
                ax.imshow(m, cmap=cmap, vmin=0, vmax=n_labels, alpha=0.45, origin="lower",
                          interpolation="nearest")
            ax.set_title(f"{title}, z = {z}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    save_figure(fig, a.out, fmt, dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Loss curves from run directories (each has metrics.csv; fine-tuning runs also val.csv).

usage: plot_losses.py --out losses.png RUN_DIR [RUN_DIR ...]

--out: .png, .pdf or .svg (the format is taken from the extension), in an existing folder;
written atomically (analysis/outputs.py).

metrics.csv columns: pre-training step,loss,l_r,l_dv,l_st,lr,...; fine-tuning
step,loss,ce,dice,lr,...
Empty cells (a term the method does not have) are skipped. val.csv: step,mean_dice."""
import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from outputs import IMAGE_FORMATS, check_out, plot_label, save_figure  # noqa: E402

LOSS_COLUMNS = ("loss", "l_r", "l_dv", "l_st", "ce", "dice")


def read_csv(path):
    cols = {}
    with open(path) as f:
        reader = csv.DictReader(f)
        if reader.fieldnames and "step" not in reader.fieldnames:
            raise SystemExit(f"{path}: no step column, so not a metrics.csv or val.csv that "
                             f"alice pretrain/finetune writes; give their run directories")
        for row in reader:
            for k, v in row.items():
                if k is None or v is None or v.strip() == "":
                    continue
                try:
                    cols.setdefault(k, []).append((float(row["step"]), float(v)))
                except ValueError:
                    raise SystemExit(f"{path}: column {k} holds '{v}', not a number")
    return cols


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True, help="losses.png, .pdf or .svg")
    a = ap.parse_args(argv)
    fmt = check_out(a.out, IMAGE_FORMATS)
    has_val = any(os.path.exists(os.path.join(r, "val.csv")) for r in a.runs)
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(12 if has_val else 7, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    for run in a.runs:
        path = os.path.join(run, "metrics.csv")
        if not os.path.exists(path):
            raise SystemExit(f"{run}: no metrics.csv; give run directories written by alice "
                             f"pretrain/finetune")
        cols = read_csv(path)
        if not any(c in cols for c in LOSS_COLUMNS):
            raise SystemExit(f"{path}: no logged step yet (header only or empty); plot it once "
                             f"the run has written rows")
        name = os.path.basename(os.path.normpath(run))
        for c in LOSS_COLUMNS:
            if c in cols:
                steps, vals = zip(*cols[c])
                ax.plot(steps, vals, label=plot_label(f"{name}: {c}"), lw=1.5 if c == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training losses")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if has_val:
        vax = axes[0][1]
        for run in a.runs:
            path = os.path.join(run, "val.csv")
            if os.path.exists(path):
                cols = read_csv(path)
                if "mean_dice" in cols:
                    steps, vals = zip(*cols["mean_dice"])
                    vax.plot(steps, vals, marker="o",
                             label=plot_label(os.path.basename(os.path.normpath(run))))
        vax.set_xlabel("step")
        vax.set_ylabel("validation mean Dice")
        vax.legend(fontsize=7)
        vax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, a.out, fmt, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

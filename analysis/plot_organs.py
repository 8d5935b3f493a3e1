#!/usr/bin/env python3
"""Per-organ DSC and NSD bars (mean +- std across cases, or folds) for several runs.

usage: plot_organs.py --out organs.png [--ignore-empty] NAME=results.h5 [NAME=results.h5 ...]

--out: .png, .pdf or .svg (the format is taken from the extension), in an existing folder;
written atomically (analysis/outputs.py). --ignore-empty as tables.py's (cells whose truth
lacks the organ left out)."""
import argparse
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from outputs import IMAGE_FORMATS, check_out, plot_label, save_figure  # noqa: E402
from results_io import parse_runs  # noqa: E402
from tables import check_same_organs, summarise  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True, help="organs.png, .pdf or .svg")
    ap.add_argument("--ignore-empty", action="store_true",
                    help="leave out cells whose truth lacks the organ (MONAI/BTCV convention)")
    a = ap.parse_args(argv)
    fmt = check_out(a.out, IMAGE_FORMATS)
    summ = {n: summarise(p, a.ignore_empty, n) for n, p in parse_runs(a.runs).items()}
    organs = check_same_organs(summ)
    x = np.arange(len(organs))
    width = 0.8 / len(summ)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.8 * len(organs)), 7), sharex=True)
    for ax, metric in zip(axes, ("dsc", "nsd")):
        for k, (name, s) in enumerate(summ.items()):
            spread = s[metric][1]
            # One scored case (or fold) has no spread: every std NaN, which matplotlib's
            # error bars cannot take (StopIteration); such bars are drawn without them.
            yerr = None if np.all(np.isnan(spread)) else spread
            ax.bar(x + (k - (len(summ) - 1) / 2) * width, s[metric][0], width,
                   yerr=yerr, capsize=2, label=plot_label(name))
        ax.set_ylabel(metric.upper())
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(4, len(summ)))
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(organs, rotation=45, ha="right")
    fig.tight_layout()
    save_figure(fig, a.out, fmt, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

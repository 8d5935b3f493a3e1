#!/usr/bin/env python3
"""Table-1-style comparison of segmentation results (markdown and LaTeX).

usage: tables.py [--format md|latex|both] [--ignore-empty] NAME=results.h5 [NAME=results.h5 ...]

One results.h5 per method gives mean +- std across cases; several files under one name (folds)
give the mean over folds of the per-fold means, +- the std across folds. Printed: the mean DSC
and NSD over organs per method (the mean of its per-organ means, as alice eval prints it; +- the
std across cases of each case's organ-averaged score, or across folds of each fold's), then DSC
and NSD per organ. NaN cells (eval_protocol = flare22: a truth one slice thick leaves nothing
to score, the FLARE script's 0/0) are left out of every mean, as FLARE's tables leave them.
Methods scored on different cases (a fold's union of cases against another's) are named in a
warning on stderr.

--ignore-empty: a (case, organ) whose truth lacks the organ is left out of every mean
(MONAI's DiceMetric(ignore_empty=True), the convention of BTCV tables; without it such a cell
counts as alice eval scored it: 1 when the prediction is empty too, 0 when not). Needs the
results' truth_voxels (alice eval records them)."""
import argparse
import sys

import numpy as np

from results_io import load_results, parse_runs


def scored_cells(r, path, ignore_empty):
    """The [cases, organs] mask of the cells the means take: those scored (not NaN) and, with
    ignore_empty, whose truth holds the organ."""
    scored = ~(np.isnan(r["dsc"]) | np.isnan(r["nsd"]))
    if not ignore_empty:
        return scored
    if r["truth_voxels"] is None:
        raise SystemExit(f"{path}: no truth_voxels (written by an older alice eval), which "
                         f"--ignore-empty needs; run alice eval again")
    return scored & (r["truth_voxels"] > 0)


def masked_mean(m, keep, axis):
    """Mean of m over axis, taking only the kept cells (NaN where none is kept)."""
    n = keep.sum(axis)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.where(keep, m, 0.0).sum(axis) / np.maximum(n, 1), np.nan)


def summarise(paths, ignore_empty=False):
    """Per method: organ names, per-organ (mean, std) of DSC and NSD, overall (mean, std)."""
    res = [load_results(p) for p in paths]
    for r, p in zip(res, paths):
        warn_skipped_cases(r, p)
    keeps = [scored_cells(r, p, ignore_empty) for r, p in zip(res, paths)]
    organs = res[0]["organs"]
    for r, p in zip(res, paths):
        if r["organs"] != organs:
            raise SystemExit(f"{p}: organs {r['organs']} differ from {paths[0]}; use one label set per table")
    out = {"organs": organs}
    for metric in ("dsc", "nsd"):
        if len(res) == 1:
            m, keep = res[0][metric], keeps[0]       # [cases, organs]
            organ_means = masked_mean(m, keep, 0)
            spread = np.sqrt(masked_mean((m - organ_means) ** 2, keep, 0))
            per_organ = (organ_means, spread)
            units = masked_mean(m, keep, 1)          # organ-averaged score of each case
        else:
            folds = np.stack([masked_mean(r[metric], k, 0) for r, k in zip(res, keeps)])
            scored = ~np.isnan(folds)                # [folds, organs]
            organ_means = masked_mean(folds, scored, 0)
            per_organ = (organ_means,
                         np.sqrt(masked_mean((folds - organ_means) ** 2, scored, 0)))
            units = masked_mean(folds, scored, 1)    # organ-averaged score of each fold
        # the same mean for one file and for folds: over organs of the per-organ means
        units = units[~np.isnan(units)]
        overall = (masked_mean(per_organ[0], ~np.isnan(per_organ[0]), 0),
                   units.std() if units.size else np.nan)
        out[metric] = per_organ
        out[metric + "_overall"] = overall
    out["spread"] = "cases" if len(res) == 1 else f"{len(res)} folds"
    out["cases"] = sorted({c for r in res for c in r["cases"]})
    return out


def warn_skipped_cases(res, path):
    """Cases of the truth that had no prediction (alice eval skips them, results.h5 lists them
    in its skipped_cases attribute): not in this table's means, which every method sharing the
    gap would not show by itself."""
    skipped = [c for c in res["attrs"].get("skipped_cases", "").split("\n") if c]
    if skipped:
        more = " ..." if len(skipped) > 5 else ""
        print(f"tables.py: warning: {path}: {len(skipped)} case(s) of the truth had no prediction "
              f"and are not in its means ({', '.join(skipped[:5])}{more})", file=sys.stderr)


def warn_different_cases(summ):
    """alice eval skips a case without a prediction (with a warning), so two methods' means can
    cover different cases without anything failing: said on stderr, the table still printed."""
    names = list(summ)
    first = set(summ[names[0]]["cases"])
    for n in names[1:]:
        other = set(summ[n]["cases"])
        if other != first:
            only_a, only_b = sorted(first - other), sorted(other - first)
            print(f"tables.py: warning: methods {names[0]} and {n} were scored on different "
                  f"cases ({len(first)} and {len(other)}; only in {names[0]}: "
                  f"{', '.join(only_a[:5]) or '-'}{' ...' if len(only_a) > 5 else ''}; only in "
                  f"{n}: {', '.join(only_b[:5]) or '-'}{' ...' if len(only_b) > 5 else ''}): "
                  f"their means are not comparable; score every method on the same cases",
                  file=sys.stderr)


def check_same_organs(summ):
    """Every method's organ list must be the first one's: a table or plot lines rows up by
    position, so another label set or a subset of organs would put one organ's scores under
    another's name."""
    names = list(summ)
    first = summ[names[0]]["organs"]
    for n in names[1:]:
        if summ[n]["organs"] != first:
            raise SystemExit(f"methods {names[0]} and {n} scored different organs ({first} vs "
                             f"{summ[n]['organs']}): evaluate them with the same label_set")
    return first


def fmt(mean, std, latex=False):
    return f"{100 * mean:.2f} $\\pm$ {100 * std:.2f}" if latex else f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown(summ):
    lines = ["| Method | DSC (%) | NSD (%) | std across |", "|---|---|---|---|"]
    for name, s in summ.items():
        lines.append(f"| {name} | {fmt(*s['dsc_overall'])} | {fmt(*s['nsd_overall'])} | {s['spread']} |")
    organs = check_same_organs(summ)
    head = "| Organ | " + " | ".join(f"{n} DSC | {n} NSD" for n in summ) + " |"
    lines += ["", head, "|---|" + "---|" * (2 * len(summ))]
    for j, o in enumerate(organs):
        cells = []
        for s in summ.values():
            cells += [fmt(s["dsc"][0][j], s["dsc"][1][j]), fmt(s["nsd"][0][j], s["nsd"][1][j])]
        lines.append(f"| {o} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex(summ):
    esc = lambda t: t.replace("_", "\\_")
    lines = ["\\begin{tabular}{lcc}", "\\toprule", "Method & DSC (\\%) & NSD (\\%) \\\\", "\\midrule"]
    for name, s in summ.items():
        lines.append(f"{esc(name)} & {fmt(*s['dsc_overall'], True)} & {fmt(*s['nsd_overall'], True)} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    organs = check_same_organs(summ)
    lines += ["\\begin{tabular}{l" + "cc" * len(summ) + "}", "\\toprule",
              "Organ & " + " & ".join(f"{esc(n)} DSC & {esc(n)} NSD" for n in summ) + " \\\\", "\\midrule"]
    for j, o in enumerate(organs):
        cells = []
        for s in summ.values():
            cells += [fmt(s["dsc"][0][j], s["dsc"][1][j], True), fmt(s["nsd"][0][j], s["nsd"][1][j], True)]
        lines.append(f"{esc(o)} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=path/to/results.h5 (repeat a NAME for folds)")
    ap.add_argument("--format", choices=["md", "latex", "both"], default="both")
    ap.add_argument("--ignore-empty", action="store_true",
                    help="leave out cells whose truth lacks the organ (MONAI/BTCV convention)")
    a = ap.parse_args(argv)
    summ = {name: summarise(paths, a.ignore_empty) for name, paths in parse_runs(a.runs).items()}
    warn_different_cases(summ)
    if a.format in ("md", "both"):
        print(markdown(summ))
    if a.format in ("latex", "both"):
        print()
        print(latex(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())

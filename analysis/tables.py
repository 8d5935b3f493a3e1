#!/usr/bin/env python3
"""Table-1-style comparison of segmentation results (markdown and LaTeX).

usage: tables.py [--format md|latex|both] NAME=results.h5 [NAME=results.h5 ...]

One results.h5 per method gives mean +- std across cases; several files under one name (folds)
give the mean over folds of the per-fold means, +- the std across folds. Printed: the mean DSC
and NSD over organs per method, then DSC and NSD per organ. Methods scored on different cases
(a fold's union of cases against another's) are named in a warning on stderr."""
import argparse
import sys

import numpy as np

from results_io import load_results, parse_runs


def summarise(paths):
    """Per method: organ names, per-organ (mean, std) of DSC and NSD, overall (mean, std)."""
    res = [load_results(p) for p in paths]
    organs = res[0]["organs"]
    for r, p in zip(res, paths):
        if r["organs"] != organs:
            raise SystemExit(f"{p}: organs {r['organs']} differ from {paths[0]}; use one label set per table")
    out = {"organs": organs}
    for metric in ("dsc", "nsd"):
        if len(res) == 1:
            m = res[0][metric]                       # [cases, organs]
            per_organ = (m.mean(0), m.std(0))
            case_means = m.mean(1)                   # organ-averaged score of each case
            overall = (case_means.mean(), case_means.std())
        else:
            folds = np.stack([r[metric].mean(0) for r in res])   # [folds, organs]
            per_organ = (folds.mean(0), folds.std(0))
            fold_means = folds.mean(1)
            overall = (fold_means.mean(), fold_means.std())
        out[metric] = per_organ
        out[metric + "_overall"] = overall
    out["spread"] = "cases" if len(res) == 1 else f"{len(res)} folds"
    out["cases"] = sorted({c for r in res for c in r["cases"]})
    return out


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
    a = ap.parse_args(argv)
    summ = {name: summarise(paths) for name, paths in parse_runs(a.runs).items()}
    warn_different_cases(summ)
    if a.format in ("md", "both"):
        print(markdown(summ))
    if a.format in ("latex", "both"):
        print()
        print(latex(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Table-1-style comparison of segmentation results (markdown and LaTeX).

usage: tables.py [--format md|latex|both] [--ignore-empty] NAME=results.h5 [NAME=results.h5 ...]

One results.h5 per method gives mean +- std across cases; several files under one name (folds)
give the mean over folds of the per-fold means, +- the std across folds. Printed: the mean DSC
and NSD over organs per method (the mean of its per-organ means, as alice eval prints it; +- the
std across cases of each case's organ-averaged score, or across folds of each fold's), then DSC
and NSD per organ. NaN cells (eval_protocol = flare22: a truth one slice thick leaves nothing
to score, the FLARE script's 0/0) are left out of every mean, as FLARE's tables leave them.
An organ without a single scored cell (every case lacks it under --ignore-empty, or every cell
is NaN) prints – (LaTeX --), not nan. Names are escaped: | in markdown; in LaTeX its specials
\\ % & # $ { } ~ ^ _ and | < > (which the default font encoding misprints).

Warnings on stderr (the table is still printed): methods scored on different cases (a fold's
union of cases against another's); one method's folds sharing cases (the same file given twice:
the std across folds is then not a spread over independent folds); methods, or one method's
folds, scored under different eval_protocol or label_set (read from each results.h5's config
attribute), whose means are not comparable; truth cases a results.h5 had no prediction for.

--ignore-empty: a (case, organ) whose truth lacks the organ is left out of every mean
(MONAI's DiceMetric(ignore_empty=True), the convention of BTCV tables; without it such a cell
counts as alice eval scored it: 1 when the prediction is empty too, 0 when not). Needs the
results' truth_voxels (alice eval records them)."""
import argparse
import os
import re
import sys

import numpy as np

from alice_config import parse_config_text

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


def masked_std(m, keep, axis, mean):
    """Population std of m over axis about mean, over the kept cells; NaN where fewer than two
    are kept: one value has no spread to measure, and 0.00 would read as a measured one."""
    spread = np.sqrt(masked_mean((m - mean) ** 2, keep, axis))
    return np.where(keep.sum(axis) >= 2, spread, np.nan)


def scoring(r, path):
    """{eval_protocol, label_set} a results file was scored under, from its config attribute
    (the resolved configuration alice eval ran with); None where the file does not say (no
    config attribute: not written by alice eval, whose files always carry one); "unknown",
    with a warning, where the attribute is there but does not parse (a damaged or edited file
    says nothing of its protocol, which must not pass for plain)."""
    text = r["attrs"].get("config")
    label_set = r["attrs"].get("label_set")
    if text is None:
        return {"eval_protocol": None, "label_set": label_set}
    try:
        cfg = parse_config_text(text)
    except ValueError as e:
        print(f"tables.py: warning: {path}: its config attribute does not parse ({e}), so its "
              f"eval_protocol is unknown; score the predictions again with alice eval",
              file=sys.stderr)
        return {"eval_protocol": "unknown", "label_set": label_set}
    # an alice eval from before eval_protocol existed scored every organ as plain does
    return {"eval_protocol": cfg.get("eval_protocol", "plain"),
            "label_set": cfg.get("label_set", r["attrs"].get("label_set"))}


def summarise(paths, ignore_empty=False, name=None):
    """Per method: organ names, per-organ (mean, std) of DSC and NSD, overall (mean, std).
    name (the method's, for warnings) defaults to the first path."""
    res = [load_results(p) for p in paths]
    for r, p in zip(res, paths):
        warn_skipped_cases(r, p)
    name = name or paths[0]
    scorings = [scoring(r, p) for r, p in zip(res, paths)]
    if len(res) > 1:
        warn_shared_fold_cases(name, res, paths)
        for key in ("eval_protocol", "label_set"):
            warn_different_scoring(key, [(p, s[key]) for p, s in zip(paths, scorings)],
                                   f"{name}: its folds were", "the mean over its folds mixes them")
    keeps = [scored_cells(r, p, ignore_empty) for r, p in zip(res, paths)]
    organs = res[0]["organs"]
    for r, p in zip(res, paths):
        if r["organs"] != organs:
            raise SystemExit(f"{p}: organs {r['organs']} differ from {paths[0]}; use one label "
                             f"set per table")
    out = {"organs": organs}
    for metric in ("dsc", "nsd"):
        if len(res) == 1:
            m, keep = res[0][metric], keeps[0]       # [cases, organs]
            organ_means = masked_mean(m, keep, 0)
            per_organ = (organ_means, masked_std(m, keep, 0, organ_means))
            units = masked_mean(m, keep, 1)          # organ-averaged score of each case
        else:
            folds = np.stack([masked_mean(r[metric], k, 0) for r, k in zip(res, keeps)])
            scored = ~np.isnan(folds)                # [folds, organs]
            organ_means = masked_mean(folds, scored, 0)
            per_organ = (organ_means, masked_std(folds, scored, 0, organ_means))
            units = masked_mean(folds, scored, 1)    # organ-averaged score of each fold
        # the same mean for one file and for folds: over organs of the per-organ means
        units = units[~np.isnan(units)]
        overall = (masked_mean(per_organ[0], ~np.isnan(per_organ[0]), 0),
                   units.std() if units.size >= 2 else np.nan)
        out[metric] = per_organ
        out[metric + "_overall"] = overall
    out["spread"] = "cases" if len(res) == 1 else f"{len(res)} folds"
    out["cases"] = sorted({c for r in res for c in r["cases"]})
    out["scoring"] = scorings
    return out


def _some(items, n=5):
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


def warn_shared_fold_cases(name, res, paths):
    """Folds are meant to hold disjoint cases: a case scored in two folds (the same file given
    twice, overlapping splits) makes the folds' means dependent, and the std across them (0.00
    for a repeated file) no spread over folds."""
    said = []
    for i in range(len(res)):
        for j in range(i + 1, len(res)):
            shared = sorted(set(res[i]["cases"]) & set(res[j]["cases"]))
            if not shared:
                continue
            if os.path.realpath(paths[i]) == os.path.realpath(paths[j]):
                said.append(f"{paths[i]} is given twice")
            else:
                said.append(f"{paths[i]} and {paths[j]} share {len(shared)} case(s) "
                            f"({_some(shared)})")
    if said:
        print(f"tables.py: warning: {name}: its folds share cases ({_some(said, 4)}): the std "
              f"across folds is not a spread over independent folds; give each fold's "
              f"results.h5 once, folds scored on disjoint cases", file=sys.stderr)


def warn_different_scoring(key, values, who, why):
    """values: (name, value of key) pairs, None where unknown. Means taken under another
    eval_protocol (flare22 crops the vessels to the truth's slices) or label_set (other organs
    under the same numbers) are not comparable; said on stderr, the table still printed."""
    known = [(n, v) for n, v in values if v is not None]
    if len({v for _, v in known}) > 1:
        print(f"tables.py: warning: {who} scored under different {key} ("
              + "; ".join(f"{n}: {v}" for n, v in known) + f"): {why}, and such means are not "
              f"comparable; score them all with one {key} (alice eval ... {key}=...)",
              file=sys.stderr)


def warn_methods_scoring(summ):
    """Across methods: the eval_protocol and label_set each was scored under (several values
    for a method whose folds differ, which summarise already warned about)."""
    for key in ("eval_protocol", "label_set"):
        values = []
        for n, s in summ.items():
            vs = sorted({sc[key] for sc in s["scoring"] if sc[key] is not None})
            values.append((n, "/".join(vs) if vs else None))
        warn_different_scoring(key, values, "methods were", "one table lines them up")


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
    """mean ± std in percent; an organ with no scored cell (NaN mean) is a dash, not nan."""
    dash, pm = ("--", " $\\pm$ ") if latex else ("–", " ± ")
    if np.isnan(mean):
        return dash
    return f"{100 * mean:.2f}{pm}" + (dash if np.isnan(std) else f"{100 * std:.2f}")


def md_escape(text):
    """A | in a cell would end it and shift the row's columns; a backslash before it (or at the
    end of a name, before the separator) would escape the | instead: both escaped."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


# | < > are no specials, but the default OT1 font encoding prints them as an em dash, ¡ and ¿
_LATEX_SPECIAL = {"\\": "\\textbackslash{}", "%": "\\%", "&": "\\&", "#": "\\#",
                  "$": "\\$", "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}",
                  "^": "\\textasciicircum{}", "_": "\\_", "|": "\\textbar{}",
                  "<": "\\textless{}", ">": "\\textgreater{}"}


def latex_escape(text):
    """Every LaTeX special character of a name, in one pass (so the braces an escape adds are
    not escaped again): an unescaped % would comment out the rest of the row, & add a column."""
    return re.sub(r"[\\%&#${}~^_|<>]", lambda m: _LATEX_SPECIAL[m.group()], text)


def markdown(summ):
    lines = ["| Method | DSC (%) | NSD (%) | std across |", "|---|---|---|---|"]
    for name, s in summ.items():
        lines.append(f"| {md_escape(name)} | {fmt(*s['dsc_overall'])} | {fmt(*s['nsd_overall'])} "
                     f"| {s['spread']} |")
    organs = check_same_organs(summ)
    head = "| Organ | " + " | ".join(f"{md_escape(n)} DSC | {md_escape(n)} NSD"
                                     for n in summ) + " |"
    lines += ["", head, "|---|" + "---|" * (2 * len(summ))]
    for j, o in enumerate(organs):
        cells = []
        for s in summ.values():
            cells += [fmt(s["dsc"][0][j], s["dsc"][1][j]), fmt(s["nsd"][0][j], s["nsd"][1][j])]
        lines.append(f"| {md_escape(o)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def latex(summ):
    esc = latex_escape
    lines = ["\\begin{tabular}{lcc}", "\\toprule", "Method & DSC (\\%) & NSD (\\%) \\\\",
             "\\midrule"]
    for name, s in summ.items():
        lines.append(f"{esc(name)} & {fmt(*s['dsc_overall'], True)} & "
                     f"{fmt(*s['nsd_overall'], True)} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    organs = check_same_organs(summ)
    lines += ["\\begin{tabular}{l" + "cc" * len(summ) + "}", "\\toprule",
              "Organ & " + " & ".join(f"{esc(n)} DSC & {esc(n)} NSD" for n in summ) + " \\\\",
              "\\midrule"]
    for j, o in enumerate(organs):
        cells = []
        for s in summ.values():
            cells += [fmt(s["dsc"][0][j], s["dsc"][1][j], True),
                      fmt(s["nsd"][0][j], s["nsd"][1][j], True)]
        lines.append(f"{esc(o)} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=path/to/results.h5 (repeat a NAME for folds)")
    ap.add_argument("--format", choices=["md", "latex", "both"], default="both")
    ap.add_argument("--ignore-empty", action="store_true",
                    help="leave out cells whose truth lacks the organ (MONAI/BTCV convention)")
    a = ap.parse_args(argv)
    summ = {name: summarise(paths, a.ignore_empty, name)
            for name, paths in parse_runs(a.runs).items()}
    warn_different_cases(summ)
    warn_methods_scoring(summ)
    if a.format in ("md", "both"):
        print(markdown(summ))
    if a.format in ("latex", "both"):
        print()
        print(latex(summ))
    return 0


if __name__ == "__main__":
    sys.exit(main())

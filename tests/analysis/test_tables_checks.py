"""analysis/tables.py on small results.h5 files written here (docs/FORMAT.md's layout; where
bin/alice is built, also two that alice eval wrote):
 - names escaped: a method named "MAE 75%" and one holding every LaTeX special give the LaTeX
   rows written out by hand here (\\% not a comment, \\& not a column), each row 3 columns when
   split on unescaped &; in markdown a | in a name is \\| and every row keeps its 4 columns;
 - an organ without a scored cell (--ignore-empty on an organ no case has; NaN in every fold)
   prints – (LaTeX --), never nan, while the other organs keep their numpy-computed means; an
   organ scored once (one fold, one case) has a – for its std, not ± 0.00;
 - one method's folds sharing cases warn on stderr naming the file given twice, or the two
   files and the shared cases, the table still printed; disjoint folds warn nothing;
 - methods, or one method's folds, scored under different eval_protocol or label_set (their
   config attribute) warn that their means are not comparable, naming each one's value; the same
   values (a commented-out line not counting) or a file without a config warn nothing; a
   config that does not parse is eval_protocol "unknown" (with a warning), not plain;
 - a dsc of strings (an edited file): a message naming the file and dataset, no traceback."""
import os
import re
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import h5py
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANALYSIS = os.path.join(ROOT, "analysis")
ALICE = os.environ.get("ALICE", os.path.join(ROOT, "bin", "alice"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_fixture import ORGANS, write_results  # noqa: E402
failures = []


def check(cond, what, detail=""):
    print(("ok: " if cond else "FAIL: ") + what + ("" if cond else f"\n    {detail}"))
    if not cond:
        failures.append(what)


def tables(*args):
    r = subprocess.run([sys.executable, "tables.py"] + list(args), capture_output=True,
                       text=True, cwd=ANALYSIS)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        failures.append(f"tables.py {' '.join(args)} exited {r.returncode}")
    return r.stdout, r.stderr


def pm(mean, std, latex=False):
    return f"{100 * mean:.2f}{' $' + chr(92) + 'pm$ ' if latex else ' ± '}{100 * std:.2f}"


rng = np.random.default_rng(5)
with tempfile.TemporaryDirectory() as tmp:
    # --- names: LaTeX specials and a markdown |
    d1, d2 = rng.uniform(0.5, 0.9, (4, 3)), rng.uniform(0.5, 0.9, (4, 3))
    write_results(f"{tmp}/m1.h5", d1)
    write_results(f"{tmp}/m2.h5", d2)
    odd = "A|B {x}_1 #2 & $3 ~4 ^5 \\6 <7>"
    out, err = tables(f"MAE 75%={tmp}/m1.h5", f"{odd}={tmp}/m2.h5")
    odd_tex = ("A\\textbar{}B \\{x\\}\\_1 \\#2 \\& \\$3 \\textasciitilde{}4 "
               "\\textasciicircum{}5 \\textbackslash{}6 \\textless{}7\\textgreater{}")
    want = [f"MAE 75\\% & {pm(d1.mean(0).mean(), d1.mean(1).std(), True)} & "
            f"{pm(d1.mean(0).mean(), d1.mean(1).std(), True)} \\\\",
            f"{odd_tex} & {pm(d2.mean(0).mean(), d2.mean(1).std(), True)} & "
            f"{pm(d2.mean(0).mean(), d2.mean(1).std(), True)} \\\\",
            f"Organ & MAE 75\\% DSC & MAE 75\\% NSD & {odd_tex} DSC & {odd_tex} NSD \\\\",
            f"left\\_kidney & {pm(d1[:, 2].mean(), d1[:, 2].std(), True)} & "
            f"{pm(d1[:, 2].mean(), d1[:, 2].std(), True)} & "
            f"{pm(d2[:, 2].mean(), d2[:, 2].std(), True)} & "
            f"{pm(d2[:, 2].mean(), d2[:, 2].std(), True)} \\\\"]
    lines = out.split("\n")
    check(all(w in lines for w in want), "LaTeX: names escaped, rows as written by hand",
          "\n    ".join(w for w in want if w not in lines))
    start = lines.index("\\begin{tabular}{lcc}") if "\\begin{tabular}{lcc}" in lines else 0
    rows = [ln for ln in lines[start:] if ln.endswith("\\\\")]
    cols = {len(re.split(r"(?<!\\)&", ln)) for ln in rows[:3]}
    check(cols == {3} and not any(re.search(r"(?<!\\)%", ln) for ln in rows),
          "LaTeX: method rows of 3 columns, no unescaped %", f"{cols} {rows}")
    # the name's backslash doubled: a single one before a | would escape the separator
    md_row = f"| A\\|B {{x}}_1 #2 & $3 ~4 ^5 \\\\6 <7> | {pm(d2.mean(0).mean(), d2.mean(1).std())}"
    md = [ln for ln in lines if ln.startswith("|")]
    md_cols = {len(re.split(r"(?<!\\)\|", ln)) for ln in md[:4]}
    check(any(ln.startswith(md_row) for ln in md) and md_cols == {6},
          "markdown: a | in a name escaped as \\|, a backslash as \\\\, every method row 4 "
          "columns", f"{md_cols} {md}")

    # --- organs without a scored cell
    d = rng.uniform(0.5, 0.9, (3, 3))
    v = np.full((3, 3), 100.0)
    v[:, 1] = 0                        # no case has a spleen: --ignore-empty leaves nothing
    write_results(f"{tmp}/e.h5", d, truth_voxels=v)
    out, err = tables("--ignore-empty", f"m={tmp}/e.h5")
    organ_means = d[:, [0, 2]].mean(0)
    want = ["| spleen | – | – |", "spleen & -- & -- \\\\",
            f"| liver | {pm(d[:, 0].mean(), d[:, 0].std())} |",
            f"| m | {pm(organ_means.mean(), d[:, [0, 2]].mean(1).std())} |"]
    check(all(w in out for w in want) and "nan" not in out,
          "--ignore-empty, an organ no case has: – (LaTeX --), the others' means kept",
          [w for w in want if w not in out])
    f0, f1 = rng.uniform(0.5, 0.9, (2, 3)), rng.uniform(0.5, 0.9, (2, 3))
    f0[:, 2] = f1[:, 2] = np.nan       # flare22's unscoreable cells, in every fold
    write_results(f"{tmp}/n0.h5", f0, cases=["c0", "c1"])
    write_results(f"{tmp}/n1.h5", f1, cases=["c2", "c3"])
    out, err = tables(f"f={tmp}/n0.h5", f"f={tmp}/n1.h5")
    liver = np.array([f0[:, 0].mean(), f1[:, 0].mean()])
    want = ["| left_kidney | – | – |", "left\\_kidney & -- & -- \\\\",
            f"| liver | {pm(liver.mean(), liver.std())} |"]
    check(all(w in out for w in want) and "nan" not in out,
          "folds, an organ NaN in every fold: – (LaTeX --)", [w for w in want if w not in out])
    # an organ scored in one fold only, or by one case only: no spread to measure, so its std
    # is a dash (it had printed ± 0.00 under "std across 2 folds", a measured zero spread)
    g0, g1 = rng.uniform(0.5, 0.9, (2, 3)), rng.uniform(0.5, 0.9, (2, 3))
    g1[:, 1] = np.nan                  # the spleen scored in fold 0 alone
    write_results(f"{tmp}/o0.h5", g0, cases=["c0", "c1"])
    write_results(f"{tmp}/o1.h5", g1, cases=["c2", "c3"])
    out, err = tables("--format", "md", f"g={tmp}/o0.h5", f"g={tmp}/o1.h5")
    want = [f"| spleen | {100 * g0[:, 1].mean():.2f} ± – |"]
    single = rng.uniform(0.5, 0.9, (2, 3))
    single[1, 0] = np.nan              # the liver scored in one case alone
    write_results(f"{tmp}/one.h5", single, cases=["c0", "c1"])
    out1, _ = tables("--format", "md", f"s={tmp}/one.h5")
    want1 = [f"| liver | {100 * single[0, 0]:.2f} ± – |"]
    check(all(w in out for w in want) and all(w in out1 for w in want1),
          "an organ scored once (one fold, or one case): its std a dash, not ± 0.00",
          [w for w in want if w not in out] + [w for w in want1 if w not in out1])

    # --- folds sharing cases
    for k, cases in enumerate((["case0", "case1", "case2", "case3"],
                               ["case2", "case3", "case4", "case5"],
                               ["case6", "case7", "case8", "case9"])):
        write_results(f"{tmp}/fold{k}.h5", rng.uniform(0.5, 0.9, (4, 3)), cases=cases)
    out, err = tables("--format", "md", f"a={tmp}/fold0.h5", f"a={tmp}/fold0.h5")
    check("| a |" in out and "2 folds" in out and "a: its folds share cases" in err
          and f"{tmp}/fold0.h5 is given twice" in err,
          "one file given twice as folds: a warning naming it, the table printed", err)
    out, err = tables("--format", "md", f"a={tmp}/fold0.h5", f"a={tmp}/fold1.h5")
    check("a: its folds share cases" in err
          and f"{tmp}/fold0.h5 and {tmp}/fold1.h5 share 2 case(s) (case2, case3)" in err,
          "overlapping folds: a warning naming both files and the shared cases", err)
    out, err = tables("--format", "md", f"a={tmp}/fold0.h5", f"a={tmp}/fold2.h5")
    check(err == "" and "2 folds" in out, "disjoint folds: no warning", err)

    # --- eval_protocol / label_set (the config attribute alice eval writes)
    base = rng.uniform(0.5, 0.9, (4, 3))
    cfg = "device = cpu\nlabel_set = {}\neval_protocol = {}\n"
    write_results(f"{tmp}/plain.h5", base, config=cfg.format("flare", "plain"))
    write_results(f"{tmp}/plain2.h5", base,
                  config="# eval_protocol = flare22\n" + cfg.format("flare", "plain"))
    write_results(f"{tmp}/flare22.h5", base, config=cfg.format("flare", "flare22"))
    write_results(f"{tmp}/flare22b.h5", base, cases=[f"case{i}" for i in range(4, 8)],
                  config=cfg.format("flare", "flare22"))
    write_results(f"{tmp}/btcv.h5", base, config=cfg.format("btcv", "plain"))
    write_results(f"{tmp}/noconfig.h5", base)
    out, err = tables("--format", "md", f"A={tmp}/plain.h5", f"B={tmp}/flare22.h5")
    check("| A |" in out and "| B |" in out and "different eval_protocol (A: plain; B: flare22)"
          in err and "not comparable" in err,
          "methods under different eval_protocol: a warning naming each, the table printed", err)
    out, err = tables("--format", "md", f"A={tmp}/plain.h5", f"A={tmp}/flare22b.h5")
    check("A: its folds were scored under different eval_protocol "
          f"({tmp}/plain.h5: plain; {tmp}/flare22b.h5: flare22)" in err and "not comparable" in err,
          "one method's folds under different eval_protocol: a warning naming the files", err)
    out, err = tables("--format", "md", f"A={tmp}/plain.h5", f"C={tmp}/btcv.h5")
    check("different label_set (A: flare; C: btcv)" in err and "not comparable" in err,
          "methods under different label_set: a warning naming each", err)
    out, err = tables("--format", "md", f"A={tmp}/plain.h5", f"D={tmp}/plain2.h5",
                      f"E={tmp}/noconfig.h5")
    check(err == "", "the same eval_protocol and label_set (a comment not read), or a file "
          "without a config: no warning", err)
    write_results(f"{tmp}/garbled.h5", base, config="device = cpu\nthis line has no equals\n")
    out, err = tables("--format", "md", f"A={tmp}/plain.h5", f"G={tmp}/garbled.h5")
    check(f"{tmp}/garbled.h5: its config attribute does not parse" in err
          and "different eval_protocol (A: plain; G: unknown)" in err and "| G |" in out,
          "a config attribute that does not parse: its eval_protocol unknown, not plain", err)

    # a table of strings where the scores belong (an edited file): a message, not a traceback
    write_results(f"{tmp}/strings.h5", base)
    with h5py.File(f"{tmp}/strings.h5", "a") as h:
        shape = h["dsc"].shape
        del h["dsc"]
        h["dsc"] = np.full(shape, b"x")
    r = subprocess.run([sys.executable, "tables.py", "--format", "md", f"S={tmp}/strings.h5"],
                       capture_output=True, text=True, cwd=ANALYSIS)
    check(r.returncode != 0 and "Traceback" not in r.stderr
          and f"{tmp}/strings.h5: dsc does not hold numbers" in r.stderr,
          "a dsc of strings: named, no traceback", r.stderr[-400:])

    if os.access(ALICE, os.X_OK):
        # the config text alice eval itself records: the truth scored against itself twice
        subprocess.run([ALICE, "phantom", "--out", f"{tmp}/ph", "--cases", "2", "--size",
                        "small", "--seed", "3"], check=True, capture_output=True)
        for proto in ("plain", "flare22"):
            subprocess.run([ALICE, "eval", "--pred", f"{tmp}/ph/labelsTr", "--labels",
                            f"{tmp}/ph/labelsTr", "--out", f"{tmp}/real_{proto}",
                            f"eval_protocol={proto}"], check=True, capture_output=True)
        out, err = tables("--format", "md", f"P={tmp}/real_plain.h5",
                          f"F={tmp}/real_flare22.h5")
        check("different eval_protocol (P: plain; F: flare22)" in err,
              "alice eval's own results.h5 under plain and flare22: the warning", err)
    else:
        print(f"{ALICE} not built: alice eval's own results.h5 not checked here")

print(f"{len(failures)} failure(s)" if failures else "ok")
sys.exit(1 if failures else 0)

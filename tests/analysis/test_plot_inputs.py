"""Inputs the plotting and table scripts met in a review and broke on, each script's main() run
in-process (tests/analysis/inprocess.py):
 - plot_organs.py on a method scored on one case (a fold holding one case): every std is NaN
   (tables.py's "no spread to measure"), which matplotlib's error bars refused with a
   StopIteration; the bars are drawn without error bars, beside a method that has them;
 - run and method names with '$' (mathtext: a ParseException at save time) or a leading '_'
   (hidden from the legend) reach matplotlib escaped (outputs.plot_label), and plot;
 - a results.h5 whose dsc/nsd/truth_voxels/tolerance_mm do not match case_names x organ_names
   ends with a message naming the file and the shapes (it printed a table over the shorter
   organ list with an overall mean over all columns, or an IndexError);
 - `NAME=` (no path) and `=path` (no name) end with the name=path message (an h5py ValueError
   traceback, or a row without a name);
 - plot_losses.py on a CSV without a step column ends naming the file (a KeyError)."""
import os
import sys
import tempfile

try:
    import numpy as np
    import h5py
    import matplotlib
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)
matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import outputs  # noqa: E402
import plot_losses  # noqa: E402
import plot_organs  # noqa: E402
import tables  # noqa: E402
from inprocess import call  # noqa: E402
from results_fixture import ORGANS, write_results  # noqa: E402

failures = []


def expect(main, args, rc_want, needles, made=None):
    """main exits rc_want with every needle on stderr (and writes `made` when given)."""
    rc, _, err = call(main, args)
    ok = rc == rc_want and all(n in err for n in needles) and (made is None or os.path.exists(made))
    print(("ok: " if ok else "FAIL: ") + f"{main.__module__}.py " + " ".join(args)
          + f" -> exit {rc}: {err.strip()[-300:]}")
    if not ok:
        failures.append(" ".join(args))


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(3)
    one = os.path.join(tmp, "one.h5")
    write_results(one, rng.uniform(0.5, 1.0, (1, len(ORGANS))))
    many = os.path.join(tmp, "many.h5")
    write_results(many, rng.uniform(0.5, 1.0, (4, len(ORGANS))))

    png = os.path.join(tmp, "one.png")
    expect(plot_organs.main, ["--out", png, f"single={one}"], 0, [], made=png)
    png = os.path.join(tmp, "mixed.png")
    expect(plot_organs.main, ["--out", png, f"single={one}", f"four={many}"], 0, [], made=png)
    png = os.path.join(tmp, "names.png")
    expect(plot_organs.main, ["--out", png, f"run_a^2 $x^$={many}", f"_base={one}"], 0, [],
           made=png)
    check(outputs.plot_label("a $x^$") == r"a \$x^\$", "plot_label escapes $")
    check(not outputs.plot_label("_base").startswith("_")
          and outputs.plot_label("_base").endswith("_base"), "plot_label keeps _base visible")

    # arrays that disagree with the name lists
    cut = os.path.join(tmp, "cut_organs.h5")
    write_results(cut, rng.uniform(0.5, 1.0, (3, len(ORGANS))))
    with h5py.File(cut, "a") as h:
        del h["organ_names"]
        h["organ_names"] = np.array(ORGANS[:-1], dtype="S")
    expect(tables.main, [f"A={cut}"], 1, [f"{cut}: dsc is 3x3, not 3 cases x 2 organs"])
    transposed = os.path.join(tmp, "transposed.h5")
    write_results(transposed, rng.uniform(0.5, 1.0, (4, len(ORGANS))))
    with h5py.File(transposed, "a") as h:
        d = h["dsc"][:].T
        del h["dsc"]
        h["dsc"] = d
    expect(tables.main, [f"A={transposed}"], 1, [f"{transposed}: dsc is 3x4, not 4 cases x 3 organs"])
    scalar = os.path.join(tmp, "scalar.h5")   # h5py's [:] refused a scalar before the check
    write_results(scalar, rng.uniform(0.5, 1.0, (2, len(ORGANS))))
    with h5py.File(scalar, "a") as h:
        del h["dsc"]
        h["dsc"] = 0.5
    expect(tables.main, [f"A={scalar}"], 1, [f"{scalar}: dsc is a scalar, not 2 cases x 3 organs"])
    tol = os.path.join(tmp, "tolerance.h5")
    write_results(tol, rng.uniform(0.5, 1.0, (2, len(ORGANS))))
    with h5py.File(tol, "a") as h:
        del h["tolerance_mm"]
        h["tolerance_mm"] = np.array([5.0, 3.0])
    expect(tables.main, [f"A={tol}"], 1, [f"{tol}: tolerance_mm holds 2 values for 3 organs"])

    # empty names and paths
    expect(tables.main, ["A="], 1, ["argument 'A=': expected name=path/to/results.h5 with a name"])
    expect(plot_organs.main, ["--out", os.path.join(tmp, "x.png"), f"={many}"], 1,
           [f"argument '={many}': expected name=path/to/results.h5 with a name"])

    # plot_losses: a CSV without a step column
    run = os.path.join(tmp, "run")
    os.mkdir(run)
    with open(os.path.join(run, "metrics.csv"), "w") as f:
        f.write("a,b\n1,2\n")
    expect(plot_losses.main, ["--out", os.path.join(tmp, "l.png"), run], 1,
           [f"{os.path.join(run, 'metrics.csv')}: no step column"])

if failures:
    print(f"FAIL: {len(failures)} case(s)")
    sys.exit(1)
print("PASS: one-case bars, escaped names, shape checks, empty name=path, step column")

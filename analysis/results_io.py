"""Reading results.h5 files written by `alice eval` (layout: docs/FORMAT.md)."""
import h5py
import numpy as np


def _text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def load_results(path):
    """dict: cases, organs (lists of str), dsc, nsd, truth_voxels ([cases, organs] arrays; the
    last None for older files), attrs (dict of str).
    A missing, unreadable or foreign file ends the script naming it and what was expected."""
    try:
        h = h5py.File(path, "r")
    except (OSError, ValueError) as e:   # ValueError: an empty or invalid file name
        raise SystemExit(f"{path}: cannot read it as HDF5 ({e}); give the results.h5 that "
                         f"alice eval writes")
    with h:
        missing = [k for k in ("case_names", "organ_names", "dsc", "nsd", "tolerance_mm")
                   if k not in h]
        if missing:
            raise SystemExit(f"{path}: not an alice eval results file (no {', '.join(missing)}); "
                             f"give the results.h5 that alice eval writes")
        def numbers(name):
            try:
                return np.asarray(h[name][()], float)
            except (TypeError, ValueError) as e:   # strings, compound types: edited by hand
                raise SystemExit(f"{path}: {name} does not hold numbers ({e}); the file is "
                                 f"damaged or was edited: evaluate again with alice eval")
        r = {
            "cases": [_text(s) for s in np.atleast_1d(h["case_names"][()])],
            "organs": [_text(s) for s in np.atleast_1d(h["organ_names"][()])],
            "dsc": numbers("dsc"),
            "nsd": numbers("nsd"),
            "tolerance_mm": numbers("tolerance_mm"),
            # None in files of an alice before truth_voxels was recorded
            "truth_voxels": numbers("truth_voxels") if "truth_voxels" in h else None,
            "attrs": {k: _text(v) for k, v in h.attrs.items()},
        }
    check_shapes(path, r)
    return r


def check_shapes(path, r):
    """The score arrays must be [cases, organs] as the name lists say: a table over a shorter
    organ list would otherwise print organ rows that disagree with its overall mean."""
    want = (len(r["cases"]), len(r["organs"]))
    arrays = [("dsc", r["dsc"]), ("nsd", r["nsd"])]
    if r["truth_voxels"] is not None:
        arrays.append(("truth_voxels", r["truth_voxels"]))
    for name, a in arrays:
        if a.shape != want:
            raise SystemExit(f"{path}: {name} is {'x'.join(map(str, a.shape)) or 'a scalar'}, "
                             f"not {want[0]} cases x {want[1]} organs as case_names and "
                             f"organ_names say; the file is damaged or not written by alice "
                             f"eval: evaluate again")
    if r["tolerance_mm"].shape != (want[1],):
        raise SystemExit(f"{path}: tolerance_mm holds {r['tolerance_mm'].size} values for "
                         f"{want[1]} organs; the file is damaged or not written by alice eval: "
                         f"evaluate again")


def parse_runs(args):
    """`name=path` arguments -> ordered {name: [path, ...]} (a name given twice = several folds)."""
    runs = {}
    for a in args:
        if "=" not in a:
            raise SystemExit(f"argument '{a}': expected name=path/to/results.h5")
        name, path = a.split("=", 1)
        if not name.strip() or not path:
            raise SystemExit(f"argument '{a}': expected name=path/to/results.h5 with a name "
                             f"and a path")
        runs.setdefault(name, []).append(path)
    return runs

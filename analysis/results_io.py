"""Reading results.h5 files written by `alice eval` (layout: docs/FORMAT.md)."""
import h5py
import numpy as np


def _text(v):
    return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)


def load_results(path):
    """dict: cases, organs (lists of str), dsc, nsd ([cases, organs] arrays), attrs (dict of str)."""
    with h5py.File(path, "r") as h:
        return {
            "cases": [_text(s) for s in h["case_names"][:]],
            "organs": [_text(s) for s in h["organ_names"][:]],
            "dsc": np.asarray(h["dsc"][:], float),
            "nsd": np.asarray(h["nsd"][:], float),
            "tolerance_mm": np.asarray(h["tolerance_mm"][:], float),
            "attrs": {k: _text(v) for k, v in h.attrs.items()},
        }


def parse_runs(args):
    """`name=path` arguments -> ordered {name: [path, ...]} (a name given twice = several folds)."""
    runs = {}
    for a in args:
        if "=" not in a:
            raise SystemExit(f"argument '{a}': expected name=path/to/results.h5")
        name, path = a.split("=", 1)
        runs.setdefault(name, []).append(path)
    return runs

"""results.h5 files in the layout alice eval writes (docs/FORMAT.md), for the analysis tests:
one writer, so a change of the layout is made once."""
import h5py
import numpy as np

ORGANS = ["liver", "spleen", "left_kidney"]
TOLERANCE_MM = {"liver": 5.0, "spleen": 3.0, "left_kidney": 3.0, "pancreas": 5.0}


def write_results(path, dsc, nsd=None, organs=ORGANS, cases=None, truth_voxels=None,
                  config=None):
    """dsc, nsd: [cases, organs] arrays (nsd None: dsc again); cases default case0, case1, ...;
    truth_voxels and the config attribute written when given."""
    cases = cases or [f"case{i}" for i in range(dsc.shape[0])]
    with h5py.File(path, "w") as h:   # fixed-length strings, as alice eval writes them
        h["case_names"] = np.array(cases, dtype="S")
        h["organ_names"] = np.array(organs, dtype="S")
        h["dsc"] = dsc
        h["nsd"] = dsc if nsd is None else nsd
        h["tolerance_mm"] = np.array([TOLERANCE_MM[o] for o in organs])
        if truth_voxels is not None:
            h["truth_voxels"] = truth_voxels
        h.attrs["label_set"] = np.bytes_("flare")
        if config is not None:
            h.attrs["config"] = np.bytes_(config)

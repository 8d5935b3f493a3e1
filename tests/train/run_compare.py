"""Two training runs' final states side by side, for the shell tests that run a configuration
two ways (tests/train/test_overlap_allreduce.sh, test_cuda_graph_cpu.sh): every tensor of the
parameters, the EMA target and both AdamW moments in a checkpoint of each run, and the logged
metrics. The tests make their own assertions on what this returns."""
import h5py
import numpy as np

STATE_PREFIXES = ("params/", "target/", "adam_m/", "adam_v/")


def compare_states(a_ckpt, b_ckpt):
    """Returns (count, exact, worst, worst_name, differing): tensors compared, how many are
    bit-identical, the largest relative Frobenius difference and its tensor, the names of the
    tensors that are not bit-identical."""
    a, b = h5py.File(a_ckpt, "r"), h5py.File(b_ckpt, "r")
    found = {"count": 0, "exact": 0, "worst": 0.0, "worst_name": "", "differing": []}

    def visit(name, obj):
        if not (isinstance(obj, h5py.Dataset) and name.startswith(STATE_PREFIXES)):
            return
        x, y = obj[()], b[name][()]
        found["count"] += 1
        if np.array_equal(x, y):
            found["exact"] += 1
        else:
            found["differing"].append(name)
        err = np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-12)
        if err > found["worst"]:
            found["worst"], found["worst_name"] = err, name

    a.visititems(visit)
    return (found["count"], found["exact"], found["worst"], found["worst_name"],
            found["differing"])


def metrics(run_dir):
    """metrics.csv of a run as a structured array (columns by name)."""
    return np.genfromtxt(f"{run_dir}/metrics.csv", delimiter=",", names=True)

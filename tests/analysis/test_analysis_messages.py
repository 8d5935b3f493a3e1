"""Wrong inputs to the analysis scripts end with a message naming what was wrong and the fix,
not a Python traceback (each script's main() run in-process as its command line would run
it; tests/analysis/inprocess.py):
 - export_encoder.py on a missing checkpoint and on a file that is not HDF5: the path, "cannot
   read it as HDF5" and the checkpoint to give (alice pretrain's ckpt_<step>.h5);
 - export_encoder.py --img-size 32,32,x on a valid checkpoint: argparse's usage error naming
   --img-size and the value (was a ValueError from int('x'));
 - plot_overlay.py --slices 0 and --slices -2 on valid volumes: a usage error naming --slices
   (0 was a ValueError from subplots(0, 3); -2 silently plotted all slices but two)."""
import os
import sys
import tempfile

try:
    import numpy as np
    import h5py
    import matplotlib  # noqa: F401
    import nibabel as nib
    import torch  # noqa: F401
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_encoder  # noqa: E402
import plot_overlay  # noqa: E402
from inprocess import call  # noqa: E402

failures = []


def expect(main, args, rc_want, needles):
    """main exits rc_want (not a traceback) with every needle on stderr."""
    rc, _, err = call(main, args)
    ok = rc == rc_want and all(n in err for n in needles)
    print(("ok: " if ok else "FAIL: ") + f"{main.__module__}.py " + " ".join(args)
          + f" -> exit {rc}: {err.strip()[-300:]}")
    if not ok:
        failures.append(" ".join(args))


with tempfile.TemporaryDirectory() as tmp:
    # a pre-training checkpoint as far as the export reads before --img-size is used
    ckpt = os.path.join(tmp, "ckpt_2.h5")
    with h5py.File(ckpt, "w") as h:
        h.attrs["format"] = np.bytes_("alice-checkpoint")
        h.attrs["kind"] = np.bytes_("pretrain")
        h.attrs["config"] = np.bytes_("patch = 4\ncrop = 8,8,8\nembed_dim = 12\ndepth = 1\n"
                                      "heads = 2\nmlp_dim = 8\n")
        h.create_group("params")
    junk = os.path.join(tmp, "junk.h5")
    with open(junk, "w") as f:
        f.write("not hdf5\n")
    missing = os.path.join(tmp, "missing.h5")
    for path in (missing, junk):
        expect(export_encoder.main, [path], 1,
               [f"{path}: cannot read it as HDF5", "alice pretrain's run_dir/ckpt_<step>.h5"])
    expect(export_encoder.main, [ckpt, "--img-size", "32,32,x"], 2,
           ["--img-size", "'32,32,x': expected X,Y,Z, three positive whole numbers"])

    shape = (16, 16, 4)
    truth = np.zeros(shape, np.uint8)
    truth[4:10, 4:10, 1:3] = 1
    for arr, name in ((np.full(shape, 40, np.int16), "img"), (truth, "truth"), (truth, "pred")):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), os.path.join(tmp, name + ".nii.gz"))
    for n in ("0", "-2"):
        expect(plot_overlay.main, ["--image", f"{tmp}/img.nii.gz", "--truth",
                                   f"{tmp}/truth.nii.gz", "--pred", f"{tmp}/pred.nii.gz",
                                   "--out", f"{tmp}/o.png", "--slices", n], 2,
               ["argument --slices", f"'{n}' is not a positive whole number"])
    if os.path.exists(f"{tmp}/o.png"):
        failures.append("plot_overlay.py wrote a plot for a non-positive --slices")

print(f"{len(failures)} failure(s)" if failures else "ok")
sys.exit(1 if failures else 0)

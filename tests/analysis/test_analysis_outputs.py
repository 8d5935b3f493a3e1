"""The outputs of plot_organs.py, plot_losses.py, plot_overlay.py and export_encoder.py
(analysis/outputs.py), each script run in-process on small inputs made here:
 - written atomically: with the library's writer (Figure.savefig, torch.save) failing after a
   partial write, an existing --out keeps its old bytes and no temporary file is left beside it;
 - a successful write leaves only --out in its folder, in the format its extension names (PDF
   and SVG by their first bytes, PNG by its signature) and prints "wrote <--out>";
 - an --out without an extension or with an unknown one ends with a message naming .png, .pdf
   and .svg (not a matplotlib ValueError, not a silently appended .png);
 - an --out whose folder does not exist ends with a message naming the folder and the mkdir
   fix before any input is read (the inputs given do not exist either; their message would
   otherwise come first)."""
import contextlib
import os
import sys
import tempfile

try:
    import numpy as np
    import h5py
    import matplotlib
    import matplotlib.figure
    import nibabel as nib
    import torch
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)
matplotlib.use("Agg")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_encoder  # noqa: E402
import outputs  # noqa: E402
import plot_losses  # noqa: E402
import plot_organs  # noqa: E402
import plot_overlay  # noqa: E402
from inprocess import call  # noqa: E402
from results_fixture import write_results  # noqa: E402

failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def write_checkpoint(path):
    """A pre-training checkpoint of a tiny ViT in alice's layout (docs/FORMAT.md): attrs format,
    kind, config; /params/encoder.<MONAI key> float32 arrays. Returns the tensors written."""
    vit = export_encoder.ViT3D(4, 12, 1, 2, 8)
    params = {k: v.detach().numpy().astype(np.float32) for k, v in vit.state_dict().items()}
    with h5py.File(path, "w") as h:
        h.attrs["format"] = np.bytes_("alice-checkpoint")
        h.attrs["kind"] = np.bytes_("pretrain")
        h.attrs["config"] = np.bytes_("patch = 4\ncrop = 8,8,8\nembed_dim = 12\ndepth = 1\n"
                                      "heads = 2\nmlp_dim = 8\n")
        g = h.create_group("params")
        for k, v in params.items():
            g["encoder." + k] = v
    return params


@contextlib.contextmanager
def failing(owner, attr):
    """owner.attr replaced by a writer that writes a partial file, then fails (a full disk, a
    killed job): what an in-place write leaves as the output."""
    orig = getattr(owner, attr)

    def broken(*args, **kwargs):
        target = args[1]               # savefig(self, fname), torch.save(obj, f)
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("No space left on device (simulated)")
    setattr(owner, attr, broken)
    try:
        yield
    finally:
        setattr(owner, attr, orig)


with tempfile.TemporaryDirectory() as tmp:
    # inputs of each script
    write_results(os.path.join(tmp, "r.h5"), np.array([[0.9, 0.8], [0.7, 0.6]]),
                  np.array([[0.8, 0.7], [0.6, 0.5]]), organs=["liver", "spleen"])
    run_dir = os.path.join(tmp, "run")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "metrics.csv"), "w") as f:
        f.write("step,loss,ce,dice,lr\n" + "".join(f"{s},{2 / s},{1 / s},{1 / s},1e-4\n"
                                                   for s in range(1, 6)))
    shape = (16, 16, 4)
    truth = np.zeros(shape, np.uint8)
    truth[4:10, 4:10, 1:3] = 1
    for arr, name in ((np.full(shape, 40, np.int16), "img"), (truth, "truth"), (truth, "pred")):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), os.path.join(tmp, name + ".nii.gz"))
    ckpt = os.path.join(tmp, "ckpt.h5")
    params = write_checkpoint(ckpt)

    scripts = {
        "plot_organs.py": (plot_organs.main, lambda out: ["--out", out, f"m={tmp}/r.h5"],
                           ["--out", "OUT", "m=/nonexistent/r.h5"]),
        "plot_losses.py": (plot_losses.main, lambda out: ["--out", out, run_dir],
                           ["--out", "OUT", "/nonexistent/run"]),
        "plot_overlay.py": (plot_overlay.main,
                            lambda out: ["--image", f"{tmp}/img.nii.gz", "--truth",
                                         f"{tmp}/truth.nii.gz", "--pred", f"{tmp}/pred.nii.gz",
                                         "--out", out, "--slices", "1"],
                            ["--image", "/nonexistent/i.nii.gz", "--truth", "/nonexistent/t",
                             "--pred", "/nonexistent/p", "--out", "OUT"]),
    }
    magic = {"png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
             "pdf": lambda b: b.startswith(b"%PDF-"),
             "svg": lambda b: b"<svg" in b[:2000]}
    for script, (main, argv, absent_inputs) in scripts.items():
        d = os.path.join(tmp, script[:-3])
        os.makedirs(d)
        for ext in ("png", "pdf", "svg"):
            out = os.path.join(d, f"fig.{ext}")
            rc, so, se = call(main, argv(out))
            with open(out, "rb") as f:
                head = f.read(2000)
            check(rc == 0 and so.strip().endswith(f"wrote {out}") and magic[ext](head),
                  f"{script} --out fig.{ext}: a {ext.upper()} file, 'wrote {out}' ({rc} {se})")
        check(sorted(os.listdir(d)) == ["fig.pdf", "fig.png", "fig.svg"],
              f"{script}: only the outputs in their folder: {sorted(os.listdir(d))}")
        # the old output survives a write that fails half-way, and no temporary file stays
        out = os.path.join(d, "fig.png")
        with open(out, "wb") as f:
            f.write(b"old figure")
        with failing(matplotlib.figure.Figure, "savefig"):
            rc, so, se = call(main, argv(out))
        with open(out, "rb") as f:
            kept = f.read()
        check(rc != 0 and kept == b"old figure" and sorted(os.listdir(d)) ==
              ["fig.pdf", "fig.png", "fig.svg"],
              f"{script}: a failed write keeps the old --out ({kept[:12]!r}) and leaves no "
              f"temporary file ({sorted(os.listdir(d))})")
        # a symbolic link --out is written through (the link kept, its target replaced), and
        # an existing file keeps its mode
        real = os.path.join(d, "paper_fig.png")
        with open(real, "wb") as f:
            f.write(b"stale")
        os.chmod(real, 0o640)
        link = os.path.join(d, "link.png")
        os.symlink(real, link)
        rc, so, se = call(main, argv(link))
        with open(real, "rb") as f:
            fresh = f.read(8)
        check(rc == 0 and os.path.islink(link) and fresh.startswith(b"\x89PNG") and
              os.stat(real).st_mode & 0o7777 == 0o640,
              f"{script}: --out a symbolic link: written through, the link kept, mode 0640 kept "
              f"({rc} {se.strip()[-120:]})")
        os.remove(link)
        os.remove(real)
        for bad, what in (("plot", "no extension"), ("plot.jpgx", "extension .jpgx")):
            out = os.path.join(d, bad)
            rc, so, se = call(main, argv(out))
            check(rc != 0 and not str(rc).startswith("traceback") and what in se
                  and ".png, .pdf, .svg" in se and not os.path.exists(out)
                  and not os.path.exists(out + ".png"),
                  f"{script} --out {bad}: refused naming the extensions, nothing written "
                  f"({rc}: {se.strip()[-160:]})")
        # a folder this user cannot write into (root may write anywhere, so the permission
        # test itself is answered "no" here): refused before the inputs are read
        saved_access = outputs.os.access
        outputs.os.access = lambda *_: False
        try:
            rc, so, se = call(main, [os.path.join(d, "x.png") if a == "OUT" else a
                                     for a in absent_inputs])
        finally:
            outputs.os.access = saved_access
        check(rc != 0 and "cannot create files in" in se and "nonexistent" not in se,
              f"{script}: an unwritable --out folder named before the inputs are read "
              f"({rc}: {se.strip()[-120:]})")
        missing = os.path.join(tmp, "no_such_dir")
        rc, so, se = call(main, [missing + "/fig.png" if a == "OUT" else a for a in absent_inputs])
        check(rc != 0 and f"the folder {missing} does not exist" in se
              and f"mkdir -p {missing}" in se,
              f"{script}: a missing --out folder named before the inputs are read "
              f"({rc}: {se.strip()[-160:]})")

    # export_encoder.py: torch.save through the same helper
    d = os.path.join(tmp, "export")
    os.makedirs(d)
    out = os.path.join(d, "vit.pt")
    rc, so, se = call(export_encoder.main, [ckpt, "--out", out])
    ok = rc == 0 and so.strip().endswith(f"wrote {out}")
    if ok:
        state = torch.load(out)
        ok = (set(state) == set(params) | {"patch_embedding.position_embeddings"}
              and all(np.array_equal(state[k].numpy(), v) for k, v in params.items()))
    check(ok and os.listdir(d) == ["vit.pt"],
          f"export_encoder.py --out: the checkpoint's tensors, 'wrote {out}', no stray file "
          f"({rc} {se.strip()[-160:]})")
    with open(out, "wb") as f:
        f.write(b"old export")
    with failing(torch, "save"):
        rc, so, se = call(export_encoder.main, [ckpt, "--out", out])
    with open(out, "rb") as f:
        kept = f.read()
    check(rc != 0 and kept == b"old export" and os.listdir(d) == ["vit.pt"],
          f"export_encoder.py: a failed torch.save keeps the old --out ({kept[:12]!r}) and "
          f"leaves no temporary file ({os.listdir(d)})")
    missing = os.path.join(tmp, "no_such_dir")
    rc, so, se = call(export_encoder.main, ["/nonexistent/ckpt.h5", "--out", missing + "/v.pt"])
    check(rc != 0 and f"the folder {missing} does not exist" in se,
          f"export_encoder.py: a missing --out folder named before the checkpoint is read "
          f"({rc}: {se.strip()[-160:]})")

print(f"{len(failures)} failure(s)" if failures else "ok")
sys.exit(1 if failures else 0)

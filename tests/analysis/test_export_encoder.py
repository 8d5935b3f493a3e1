"""analysis/export_encoder.py loads a pre-training checkpoint's encoder into a PyTorch ViT with
MONAI's keys (strict), and that module computes the same features as the independent
reference encoder of tests/reference/alice_ref.py (patchify + linear instead of Conv3d)."""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "analysis"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import alice_ref  # noqa: E402
import export_encoder  # noqa: E402

ALICE = os.environ.get("ALICE", os.path.join(ROOT, "bin", "alice"))
if not os.path.exists(ALICE):
    print(f"skip: {ALICE} not built")
    sys.exit(77)

with tempfile.TemporaryDirectory() as tmp:
    run = os.path.join(tmp, "run")
    subprocess.run([ALICE, "pretrain", "--config", os.path.join(ROOT, "tests/train/micro.cfg"),
                    f"run_dir={run}", "steps=2", "ckpt_every=2"], check=True, stdout=subprocess.DEVNULL)
    ckpt = os.path.join(run, "ckpt_2.h5")
    out = os.path.join(tmp, "encoder.pt")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "analysis/export_encoder.py"), ckpt, "--out", out],
                       check=True, capture_output=True, text=True)
    print(r.stdout.strip())
    with h5py.File(ckpt) as f:
        cfg_text = f.attrs["config"]
        cfg_text = cfg_text.decode() if isinstance(cfg_text, bytes) else cfg_text
        n_h5 = sum(1 for k in f["params"] if k.startswith("encoder."))
    cfg = export_encoder.parse_config(cfg_text)
    model = export_encoder.ViT3D(int(cfg["patch"]), int(cfg["embed_dim"]), int(cfg["depth"]),
                                 int(cfg["heads"]), int(cfg["mlp_dim"]))
    state = torch.load(out)
    model.load_state_dict(state, strict=True)
    assert len(state) == n_h5, (len(state), n_h5)
    ref = alice_ref.Encoder(alice_ref.Cfg(cfg))
    ref.load_state_dict(state, strict=True)
    x = torch.rand(2, 1, *[int(v) for v in cfg["crop"].split(",")], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), ref(x)
    err = (a - b).abs().max().item()
    print(f"exported ViT vs reference encoder: max |difference| {err:.2e} over {a.numel()} features")
    assert err < 1e-4, err
print("ok")

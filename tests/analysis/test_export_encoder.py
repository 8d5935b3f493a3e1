"""analysis/export_encoder.py loads a pre-training checkpoint's encoder into a PyTorch ViT with
MONAI's keys (strict), and that module computes the same features as the independent
reference encoder of tests/reference/alice_ref.py (patchify + linear instead of Conv3d). The
exported state also holds MONAI's patch_embedding.position_embeddings for the crop; where MONAI
is importable, monai.networks.nets.ViT(pos_embed_type="sincos") must load it with strict=True,
its own sin-cos table must equal the exported one within 1e-6, and its features ours within
1e-4 (MONAI: the pinned copy of scripts/deps_monai.sh; without it the test reports itself
skipped once the checks before MONAI's have passed)."""
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
from monai_import import monai  # noqa: E402

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
    cfg = export_encoder.parse_config_text(cfg_text)
    # src/core/config.c's comment rule: '#' at a line's start or after whitespace only
    assert export_encoder.parse_config_text("# top\nrun_dir = runs/exp#1  # note\nlr = 1\n") == \
        {"run_dir": "runs/exp#1", "lr": "1"}, "a '#' inside a value is part of it"
    crop = [int(v) for v in cfg["crop"].split(",")]
    patch = int(cfg["patch"])
    dims = dict(hidden_size=int(cfg["embed_dim"]), mlp_dim=int(cfg["mlp_dim"]),
                num_layers=int(cfg["depth"]), num_heads=int(cfg["heads"]))
    model = export_encoder.ViT3D(patch, dims["hidden_size"], dims["num_layers"],
                                 dims["num_heads"], dims["mlp_dim"], [c // patch for c in crop])
    state = torch.load(out)
    model.load_state_dict(state, strict=True)
    pe_key = "patch_embedding.position_embeddings"
    assert len(state) == n_h5 + 1 and pe_key in state, (len(state), n_h5)
    ref = alice_ref.Encoder(alice_ref.Cfg(cfg))
    ref.load_state_dict({k: v for k, v in state.items() if k != pe_key}, strict=True)
    x = torch.rand(2, 1, *crop, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x), ref(x)
    err = (a - b).abs().max().item()
    print(f"exported ViT vs reference encoder: max |difference| {err:.2e} over {a.numel()} features")
    assert err < 1e-4, err
    if monai() is None:   # the checks above passed; the MONAI part could not run
        sys.exit(77)
    from monai.networks.nets import ViT
    monai_vit = ViT(in_channels=1, img_size=crop, patch_size=patch, pos_embed_type="sincos",
                    classification=False, **dims)
    own_table = monai_vit.state_dict()[pe_key].clone()
    monai_vit.load_state_dict(state, strict=True)
    monai_vit.eval()
    pe_err = (own_table - state[pe_key]).abs().max().item()
    with torch.no_grad():
        feat_err = (monai_vit(x)[0] - a).abs().max().item()
    print(f"MONAI ViT: strict load ok; sin-cos table vs MONAI's own {pe_err:.2e}, features "
          f"vs the export {feat_err:.2e}")
    assert pe_err < 1e-6 and feat_err < 1e-4, (pe_err, feat_err)
print("ok")

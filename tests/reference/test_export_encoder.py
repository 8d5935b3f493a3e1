"""analysis/export_encoder.py on a real checkpoint of `alice pretrain` (tiny config, 1 step):
the exported state dict has exactly the reference encoder's (MONAI ViT) keys, its tensors are
the checkpoint's /params (or /target with --from target), and the exported weights assembled
into stock PyTorch modules (Conv3d patch embedding, nn.TransformerEncoderLayer(norm_first),
LayerNorm) give the same features as the reference encoder. Skips when $ALICE is not built."""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import alice_ref as ar  # noqa: E402

failures = []


def check(cond, what):
    print("  %s %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        failures.append(what)


def stock_encoder_forward(sd, cfg, x):
    """The exported weights in stock torch modules: what a user without our code would build."""
    E, H, M, p = cfg.i("embed_dim"), cfg.i("heads"), cfg.i("mlp_dim"), cfg.i("patch")
    conv = nn.Conv3d(1, E, p, stride=p)
    conv.load_state_dict({"weight": sd["patch_embedding.patch_embeddings.weight"],
                          "bias": sd["patch_embedding.patch_embeddings.bias"]})
    t = conv(x).flatten(2).transpose(1, 2) + ar.sincos_pos_embed(ar.grid_of(cfg), E)
    for i in range(cfg.i("depth")):
        layer = nn.TransformerEncoderLayer(E, H, M, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        b = "blocks.%d." % i
        layer.load_state_dict({
            "self_attn.in_proj_weight": sd[b + "attn.qkv.weight"],
            "self_attn.in_proj_bias": torch.zeros(3 * E),
            "self_attn.out_proj.weight": sd[b + "attn.out_proj.weight"],
            "self_attn.out_proj.bias": sd[b + "attn.out_proj.bias"],
            "linear1.weight": sd[b + "mlp.linear1.weight"], "linear1.bias": sd[b + "mlp.linear1.bias"],
            "linear2.weight": sd[b + "mlp.linear2.weight"], "linear2.bias": sd[b + "mlp.linear2.bias"],
            "norm1.weight": sd[b + "norm1.weight"], "norm1.bias": sd[b + "norm1.bias"],
            "norm2.weight": sd[b + "norm2.weight"], "norm2.bias": sd[b + "norm2.bias"]})
        t = layer(t)
    return nn.functional.layer_norm(t, (E,), sd["norm.weight"], sd["norm.bias"], 1e-5)


def main():
    alice = os.environ.get("ALICE", os.path.join(REPO, "bin", "alice"))
    if not os.access(alice, os.X_OK):
        print("skip: %s is not built" % alice)
        return 77
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="alice_export_")
    try:
        return run_checks(alice, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_checks(alice, tmp):
    run_dir = os.path.join(tmp, "run")
    r = subprocess.run([alice, "pretrain", "--config", os.path.join(REPO, "jobs", "pretrain_tiny.cfg"),
                        "steps=1", "ckpt_every=1", "run_dir=" + run_dir, "threads=1"],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout[-1500:])
    ckpts = [f for f in os.listdir(run_dir) if f.startswith("ckpt_")] if os.path.isdir(run_dir) else []
    if r.returncode != 0 or not ckpts:
        print("FAIL: alice pretrain did not write a checkpoint (exit %d)" % r.returncode)
        return 1
    ckpt = os.path.join(run_dir, sorted(ckpts)[-1])
    script = os.path.join(REPO, "analysis", "export_encoder.py")
    with h5py.File(ckpt, "r") as f:
        cfg = ar.Cfg(ar.parse_config_text(ar._attr_text(f.attrs["config"])))
    for group in ("params", "target"):
        out = os.path.join(tmp, "encoder_%s.pt" % group)
        r = subprocess.run([sys.executable, script, ckpt, out, "--from", group, "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(r.stdout)
        check(r.returncode == 0 and os.path.exists(out), "export --from %s" % group)
        if r.returncode != 0:
            continue
        sd = torch.load(out)
        want = set(ar.Encoder(cfg).state_dict())
        check(set(sd) == want, "--from %s: keys are the MONAI ViT keys (extra %s, missing %s)"
              % (group, sorted(set(sd) - want)[:3], sorted(want - set(sd))[:3]))
        with h5py.File(ckpt, "r") as f:
            same = all(np.array_equal(sd[k].numpy(), np.array(f[group]["encoder." + k]))
                       for k in sd)
        check(same, "--from %s: tensors equal the checkpoint's /%s/encoder.*" % (group, group))
        enc = ar.Encoder(cfg)
        enc.load_state_dict(sd, strict=True)
        x = torch.randn([2, 1] + cfg.i3("crop"), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref, stock = enc(x), stock_encoder_forward(sd, cfg, x)
        err = float((ref - stock).norm() / ref.norm())
        check(err < 1e-5, "--from %s: stock torch modules give the reference features (rel %.1e)"
              % (group, err))
    r = subprocess.run([sys.executable, script, os.path.join(run_dir, "metrics.csv"),
                        os.path.join(tmp, "x.pt")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    check(r.returncode != 0 and "not an HDF5 file" in r.stdout and not os.path.exists(
        os.path.join(tmp, "x.pt")), "a file that is not a checkpoint: clear error, nothing written")
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks the PyTorch reference (alice_ref.py) and its parity harness without the C side.

1. The reference against independent implementations: patch embedding vs Conv3d (the token and
   patch-element order of docs/MODEL.md), a transformer block vs torch.nn.TransformerEncoderLayer
   (the qkv column layout), drop-path by hand, sin-cos entries computed by hand, mask-token
   insertion, l_r, CASA and the cosine loss against numpy, AdamW + clipping against
   torch.optim.AdamW and clip_grad_norm_, the schedule and EMA momentum against hand values.
2. The harness: a dump written by PyTorch itself passes the comparer, and every kind of
   perturbation (one gradient, one loss term, one AdamW loss, the EMA left out, a renamed
   tensor) makes it fail.
"""
import math
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref as ar  # noqa: E402

torch.set_num_threads(1)
failures = []


def check(cond, what):
    print("  %s %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        failures.append(what)


def as_np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().double().numpy()
    return np.asarray(x, dtype=np.float64)


def close(a, b, tol):
    a, b = as_np(a), as_np(b)
    return float(np.max(np.abs(a - b))) <= tol


def test_patch_embedding():
    torch.manual_seed(0)
    cfg = ar.tiny_config()
    enc = ar.Encoder(cfg).double()
    x = torch.randn(2, 1, 16, 16, 8, dtype=torch.float64)
    conv = enc.patch_embedding.patch_embeddings
    ref = conv(x).flatten(2).transpose(1, 2)               # MONAI PatchEmbeddingBlock order
    got = F.linear(ar.patchify(x, 4), conv.weight.reshape(conv.weight.shape[0], -1), conv.bias)
    check(close(got, ref, 1e-12), "patchify + linear == Conv3d(stride=p).flatten(2).T")
    # hand index: token (ix*gy + iy)*gz + iz, element (px*p + py)*p + pz
    p, (gx, gy, gz) = 4, (4, 4, 2)
    ix, iy, iz, px, py, pz = 2, 1, 1, 3, 0, 2
    n, e = (ix * gy + iy) * gz + iz, (px * p + py) * p + pz
    check(float(ar.patchify(x, p)[1, n, e]) == float(x[1, 0, ix * p + px, iy * p + py, iz * p + pz]),
          "patchify index formula")


def test_block_vs_torch_layer():
    torch.manual_seed(1)
    W, H, M = 24, 3, 40
    blk = ar.Block(W, H, M).double()
    for prm in blk.parameters():
        nn.init.normal_(prm, std=0.3)
    ref = nn.TransformerEncoderLayer(W, H, M, dropout=0.0, activation="gelu", layer_norm_eps=1e-5,
                                     batch_first=True, norm_first=True).double()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(blk.attn.qkv.weight)     # rows [q | k | v], heads inside
        ref.self_attn.in_proj_bias.zero_()
        ref.self_attn.out_proj.weight.copy_(blk.attn.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(blk.attn.out_proj.bias)
        for a, b in (("linear1", blk.mlp.linear1), ("linear2", blk.mlp.linear2),
                     ("norm1", blk.norm1), ("norm2", blk.norm2)):
            getattr(ref, a).weight.copy_(b.weight)
            getattr(ref, a).bias.copy_(b.bias)
    x = torch.randn(2, 7, W, dtype=torch.float64)
    check(close(blk(x), ref(x), 1e-10), "Block == nn.TransformerEncoderLayer(norm_first, gelu)")


def test_drop_path_block():
    """The reference's drop-path (timm's DropPath) by hand: per sample, a dropped branch adds
    nothing, a kept one its output / (1 - p); the rates of the encoder's blocks are timm's
    linspace(0, drop_path, depth)."""
    torch.manual_seed(4)
    W, H, M, p = 24, 3, 40, 0.25
    blk = ar.Block(W, H, M, drop_prob=p).double()
    for prm in blk.parameters():
        nn.init.normal_(prm, std=0.3)
    x = torch.randn(3, 7, W, dtype=torch.float64)
    keep = torch.tensor([[0, 0], [1, 1], [1, 0]])
    out = blk(x, keep)
    for b in range(3):
        xb = x[b:b + 1]
        mid = xb + keep[b, 0] * blk.attn(blk.norm1(xb)) / (1 - p)
        want = mid + keep[b, 1] * blk.mlp(blk.norm2(mid)) / (1 - p)
        check(close(out[b:b + 1], want, 1e-12), "drop-path block, sample %d (keep %s)"
              % (b, keep[b].tolist()))
    check(torch.equal(out[0], x[0]), "both branches dropped: the block is the identity")
    check(close(blk(x), blk(x, None), 0), "no flags: no drop-path")
    enc = ar.Encoder(ar.tiny_config(depth="5", drop_path="0.2"))
    check(close([b.drop_prob for b in enc.blocks], [0, 0.05, 0.1, 0.15, 0.2], 1e-7),
          "encoder rates: linspace(0, 0.2, 5)")


def test_sincos():
    grid, dim = (3, 4, 2), 12
    pos = ar.sincos_pos_embed(grid, dim, torch.float64).numpy()
    k = dim // 6
    ok = pos.shape == (24, 12)
    for ix in range(3):
        for iy in range(4):
            for iz in range(2):
                n = (ix * 4 + iy) * 2 + iz
                for j in range(k):
                    om = 1.0 / 10000 ** (j / k)
                    want = [math.sin(iy * om), math.cos(iy * om), math.sin(ix * om),
                            math.cos(ix * om), math.sin(iz * om), math.cos(iz * om)]
                    got = [pos[n, blk * k + j] for blk in range(6)]
                    ok = ok and close(got, want, 1e-6)
    check(ok, "sin-cos position embedding entries by hand (w, h, d blocks)")


def test_decoder_insertion_and_recon():
    torch.manual_seed(2)
    cfg = ar.tiny_config()
    dec = ar.Decoder(cfg).double()
    nn.init.normal_(dec.mask_token)
    B, N, nvis = 2, 32, 8
    perm = torch.stack([torch.randperm(N) for _ in range(B)])
    V = torch.randn(B, nvis, 24, dtype=torch.float64)
    captured = {}
    dec.blocks[0].register_forward_pre_hook(lambda m, inp: captured.setdefault("x", inp[0]))
    H, pred = dec(V, perm)
    full = captured["x"] - dec.pos.unsqueeze(0)
    z = dec.decoder_embed(V)
    ok = True
    for b in range(B):
        for j in range(N):
            want = z[b, j] if j < nvis else dec.mask_token
            ok = ok and close(full[b, perm[b, j]].detach(), want.detach(), 1e-12)
    check(ok, "decoder: full[perm[j]] = z[j] for j < nvis, mask_token otherwise")

    x = torch.randn(B, 1, 16, 16, 8, dtype=torch.float64)
    loss = float(ar.recon_loss(pred, x, perm, nvis, 4, True).detach())
    xp = ar.patchify(x, 4).numpy()
    pr = pred.detach().numpy()
    tot = 0.0
    for b in range(B):
        for j in range(nvis, N):
            t = xp[b, perm[b, j]]
            t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)   # MAE: torch's unbiased var
            tot += np.mean((pr[b, perm[b, j]] - t) ** 2)
    check(abs(loss - tot / (B * (N - nvis))) < 1e-12, "l_r against a numpy loop")


def test_casa_and_cos():
    torch.manual_seed(3)
    cfg = ar.tiny_config()
    casa = ar.Casa(cfg).double()
    for prm in casa.parameters():
        nn.init.normal_(prm, std=0.5)
    V = torch.randn(2, 8, 24, dtype=torch.float64)
    feats = torch.randn(2, 32, 16, dtype=torch.float64)
    got = casa(V, feats).detach().numpy()

    def ln(x, w, b):
        m = x.mean(-1, keepdims=True)
        return (x - m) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b
    P = {n: p.detach().numpy() for n, p in casa.named_parameters()}
    q = ln(V.numpy(), P["norm_q.weight"], P["norm_q.bias"]) @ P["q.weight"].T
    kv = ln(feats.numpy(), P["norm_kv.weight"], P["norm_kv.bias"])
    k, v = kv @ P["k.weight"].T, kv @ P["v.weight"].T
    s = q @ k.transpose(0, 2, 1) / math.sqrt(12)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    want = (a @ v) @ P["zeta.weight"].T + P["zeta.bias"]
    check(close(got, want, 1e-10), "CASA against numpy")

    a_, b_ = torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)
    want = float((1 - F.cosine_similarity(a_, b_, dim=-1)).mean())
    check(abs(float(ar.cos_loss(a_, b_)) - want) < 1e-12, "cos_loss == mean(1 - F.cosine_similarity)")


def test_adamw_and_schedule():
    cfg = ar.tiny_config(lr="1e-3", min_lr="1e-4", warmup="2", steps="5", weight_decay="0.3",
                         beta1="0.9", beta2="0.95", adam_eps="1e-8")
    want = [5e-4, 1e-3, 1e-3, 1e-4 + 9e-4 * 0.75, 1e-4 + 9e-4 * 0.25]
    check(close([ar.lr_at(cfg, s) for s in range(5)], want, 1e-15), "warm-up + cosine schedule")
    cfg.d.update(ema_start="0.9", ema_end="1")
    check(close([ar.ema_momentum(cfg, 0), ar.ema_momentum(cfg, 5), ar.ema_momentum(cfg, 2.5)],
                [0.9, 1.0, 0.95], 1e-15), "EMA momentum schedule")

    for clip in ("0", "0.5"):
        adamw_against_torch(cfg, clip, held_steps=0)
    # freeze_last_layer: w sits out steps 0-1 as DINO does it (clip over every gradient, then
    # w's gradient set to None, so torch's AdamW skips w and its own step count waits)
    for clip in ("0", "0.5"):
        adamw_against_torch(cfg, clip, held_steps=2)


def adamw_against_torch(cfg, clip, held_steps):
    """5 steps of ar.AdamW and torch.optim.AdamW on a weight w (decay) and a bias b (none),
    clipped to global norm `clip` ("0": not), w held out of steps s < held_steps."""
    cfg.d["clip"] = clip
    torch.manual_seed(4 + held_steps)
    w0 = [torch.randn(4, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    mine = [w.clone().requires_grad_(True) for w in w0]
    ref = [w.clone().requires_grad_(True) for w in w0]
    opt = ar.AdamW([("w", mine[0]), ("b", mine[1])], {"w": True, "b": False}, cfg)
    topt = torch.optim.AdamW([{"params": [ref[0]], "weight_decay": 0.3},
                              {"params": [ref[1]], "weight_decay": 0.0}],
                             lr=1.0, betas=(0.9, 0.95), eps=1e-8)
    x = torch.randn(6, 3, dtype=torch.float64)
    for s in range(5):
        for ps in (mine, ref):
            for p in ps:
                p.grad = None
            ((x @ ps[0].T + ps[1]).sin().sum() * 3).backward()
        if float(clip) > 0:
            torch.nn.utils.clip_grad_norm_(ref, float(clip))
        if s < held_steps:
            ref[0].grad = None
        for gr in topt.param_groups:
            gr["lr"] = ar.lr_at(cfg, s)
        opt.step(s, held=("w",) if s < held_steps else ())
        topt.step()
        if held_steps and s == held_steps - 1:
            check(torch.equal(mine[0].detach(), w0[0]) and torch.equal(ref[0].detach(), w0[0]),
                  "a held tensor is untouched (no update, no weight decay)")
    if held_steps:
        check(int(topt.state[ref[0]]["step"]) == 5 - held_steps and opt.t["w"] == 5 - held_steps,
              "a held tensor's step count waits (torch %s)" % topt.state[ref[0]]["step"])
    what = "AdamW (clip %s)" % clip
    if held_steps:
        what += " with a held tensor"
    check(close(mine[0].detach(), ref[0].detach(), 1e-12) and
          close(mine[1].detach(), ref[1].detach(), 1e-12),
          "%s == torch.optim.AdamW%s%s" % (what, " + clip_grad_norm_" if clip != "0" else "",
                                          ", its gradient None" if held_steps else ""))

def perturbed_copy(src, dst, dataset, fn):
    import h5py
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        a = np.array(f[dataset])
        f[dataset][...] = fn(a)
    return dst


def quiet(*_a, **_k):
    pass


def test_harness(tmp):
    cfgs = {m: ar.tiny_config(method=m, **ar.PARITY_OVERRIDES) for m in ("mae", "alice")}
    paths = {}
    for m, cfg in cfgs.items():
        paths[m] = os.path.join(tmp, "%s.h5" % m)
        ar.write_dump(paths[m], cfg, m, seed=7)
        fails = ar.compare_dump(paths[m])
        check(not fails, "%s: a PyTorch-written dump passes the comparer" % m)

    # the comparer must catch every kind of disagreement
    a = paths["alice"]
    cases = [
        ("grads/encoder.blocks.1.attn.qkv.weight", lambda g: g * (1 + 1e-3), "gradient"),
        ("grads/decoder.mask_token", lambda g: g + 1e-3 * np.linalg.norm(g), "gradient"),
        ("grads/casa.zeta.bias", lambda g: g * (1 + 1e-3), "gradient"),
        ("out/l_st", lambda v: v * (1 + 1e-3), "loss term l_st"),
        ("out/loss", lambda v: v * (1 + 1e-3), "loss term loss"),
        ("adam/losses", lambda v: v + np.eye(5)[3] * 1e-3 * v, "AdamW loss before step 3"),
        ("ema/target.head.fc1.weight", lambda v: v * (1 + 1e-3), "EMA target.head.fc1.weight"),
        ("params/casa.zeta.bias", lambda v: v + 1e-3, "init: casa.zeta.bias is not all zeros"),
        ("params/encoder.blocks.0.mlp.linear1.weight", lambda v: v * 2, "exceeds the Xavier bound"),
        ("params/target.head.fc2.bias", lambda v: v + 1e-3, "init: target.head.fc2.bias is not a copy"),
    ]
    for i, (ds, fn, expect) in enumerate(cases):
        p = perturbed_copy(a, os.path.join(tmp, "bad%d.h5" % i), ds, fn)
        fails = ar.compare_dump(p, log=quiet)
        check(any(expect in f for f in fails), "perturbed %s is caught (%s)" % (ds, "; ".join(fails)[:90]))

    # an EMA that was never applied: targets left at their initial values. Its plain relative
    # error is small (the EMA moves a target a little), the error-vs-change check catches it.
    import h5py
    p = os.path.join(tmp, "noema.h5")
    shutil.copy(a, p)
    with h5py.File(p, "r+") as f:
        for n in f["ema"]:
            f["ema"][n][...] = np.array(f["params"][n])
    fails = ar.compare_dump(p, log=quiet)
    check(any("of the EMA change" in f for f in fails), "EMA left out is caught")

    # a decay flag that disagrees with docs/MODEL.md
    p = os.path.join(tmp, "decay.h5")
    shutil.copy(a, p)
    with h5py.File(p, "r+") as f:
        f["params/encoder.norm.bias"].attrs["decay"] = np.int32(1)
    fails = ar.compare_dump(p, log=quiet)
    check(any("encoder.norm.bias has decay 1" in f for f in fails), "wrong decay flag is caught")

    # head_init = dino in the configuration, the head's weights Xavier: the init check names
    # the head's layers
    p = os.path.join(tmp, "dinohead.h5")
    shutil.copy(a, p)
    with h5py.File(p, "r+") as f:
        text = ar._attr_text(f.attrs["config"])
        assert "head_init = xavier\n" in text, "the dump's config has no head_init = xavier"
        f.attrs["config"] = text.replace("head_init = xavier\n", "head_init = dino\n")
    fails = ar.compare_dump(p, log=quiet)
    check(any("head.fc1.weight" in f and "normal(0, 0.02)" in f for f in fails) and
          any("head.last.weight" in f and "nn.Linear default" in f for f in fails),
          "head_init = dino with Xavier head weights is caught (%s)" % "; ".join(fails)[:90])

    # drop-path: a PyTorch-written dump with drop flags passes; one flag flipped (a branch the C
    # side dropped that the reference keeps) fails
    cfg = ar.tiny_config(method="alice", drop_path="0.5", **ar.PARITY_OVERRIDES)
    p = os.path.join(tmp, "drop.h5")
    ar.write_dump(p, cfg, "alice", seed=7)
    check(not ar.compare_dump(p, log=quiet), "drop_path: a PyTorch-written dump passes")
    p = perturbed_copy(p, os.path.join(tmp, "dropflip.h5"), "batch/drop_keep_u",
                       lambda k: np.where(np.arange(k.size).reshape(k.shape) == 3, 1 - k, k))
    fails = ar.compare_dump(p, log=quiet)
    check(any("gradient encoder." in f for f in fails),
          "a flipped drop-path flag is caught (%s)" % "; ".join(fails)[:90])

    # a tensor under a name docs/MODEL.md does not have is rejected with both names
    p = os.path.join(tmp, "renamed.h5")
    shutil.copy(paths["mae"], p)
    with h5py.File(p, "r+") as f:
        f.move("params/encoder.norm.weight", "params/encoder.final_norm.weight")
    try:
        ar.compare_dump(p, log=quiet)
        check(False, "renamed tensor is rejected")
    except ValueError as e:
        check("encoder.norm.weight" in str(e) and "encoder.final_norm.weight" in str(e),
              "renamed tensor is rejected naming both: %s" % str(e)[:80])


FAKE_TOOL = """#!%s
# stands in for $BUILD/tools/parity_dump: OUT.h5 [key=value ...] written by alice_ref itself
import sys
sys.path.insert(0, %r)
import alice_ref as ar
kv = dict(a.split("=", 1) for a in sys.argv[2:])
ar.write_dump(sys.argv[1], ar.tiny_config(**kv), kv.get("method", "alice"), seed=3)
"""


def test_driver(tmp):
    """parity_main end to end (tool invocation, overrides, exit codes) with a stand-in tool."""
    tools = os.path.join(tmp, "fakebuild", "tools")
    os.makedirs(tools)
    tool = os.path.join(tools, "parity_dump")
    with open(tool, "w") as f:
        f.write(FAKE_TOOL % (sys.executable, os.path.dirname(os.path.abspath(__file__))))
    old = os.environ.get("BUILD")
    os.environ["BUILD"] = os.path.join(tmp, "fakebuild")
    try:
        os.chmod(tool, 0o644)
        check(ar.parity_main("mae", [{}]) == 1, "parity_main fails (1) when the tool is missing")
        os.chmod(tool, 0o755)
        check(ar.parity_main("alice", [{}, {"use_casa": "0", "use_dv": "0", "w_st": "2"}]) == 0,
              "parity_main passes with a tool that agrees (alice, incl. no-CASA/no-dv variant)")
        with open(tool, "a") as f:   # a tool whose gradients are off by 1e-3
            f.write("import h5py\nwith h5py.File(sys.argv[1], 'r+') as f:\n"
                    "    g = f['grads/encoder.norm.bias']\n    g[...] = g[...] * 1.001\n")
        check(ar.parity_main("mae", [{}]) == 1, "parity_main fails with a tool that disagrees")
    finally:
        if old is None:
            del os.environ["BUILD"]
        else:
            os.environ["BUILD"] = old


def main():
    print("reference self-check (PyTorch %s)" % torch.__version__)
    test_patch_embedding()
    test_block_vs_torch_layer()
    test_drop_path_block()
    test_sincos()
    test_decoder_insertion_and_recon()
    test_casa_and_cos()
    test_adamw_and_schedule()
    tmp = tempfile.mkdtemp(prefix="alice_ref_")
    try:
        test_harness(tmp)
        test_driver(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch 1.13 reference of MONAI's UNETR (monai.networks.nets.UNETR), written out block by
block from MONAI's source so the state_dict names are MONAI's (test_unetr_monai.py checks it
against MONAI 1.3.2 itself, fetched by scripts/deps_monai.sh):

  UNETR(in_channels=1, out_channels=K, img_size=crop, feature_size=F, hidden_size=E,
        mlp_dim, num_heads, proj_type/pos_embed="conv" with a FIXED sin-cos position embedding
        (our ViT, pos_embed_type="sincos"), norm_name="instance", conv_block=True,
        res_block=True, dropout_rate=0, qkv_bias=False)

Blocks (monai/networks/blocks/dynunet_block.py, unetr_block.py):
  get_conv_layer -> Convolution(...) holding `.conv`: Conv3d(k, stride 1, padding (k-1)//2,
  bias=False) or ConvTranspose3d(k=stride=2, padding 0, bias=False); UnetOutBlock's conv has a
  bias. InstanceNorm3d(affine=False, eps 1e-5); LeakyReLU(0.01).
  UnetResBlock: lrelu(norm2(conv2(lrelu(norm1(conv1(x))))) + [norm3(conv3(x)) | x]), conv3
  (1x1x1) only when channels differ.
  UnetrPrUpBlock: transp_conv_init, then blocks[i] = Sequential(transp conv, UnetResBlock).
  UnetrUpBlock: transp_conv, cat((up, skip), dim=1), conv_block (UnetResBlock 2C -> C).
  UNETR.forward: x, hs = vit(x_in); enc1 = encoder1(x_in); enc2 = encoder2(proj(hs[3]));
  enc3 = encoder3(proj(hs[6])); enc4 = encoder4(proj(hs[9])); dec3 = decoder5(proj(x), enc4);
  dec2 = decoder4(dec3, enc3); dec1 = decoder3(dec2, enc2); out = decoder2(dec1, enc1);
  logits = out(out). proj(t) = t.view(B, gx, gy, gz, E).permute(0, 4, 1, 2, 3).
MONAI's ViT always has 12 blocks (hs[3], hs[6], hs[9]); for other depths the C model and this
reference take blocks k*depth//4, k = 1, 2, 3 (3, 6, 9 at depth 12).

Loss: MONAI DiceCELoss(to_onehot_y=True, softmax=True) = DiceLoss (background included,
smooth_nr = smooth_dr = 1e-5, mean over batch x class) + CrossEntropyLoss (mean over voxels).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref  # noqa: E402

NORM_EPS = 1e-5
LEAKY_SLOPE = 0.01
DICE_SMOOTH = 1e-5
PATCH = 16


class Conv(nn.Module):
    """MONAI Convolution with only its `conv` submodule (conv_only or act=norm=None)."""

    def __init__(self, cin, cout, k, transposed=False, bias=False):
        super().__init__()
        if transposed:
            self.conv = nn.ConvTranspose3d(cin, cout, k, stride=k, bias=bias)
        else:
            self.conv = nn.Conv3d(cin, cout, k, stride=1, padding=(k - 1) // 2, bias=bias)

    def forward(self, x):
        return self.conv(x)


class UnetResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = Conv(cin, cout, 3)
        self.conv2 = Conv(cout, cout, 3)
        self.lrelu = nn.LeakyReLU(LEAKY_SLOPE)
        self.norm1 = nn.InstanceNorm3d(cout, eps=NORM_EPS, affine=False)
        self.norm2 = nn.InstanceNorm3d(cout, eps=NORM_EPS, affine=False)
        self.downsample = cin != cout
        if self.downsample:
            self.conv3 = Conv(cin, cout, 1)
            self.norm3 = nn.InstanceNorm3d(cout, eps=NORM_EPS, affine=False)

    def forward(self, inp):
        residual = inp
        out = self.lrelu(self.norm1(self.conv1(inp)))
        out = self.norm2(self.conv2(out))
        if self.downsample:
            residual = self.norm3(self.conv3(residual))
        return self.lrelu(out + residual)


class UnetrBasicBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.layer = UnetResBlock(cin, cout)

    def forward(self, x):
        return self.layer(x)


class UnetrPrUpBlock(nn.Module):
    def __init__(self, cin, cout, num_layer):
        super().__init__()
        self.transp_conv_init = Conv(cin, cout, 2, transposed=True)
        self.blocks = nn.ModuleList([nn.Sequential(Conv(cout, cout, 2, transposed=True),
                                                   UnetResBlock(cout, cout))
                                     for _ in range(num_layer)])

    def forward(self, x):
        x = self.transp_conv_init(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class UnetrUpBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.transp_conv = Conv(cin, cout, 2, transposed=True)
        self.conv_block = UnetResBlock(2 * cout, cout)

    def forward(self, inp, skip):
        out = self.transp_conv(inp)
        return self.conv_block(torch.cat((out, skip), dim=1))


class UnetOutBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = Conv(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.conv(x)


class ViT(nn.Module):
    """MONAI ViT (classification=False) with a fixed sin-cos position embedding; returns the
    normed output and every block's output (hidden_states_out)."""

    def __init__(self, cfg):
        super().__init__()
        E = cfg.i("embed_dim")
        self.patch_embedding = alice_ref.PatchEmbedding(PATCH, E)
        # drop-path rates as timm's: linspace(0, drop_path, depth)
        depth = cfg.i("depth")
        dpr = [v.item() for v in torch.linspace(0, cfg.f("drop_path"), depth)]
        self.blocks = nn.ModuleList([alice_ref.Block(E, cfg.i("heads"), cfg.i("mlp_dim"), dpr[i])
                                     for i in range(depth)])
        self.norm = nn.LayerNorm(E, eps=alice_ref.LN_EPS)
        grid = tuple(n // PATCH for n in cfg.i3("crop"))
        self.register_buffer("pos", alice_ref.sincos_pos_embed(grid, E), persistent=False)

    def forward(self, x, keep=None):
        """keep: [B, depth, 2] drop-path flags (training), or None."""
        # Conv3d(1, E, 16, stride 16) + flatten(2).transpose(1, 2), as MONAI's PatchEmbeddingBlock
        t = self.patch_embedding.patch_embeddings(x).flatten(2).transpose(1, 2)
        t = t + self.pos.to(t.dtype).unsqueeze(0)
        hidden = []
        for i, blk in enumerate(self.blocks):
            t = blk(t, None if keep is None else keep[:, i])
            hidden.append(t)
        return self.norm(t), hidden


def skip_blocks(depth):
    return [k * depth // 4 for k in (1, 2, 3)]


class UNETR(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E, Fs, K = cfg.i("embed_dim"), cfg.i("feature_size"), cfg.i("num_classes")
        self.grid = tuple(n // PATCH for n in cfg.i3("crop"))
        self.E = E
        self.skips = skip_blocks(cfg.i("depth"))
        self.vit = ViT(cfg)
        self.encoder1 = UnetrBasicBlock(1, Fs)
        self.encoder2 = UnetrPrUpBlock(E, 2 * Fs, 2)
        self.encoder3 = UnetrPrUpBlock(E, 4 * Fs, 1)
        self.encoder4 = UnetrPrUpBlock(E, 8 * Fs, 0)
        self.decoder5 = UnetrUpBlock(E, 8 * Fs)
        self.decoder4 = UnetrUpBlock(8 * Fs, 4 * Fs)
        self.decoder3 = UnetrUpBlock(4 * Fs, 2 * Fs)
        self.decoder2 = UnetrUpBlock(2 * Fs, Fs)
        self.out = UnetOutBlock(Fs, K)

    def proj_feat(self, x):
        x = x.view(x.size(0), *self.grid, self.E)
        return x.permute(0, 4, 1, 2, 3).contiguous()

    def forward(self, x_in, keep=None):
        x, hs = self.vit(x_in, keep)
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(self.proj_feat(hs[self.skips[0]]))
        enc3 = self.encoder3(self.proj_feat(hs[self.skips[1]]))
        enc4 = self.encoder4(self.proj_feat(hs[self.skips[2]]))
        dec3 = self.decoder5(self.proj_feat(x), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        out = self.decoder2(dec1, enc1)
        return self.out(out)


def dice_ce(logits, labels):
    """MONAI DiceCELoss(to_onehot_y=True, softmax=True); labels [B, X, Y, Z] int64.
    Returns (loss, ce, dice)."""
    K = logits.shape[1]
    ce = F.cross_entropy(logits, labels)
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(labels, K).permute(0, 4, 1, 2, 3).to(p.dtype)
    dims = (2, 3, 4)
    inter = (p * y).sum(dims)
    den = p.sum(dims) + y.sum(dims)
    dice = (1.0 - (2.0 * inter + DICE_SMOOTH) / (den + DICE_SMOOTH)).mean()
    return ce + dice, ce, dice


def load_dump(path):
    import h5py
    with h5py.File(path, "r") as f:
        cfg = alice_ref.Cfg(alice_ref.parse_config_text(alice_ref._attr_text(f.attrs["config"])))
        d = dict(path=path, cfg=cfg)
        d["params"] = {}
        d["grads"] = {}

        def collect(group, out):
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    out[name] = np.array(obj)
            f[group].visititems(visit)
        collect("params", d["params"])
        collect("grads", d["grads"])
        d["image"] = np.array(f["batch/image"])
        d["label"] = np.array(f["batch/label"])
        d["drop_keep"] = np.array(f["batch/drop_keep"]) if "batch/drop_keep" in f else None
        if cfg.f("drop_path") > 0 and d["drop_keep"] is None:
            raise ValueError("%s: /batch/drop_keep missing (drop_path = %g)"
                             % (path, cfg.f("drop_path")))
        d["out"] = {k: float(np.array(f["out/" + k]).reshape(-1)[0]) for k in ("loss", "ce", "dice")}
        d["logits"] = np.array(f["out/logits"])
    return d


def build_from_dump(dump, dtype):
    model = UNETR(dump["cfg"]).to(dtype)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(dump["params"]))
    extra = sorted(set(dump["params"]) - set(own))
    if missing or extra:
        raise ValueError("%s: parameter names differ from MONAI's UNETR: missing %s, unexpected %s"
                         % (dump["path"], missing, extra))
    with torch.no_grad():
        for n, p in own.items():
            a = dump["params"][n]
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError("%s: /params/%s has shape %s, MONAI's is %s"
                                 % (dump["path"], n, a.shape, tuple(p.shape)))
            p.copy_(torch.from_numpy(a.astype(np.float64)))
    return model


def reference_run(dump, dtype):
    model = build_from_dump(dump, dtype)
    x = torch.from_numpy(dump["image"]).to(dtype)
    y = torch.from_numpy(dump["label"].astype(np.int64))
    kinks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.LeakyReLU):
            mod.register_forward_hook(
                lambda mo, i, o, name=name: kinks.append((float(i[0].detach().abs().min()), name)))
    keep = dump["drop_keep"]
    keep = None if keep is None else torch.from_numpy(keep.astype(np.int64))
    logits = model(x, keep)
    loss, ce, dice = dice_ce(logits, y)
    model.zero_grad()
    loss.backward()
    return dict(out=dict(loss=float(loss.detach()), ce=float(ce.detach()),
                         dice=float(dice.detach())), kink=min(kinks),
                logits=logits.detach().numpy(),
                grads={n: p.grad.detach().numpy() for n, p in model.named_parameters()})


def compare_dump(path, tol=1e-4, show=8, log=print):
    """A gradient passes when C is within tol of torch fp32, or -- where the gradient itself is
    ill-conditioned (e.g. encoder1's conv3 weight: instance-norm gradients have zero mean and
    meet a nearly constant input, so the sum cancels) -- when C is no further from the fp64
    reference than 3x torch fp32 is. A LeakyReLU input within fp32 round-off of 0 can flip its
    slope between implementations; the smallest |input| is printed to diagnose such cases."""
    dump = load_dump(path)
    ref = reference_run(dump, torch.float32)
    ref64 = reference_run(dump, torch.float64)
    fails = []
    rel = alice_ref.rel_err
    log("unetr parity %s: depth %s, %d parameter tensors, skips from blocks %s"
        % (path, dump["cfg"].s("depth"), len(dump["params"]), skip_blocks(dump["cfg"].i("depth"))))
    if dump["drop_keep"] is not None:
        flags = dump["drop_keep"][:, 1:]   # block 0 never drops
        dropped = int((flags == 0).sum())
        log("  drop-path: %d of %d branches of blocks 1.. dropped" % (dropped, flags.size))
        if dropped == 0 or dropped == flags.size:
            fails.append("the dump's drop-path draws drop %d of %d branches: choose a drop_path "
                         "or seed that drops some and keeps some" % (dropped, flags.size))
    log("  %-8s %16s %16s %10s %10s" % ("term", "C", "torch fp32", "rel err", "fp32-fp64"))
    for k in ("loss", "ce", "dice"):
        c, t, t64 = dump["out"][k], ref["out"][k], ref64["out"][k]
        e = rel(c, t)
        log("  %-8s %16.9g %16.9g %10.2e %10.2e" % (k, c, t, e, rel(t, t64)))
        if not e <= tol:
            fails.append("loss term %s: C %.9g vs torch %.9g (rel %.2e > %g)" % (k, c, t, e, tol))
    e = rel(dump["logits"], ref["logits"])
    log("  logits rel err %.2e (fp32-fp64 %.2e)" % (e, rel(ref["logits"], ref64["logits"])))
    if not e <= tol:
        fails.append("logits: rel err %.2e > %g" % (e, tol))
    errs = []
    for n in sorted(ref["grads"]):
        if n not in dump["grads"]:
            fails.append("gradient %s missing from the dump" % n)
            continue
        c, t = dump["grads"][n], ref["grads"][n]
        errs.append((rel(c, t), n, rel(t, ref64["grads"][n]), float(np.linalg.norm(t)),
                     rel(c, ref64["grads"][n])))
    errs.sort(reverse=True)
    log("  smallest |LeakyReLU input| (fp64): %.2e in %s" % ref64["kink"])
    log("  gradients (worst %d of %d): rel err, fp32-fp64, ||g||, C-fp64"
        % (min(show, len(errs)), len(errs)))
    for e, n, e64, gn, c64 in errs[:show]:
        log("    %-50s %10.2e %10.2e %10.3e %10.2e" % (n, e, e64, gn, c64))
    for e, n, e64, gn, c64 in errs:
        if not (e <= tol or c64 <= max(tol, 3.0 * e64)):
            fails.append("gradient %s: rel err %.2e > %g (C-fp64 %.2e, torch fp32-fp64 %.2e)"
                         % (n, e, tol, c64, e64))
        if gn == 0.0:
            fails.append("gradient %s is zero in the reference: the test does not see it" % n)
    log("  %s" % ("PASS" if not fails else "FAIL: %d problems" % len(fails)))
    for f in fails[:20]:
        log("    " + f)
    return fails

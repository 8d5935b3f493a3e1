"""PyTorch reference of the Alice models (docs/MODEL.md is the contract), the parity-dump
loader and comparer, and a writer that emits the same dump layout from PyTorch itself.

Everything here follows docs/MODEL.md literally so that a disagreement with the C side points
at one of the two implementations, not at a convention: parameter names are the registry
names, qkv columns are ordered [3, heads, W/heads], patches are flattened (px*p + py)*p + pz.
PyTorch 1.13 (Debian) has no scaled_dot_product_attention, so attention is written out.

Dump layout (written by `$BUILD/tools/parity_dump OUT.h5 [key=value ...]`, read by load_dump):
  attrs config ("key = value" lines), method ("mae" | "alice")
  /params/<name>  float32, attribute decay (1 = AdamW weight decay applies)
  /batch/u, /batch/perm_u (+ r, perm_r, w, v for alice)
  /out/{loss,l_r,l_dv,l_st} float64 [1]
  /grads/<name>   float32, every online tensor
  /adam/losses    float64 [5]
  /ema/<target name> float32 (alice: targets after the first step's EMA update)
  /centers/center.{cls,tokens} float32 (align_loss = dino: the centers after the first update)
"""
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "analysis"))
from alice_config import parse_config_text  # noqa: E402,F401  (one reading of the text)

LN_EPS = 1e-5          # LayerNorm eps (MONAI / PyTorch default)
NORM_PIX_EPS = 1e-6    # per-patch target normalisation, as MAE
L2_EPS = 1e-12         # l2normalize: x / max(||x||, eps), as F.normalize
COS_EPS = 1e-8         # cos(a, b) = a.b / max(||a|| ||b||, eps), as F.cosine_similarity
CLIP_EPS = 1e-6        # global-norm clipping: scale = clip / (norm + eps), as clip_grad_norm_
ADAM_STEPS = 5         # AdamW steps recorded in /adam/losses

# Overrides the parity tests pass to the dump tool (and the PyTorch writer): a learning rate
# large enough that 5 AdamW steps move the loss well beyond the tolerance, both branches of the
# schedule (warm-up 2 of 5 steps, cosine to a non-zero min_lr), a visible weight decay, and an
# EMA momentum far from 1 so that the EMA check sees the update. clip = 0 here; Adam is nearly
# invariant to a gradient scale, so the tests check clipping in a variant with a large adam_eps
# (CLIP_VARIANT_EPS), where clipping changes the 5 losses by about 1e-2.
PARITY_OVERRIDES = dict(lr="1e-3", min_lr="1e-4", warmup="2", steps="5", weight_decay="0.5",
                        ema_start="0.5", ema_end="1", clip="0")
CLIP_VARIANT_EPS = "1e-2"
# A grid with three different sides (3 x 2 x 5 tokens), an odd batch and head count, two decoder
# blocks: an axis swapped in patchify, the position embedding or the token order cannot hide
# behind the 4 x 4 x 2 grid of the default tiny crop.
ODD_SHAPE_VARIANT = dict(crop="12,8,20", batch="3", heads="3", embed_dim="18", dec_depth="2",
                         casa_dim="6")


# ----------------------------------------------------------------------------- configuration

def registry_defaults(path=os.path.join(REPO, "src", "core", "config_keys.c")):
    """Defaults of every key, read from the C registry so there is one source of truth."""
    with open(path) as f:
        text = f.read()
    pat = re.compile(r'K\("(\w+)",\s*CFG_T_\w+,\s*\w+,\s*"([^"]*)"')
    return {k: v for k, v in pat.findall(text)}


class Cfg:
    """Typed view of a string config dict (the dump's resolved config or registry defaults)."""

    def __init__(self, d):
        self.d = dict(d)

    def s(self, k):
        if k not in self.d:
            raise KeyError("config key '%s' missing (have: %s)" % (k, ", ".join(sorted(self.d))))
        return self.d[k]

    def i(self, k):
        return int(self.s(k))

    def f(self, k):
        return float(self.s(k))

    def b(self, k):
        v = self.s(k).lower()
        if v in ("1", "true", "yes", "on"):
            return True
        if v in ("0", "false", "no", "off"):
            return False
        raise ValueError("config key %s: %r is not a boolean" % (k, v))

    def i3(self, k):
        v = [int(x) for x in re.split(r"[,x\s]+", self.s(k).strip())]
        if len(v) != 3:
            raise ValueError("config key %s: %r is not X,Y,Z" % (k, self.s(k)))
        return v

    def text(self):
        return "".join("%s = %s\n" % (k, v) for k, v in self.d.items())


def tiny_config(**overrides):
    """Registry defaults with the tiny parity model of the brief (and any overrides)."""
    d = registry_defaults()
    d.update(crop="16,16,8", patch="4", embed_dim="24", depth="2", heads="2", mlp_dim="48",
             dec_dim="12", dec_depth="1", dec_heads="2", dec_mlp_dim="24", head_hidden="16",
             head_bottleneck="8", head_out="16", casa_dim="12", batch="2", clip="0")
    d.update({k: str(v) for k, v in overrides.items()})
    return Cfg(d)


# ----------------------------------------------------------------------------- fixed pieces

def grid_of(cfg):
    p = cfg.i("patch")
    X, Y, Z = cfg.i3("crop")
    for name, n in zip("XYZ", (X, Y, Z)):
        if n % p:
            raise ValueError("crop %s=%d is not divisible by patch %d" % (name, n, p))
    return X // p, Y // p, Z // p


def num_visible(cfg, n_tokens):
    # float32 arithmetic like the C side (Config.mask_ratio is a float)
    masked = int(np.floor(np.float32(cfg.f("mask_ratio")) * np.float32(n_tokens)))
    return n_tokens - masked


def sincos_pos_embed(grid, dim, dtype=torch.float32):
    """MONAI build_sincos_position_embedding(grid, dim, spatial_dims=3, temperature=10000)."""
    if dim % 6:
        raise ValueError("width %d is not divisible by 6 (3D sin-cos position embedding)" % dim)
    gh, gw, gd = torch.meshgrid(*[torch.arange(g, dtype=torch.float32) for g in grid],
                                indexing="ij")
    k = dim // 6
    omega = 1.0 / (10000.0 ** (torch.arange(k, dtype=torch.float32) / k))
    oh, ow, od = (torch.einsum("m,d->md", g.flatten(), omega) for g in (gh, gw, gd))
    pos = torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos(), od.sin(), od.cos()], dim=1)
    return pos.to(dtype)


def patchify(x, p):
    """[B, 1, X, Y, Z] -> [B, N, p^3]; token (ix*gy + iy)*gz + iz, element (px*p + py)*p + pz."""
    B, C, X, Y, Z = x.shape
    assert C == 1
    gx, gy, gz = X // p, Y // p, Z // p
    t = x.reshape(B, gx, p, gy, p, gz, p).permute(0, 1, 3, 5, 2, 4, 6)
    return t.reshape(B, gx * gy * gz, p * p * p)


def gather_tokens(x, idx):
    """x [B, N, C], idx [B, n] -> [B, n, C]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def l2normalize(x):
    return x / x.norm(dim=-1, keepdim=True).clamp_min(L2_EPS)


def cos_loss(a, b):
    """mean over all leading positions of 1 - cos(a, b); b is a target (detached)."""
    b = b.detach()
    norms = (a * a).sum(-1) * (b * b).sum(-1)
    cos = (a * b).sum(-1) / norms.clamp_min(COS_EPS * COS_EPS).sqrt()
    return (1.0 - cos).mean()


def teacher_temp_at(cfg, step):
    """DINO's teacher temperature schedule: np.linspace(warmup_teacher_temp, teacher_temp,
    warmup_teacher_temp_steps) for the first steps, teacher_temp after."""
    warmup = cfg.i("warmup_teacher_temp_steps")
    if step >= warmup:
        return cfg.f("teacher_temp")
    return float(np.linspace(cfg.f("warmup_teacher_temp"), cfg.f("teacher_temp"), warmup)[step])


def dino_loss(s, t, center, cfg, teacher_temp):
    """align_loss = dino: mean over all leading positions of
    -sum_k softmax((t - center) / teacher_temp)_k log softmax(s / student_temp)_k; t is a
    detached target (DINO's centred, sharpened teacher)."""
    p = F.softmax((t.detach() - center) / teacher_temp, dim=-1)
    return -(p * F.log_softmax(s / cfg.f("student_temp"), dim=-1)).sum(-1).mean()


# ----------------------------------------------------------------------------- modules

class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        if width % heads:
            raise ValueError("width %d is not divisible by heads %d" % (width, heads))
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):
        B, n, W = x.shape
        hd = W // self.heads
        qkv = self.qkv(x).reshape(B, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # [B, heads, n, hd]
        att = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, n, W)
        return self.out_proj(o)


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.linear1 = nn.Linear(width, hidden)
        self.linear2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.linear2(F.gelu(self.linear1(x)))     # exact (erf) GELU


def drop_path(x, keep, drop_prob):
    """timm's DropPath in training: x.div(keep_prob) * the per-sample 0/1 keep flags (keep [B],
    drawn by the dump's producer); the identity at drop_prob 0, as timm's nn.Identity."""
    if keep is None or drop_prob == 0.0:
        return x
    keep_prob = 1.0 - drop_prob
    return x.div(keep_prob) * keep.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


class Block(nn.Module):
    """MONAI TransformerBlock, pre-norm; with drop_prob > 0 timm's drop-path on both branches
    (DINO's and the released code's Block)."""

    def __init__(self, width, heads, mlp, drop_prob=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LN_EPS)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, mlp)
        self.drop_prob = drop_prob

    def forward(self, x, keep=None):
        """keep: [B, 2] flags of the attention and MLP branches, or None (no drop-path)."""
        x = x + drop_path(self.attn(self.norm1(x)), None if keep is None else keep[:, 0],
                          self.drop_prob)
        return x + drop_path(self.mlp(self.norm2(x)), None if keep is None else keep[:, 1],
                             self.drop_prob)


class PatchEmbedding(nn.Module):
    def __init__(self, patch, width):
        super().__init__()
        # MONAI name; applied as patchify + linear (same numbers as Conv3d(stride=p) on the crop)
        self.patch_embeddings = nn.Conv3d(1, width, patch, stride=patch)


class Encoder(nn.Module):
    """ViT on the visible tokens of a crop (all tokens when idx is None)."""

    def __init__(self, cfg):
        super().__init__()
        E = cfg.i("embed_dim")
        self.patch = cfg.i("patch")
        self.patch_embedding = PatchEmbedding(self.patch, E)
        # DINO / timm: dpr = linspace(0, drop_path_rate, depth)
        depth = cfg.i("depth")
        dpr = [v.item() for v in torch.linspace(0, cfg.f("drop_path"), depth)]
        self.blocks = nn.ModuleList([Block(E, cfg.i("heads"), cfg.i("mlp_dim"), dpr[i])
                                     for i in range(depth)])
        self.norm = nn.LayerNorm(E, eps=LN_EPS)
        self.register_buffer("pos", sincos_pos_embed(grid_of(cfg), E), persistent=False)

    def forward(self, x, idx=None, keep=None):
        """keep: [B, depth, 2] drop-path flags (the student in training), or None."""
        conv = self.patch_embedding.patch_embeddings
        w = conv.weight.reshape(conv.weight.shape[0], -1)
        patches = patchify(x, self.patch)
        pos = self.pos.unsqueeze(0).expand(x.shape[0], -1, -1)
        if idx is not None:
            patches = gather_tokens(patches, idx)
            pos = gather_tokens(pos, idx)
        t = F.linear(patches, w, conv.bias) + pos
        for i, blk in enumerate(self.blocks):
            t = blk(t, None if keep is None else keep[:, i])
        return self.norm(t)


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        E, D, p = cfg.i("embed_dim"), cfg.i("dec_dim"), cfg.i("patch")
        self.decoder_embed = nn.Linear(E, D)
        self.mask_token = nn.Parameter(torch.zeros(D))
        self.blocks = nn.ModuleList([Block(D, cfg.i("dec_heads"), cfg.i("dec_mlp_dim"))
                                     for _ in range(cfg.i("dec_depth"))])
        self.norm = nn.LayerNorm(D, eps=LN_EPS)
        self.pred = nn.Linear(D, p ** 3)
        self.register_buffer("pos", sincos_pos_embed(grid_of(cfg), D), persistent=False)

    def forward(self, V, perm):
        """V [B, nvis, E], perm [B, N] -> H [B, N, D], pred [B, N, P]."""
        H = self.features(V, perm)
        return H, self.pred(H)

    def features(self, V, perm):
        """H [B, N, D] alone (the teacher reads no voxel prediction)."""
        B, nvis, _ = V.shape
        z = self.decoder_embed(V)
        D = z.shape[-1]
        # .to(z.dtype): under bf16 autocast z is bf16 and scatter needs one dtype (no-op in fp32)
        full = self.mask_token.to(z.dtype).reshape(1, 1, D).expand(B, perm.shape[1], D)
        full = full.scatter(1, perm[:, :nvis].unsqueeze(-1).expand(-1, -1, D), z)
        full = full + self.pos.unsqueeze(0)
        for blk in self.blocks:
            full = blk(full)
        return self.norm(full)


class TargetDecoder(nn.Module):
    """teacher_decoder = embed: the target branch keeps only the decoder's input projection
    (docs/MODEL.md)."""

    def __init__(self, cfg):
        super().__init__()
        self.decoder_embed = nn.Linear(cfg.i("embed_dim"), cfg.i("dec_dim"))

    def features(self, V, perm):
        return self.decoder_embed(V)


class Head(nn.Module):
    """DINO-style head: 3-layer MLP, l2-normalised bottleneck, bias-free last layer; with
    head_norm_last the last layer's weight rows are l2-normalised (DINO's weight_norm with its
    gain fixed at 1: W_k / max(||W_k||, eps), as bn)."""

    def __init__(self, cfg):
        super().__init__()
        self.norm_last = cfg.b("head_norm_last")
        D, hid = cfg.i("dec_dim"), cfg.i("head_hidden")
        bott, out = cfg.i("head_bottleneck"), cfg.i("head_out")
        self.fc1 = nn.Linear(D, hid)
        self.fc2 = nn.Linear(hid, hid)
        self.fc3 = nn.Linear(hid, bott)
        self.last = nn.Linear(bott, out, bias=False)

    def forward(self, x):
        h = F.gelu(self.fc1(x))
        h = F.gelu(self.fc2(h))
        bn = l2normalize(self.fc3(h))
        if self.norm_last:
            return F.linear(bn, l2normalize(self.last.weight))
        return self.last(bn)


class Casa(nn.Module):
    """Cross attention: queries from V, keys/values from the heads' outputs (casa_kv = heads)
    or from the features before the heads, dec_dim wide (features). casa_layer = single:
    one head and zeta (eqs. 3-4); transformer: the query projected into the heads' space
    (q_in), casa_heads heads, post-norm residual blocks around the attention and a ReLU
    feed-forward (the released code's layer, docs/MODEL.md)."""

    def __init__(self, cfg):
        super().__init__()
        E, C, out = cfg.i("embed_dim"), cfg.i("casa_dim"), cfg.i("head_out")
        self.transformer = cfg.s("casa_layer") == "transformer"
        self.heads = cfg.i("casa_heads") if self.transformer else 1
        self.norm_q = nn.LayerNorm(E, eps=LN_EPS)
        kv = cfg.i("dec_dim") if cfg.s("casa_kv") == "features" else out
        self.norm_kv = nn.LayerNorm(kv, eps=LN_EPS)
        self.q = nn.Linear(out if self.transformer else E, C, bias=False)
        self.k = nn.Linear(kv, C, bias=False)
        self.v = nn.Linear(kv, C, bias=False)
        self.zeta = nn.Linear(C, out)
        if self.transformer:
            ffn = cfg.i("casa_ffn_dim")
            self.q_in = nn.Linear(E, out)
            self.norm1 = nn.LayerNorm(out, eps=LN_EPS)
            self.ffn1 = nn.Linear(out, ffn)
            self.ffn2 = nn.Linear(ffn, out)
            self.norm2 = nn.LayerNorm(out, eps=LN_EPS)

    def forward(self, V, feats):
        x0 = self.q_in(self.norm_q(V)) if self.transformer else None
        q = self.q(x0) if self.transformer else self.q(self.norm_q(V))
        # autocast runs LayerNorm in fp32 on CUDA but not on the CPU (torch 1.13), where bf16
        # features meet fp32 weights: cast to the weights' dtype (a no-op without autocast)
        kv = self.norm_kv(feats.to(self.norm_kv.weight.dtype))
        k, v = self.k(kv), self.v(kv)
        B, Tq, C = q.shape
        H, dh = self.heads, C // self.heads
        q, k, v = (t.reshape(B, t.shape[1], H, dh).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dh)), dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, Tq, C)
        if not self.transformer:
            return self.zeta(a)
        y1 = self.norm1(x0 + self.zeta(a))
        return self.norm2(y1 + self.ffn2(torch.relu(self.ffn1(y1))))


class Target(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        # teacher_decoder = full: the whole decoder over all tokens, so psi reads what phi reads
        # (the decoder's final LayerNorm output)
        self.decoder = Decoder(cfg) if cfg.s("teacher_decoder") == "full" else TargetDecoder(cfg)
        self.head = Head(cfg)
        if cfg.s("cls_source") == "encoder":
            self.cls_proj = nn.Linear(cfg.i("embed_dim"), cfg.i("dec_dim"))

    def features(self, x):
        """psi's input for an intact view x: all N tokens, in order."""
        return self.features_and_tokens(x)[0]

    def features_and_tokens(self, x):
        """features(x) and the target encoder's output Y behind them."""
        Y = self.encoder(x)
        order = torch.arange(Y.shape[1], device=Y.device).expand(Y.shape[0], -1)
        return self.decoder.features(Y, order), Y


class AliceModel(nn.Module):
    """method = mae: encoder + decoder. method = alice: + head, casa and the EMA target."""

    def __init__(self, cfg, method=None):
        super().__init__()
        self.cfg = cfg
        self.step = 0   # 0-based optimiser step: DINO's teacher temperature follows it
        self.method = method or cfg.s("method")
        if self.method not in ("mae", "alice"):
            raise ValueError("method %r is not mae|alice" % self.method)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if self.method == "alice":
            self.head = Head(cfg)
            self.casa = Casa(cfg)
            if cfg.s("cls_source") == "encoder":   # l_dv's [cls]: head(cls_proj(mean V))
                self.cls_proj = nn.Linear(cfg.i("embed_dim"), cfg.i("dec_dim"))
            self.target = Target(cfg)
            for p in self.target.parameters():
                p.requires_grad_(False)
        # align_loss = dino: the teacher centers are state, not parameters (start at zero)
        self.dino = self.method == "alice" and cfg.s("align_loss") == "dino"
        if self.dino:
            self.register_buffer("center_cls", torch.zeros(cfg.i("head_out")))
            self.register_buffer("center_tokens", torch.zeros(cfg.i("head_out")))

    def online_names(self):
        return [n for n, p in self.named_parameters() if not n.startswith("target.")]

    def target_names(self):
        return [n for n, _ in self.named_parameters() if n.startswith("target.")]


# ----------------------------------------------------------------------------- losses

def recon_loss(pred, x, perm, nvis, patch, norm_pix, every_token=False):
    """l_r (eq. 1): MSE over the masked patches (every_token: over all, rec_region = all),
    per-patch normalised targets with norm_pix."""
    target = patchify(x, patch)
    if norm_pix:
        mean = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True)   # unbiased, as MAE's norm_pix_loss
        target = (target - mean) / torch.sqrt(var + NORM_PIX_EPS)
    masked = perm if every_token else perm[:, nvis:]
    err = (gather_tokens(pred, masked) - gather_tokens(target, masked)) ** 2
    return err.mean(-1).sum() / masked.numel()


def forward_loss(model, batch):
    """Loss terms of one step. batch: tensors u, perm_u (long) [, r, perm_r, w, v].
    Returns dict loss, l_r, l_dv, l_st (0-dim tensors; switched-off terms are 0)."""
    cfg = model.cfg
    p, norm_pix = cfg.i("patch"), cfg.b("norm_pix")
    N = batch["perm_u"].shape[1]
    nvis = num_visible(cfg, N)

    def online(x, perm, keep):
        V = model.encoder(x, perm[:, :nvis], keep)
        H, pred = model.decoder(V, perm)
        return V, H, recon_loss(pred, x, perm, nvis, p, norm_pix,
                                cfg.s("rec_region") == "all")

    V_u, H_u, lr_q = online(batch["u"], batch["perm_u"], batch.get("drop_keep_u"))
    zero = lr_q.new_zeros(())
    if model.method == "mae":
        l_r = lr_q
        return dict(loss=cfg.f("w_rec") * l_r, l_r=l_r, l_dv=zero, l_st=zero)

    V_r, H_r, lr_k = online(batch["r"], batch["perm_r"], batch.get("drop_keep_r"))
    l_r = 0.5 * (lr_q + lr_k)
    cls_encoder = cfg.s("cls_source") == "encoder"
    with torch.no_grad():
        t = model.target
        (f_w, Y_w), (f_v, Y_v) = (t.features_and_tokens(batch[k]) for k in ("w", "v"))
        psi_w, psi_v = t.head(f_w), t.head(f_v)
        if cls_encoder:
            cls_w, cls_v = (t.head(t.cls_proj(Y.mean(1))) for Y in (Y_w, Y_v))
        else:
            cls_w, cls_v = psi_w.mean(1), psi_v.mean(1)
    phi_u, phi_r = model.head(H_u), model.head(H_r)
    if cls_encoder:
        cls_u, cls_r = (model.head(model.cls_proj(V.mean(1))) for V in (V_u, V_r))
    else:
        cls_u, cls_r = phi_u.mean(1), phi_r.mean(1)

    def align(s, t, center):
        return (dino_loss(s, t, center, cfg, teacher_temp_at(cfg, model.step)) if model.dino
                else cos_loss(s, t))

    l_dv = zero
    c_cls = model.center_cls if model.dino else None
    c_tok = model.center_tokens if model.dino else None
    if cfg.b("use_dv"):
        l_dv = align(cls_u, cls_v, c_cls) + align(cls_r, cls_w, c_cls)

    if cfg.b("use_casa"):
        # casa_kv = features: keys and values from H and the teacher's features (the heads'
        # inputs), as the paper's eqs. 3-5 read LN(H) and LN(Y)
        kv_features = cfg.s("casa_kv") == "features"
        kv_u, kv_r = (H_u, H_r) if kv_features else (phi_u, phi_r)
        kv_w, kv_v = (f_w, f_v) if kv_features else (psi_w, psi_v)
        S_u, S_r = model.casa(V_u, kv_u), model.casa(V_r, kv_r)
        with torch.no_grad():
            T_w, T_v = model.casa(V_u, kv_w), model.casa(V_r, kv_v)
        l_st = align(S_u, T_w, c_tok) + align(S_r, T_v, c_tok)
        teacher_tokens = (T_w, T_v)
    else:
        vis_u, vis_r = batch["perm_u"][:, :nvis], batch["perm_r"][:, :nvis]
        teacher_tokens = (gather_tokens(psi_w, vis_u), gather_tokens(psi_v, vis_r))
        l_st = (align(gather_tokens(phi_u, vis_u), teacher_tokens[0], c_tok)
                + align(gather_tokens(phi_r, vis_r), teacher_tokens[1], c_tok))
    # the teacher rows of this step, for the DINO center update after the step
    model.teacher_rows = dict(cls=torch.cat([cls_w, cls_v]).detach(),
                              tokens=torch.cat([t.reshape(-1, t.shape[-1]) for t in teacher_tokens]).detach())

    loss = cfg.f("w_rec") * l_r + cfg.f("w_dv") * l_dv + cfg.f("w_st") * l_st
    return dict(loss=loss, l_r=l_r, l_dv=l_dv, l_st=l_st)


# ----------------------------------------------------------------------------- optimisation

def lr_at(cfg, s):
    """Linear warm-up then cosine to min_lr; s is the 0-based step. With lr_reference_batch
    = N > 0 the peak is lr x batch / N (one process: the global batch is the batch)."""
    lr, min_lr, warmup, steps = cfg.f("lr"), cfg.f("min_lr"), cfg.i("warmup"), cfg.i("steps")
    if cfg.i("lr_reference_batch") > 0:
        lr = lr * cfg.i("batch") / cfg.i("lr_reference_batch")
    if s < warmup:
        return lr * (s + 1) / warmup
    span = max(steps - warmup, 1)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (s - warmup) / span))


def ema_momentum(cfg, s):
    a, b, steps = cfg.f("ema_start"), cfg.f("ema_end"), cfg.i("steps")
    return b - (b - a) * (math.cos(math.pi * s / steps) + 1.0) / 2.0


def weight_decay_at(cfg, s):
    """weight_decay_schedule: constant, or DINO's utils.cosine_scheduler(weight_decay,
    weight_decay_end, ...) without warm-up: end + (wd - end)(1 + cos(pi s / steps)) / 2."""
    wd = cfg.f("weight_decay")
    if cfg.s("weight_decay_schedule") != "cosine":
        return wd
    end = cfg.f("weight_decay_end")
    return end + 0.5 * (wd - end) * (1.0 + math.cos(math.pi * s / cfg.i("steps")))


class AdamW:
    """Decoupled AdamW written out: p -= lr*wd*p (decay tensors only), then
    p -= lr * mhat / (sqrt(vhat) + eps) with bias correction at step s+1. Global-norm
    clipping first when clip > 0 (clip_mode = per_tensor: each tensor by its own norm, DINO's
    utils.clip_gradients). Tensors named in `held` sit the step out after the clipping (DINO's
    cancel_gradients_last_layer sets their gradient to None): no update, no decay, and their
    own step count, the t of their bias corrections, does not advance (torch counts steps per
    tensor). Mathematically the same as torch.optim.AdamW (checked by
    test_reference_selfcheck.py)."""

    def __init__(self, named_params, decay, cfg):
        self.params = list(named_params)        # [(name, tensor)]
        self.decay = decay                      # name -> bool
        self.cfg = cfg
        self.m = {n: torch.zeros_like(p) for n, p in self.params}
        self.v = {n: torch.zeros_like(p) for n, p in self.params}
        self.t = {n: 0 for n, _ in self.params}

    @torch.no_grad()
    def step(self, s, held=()):
        cfg = self.cfg
        lr, wd = lr_at(cfg, s), weight_decay_at(cfg, s)
        b1, b2, eps, clip = cfg.f("beta1"), cfg.f("beta2"), cfg.f("adam_eps"), cfg.f("clip")
        grads = {n: p.grad for n, p in self.params}
        if clip > 0 and cfg.s("clip_mode") == "per_tensor":
            scales = {n: clip / (math.sqrt(float((g.double() ** 2).sum())) + CLIP_EPS)
                      for n, g in grads.items()}
            grads = {n: g * scales[n] if scales[n] < 1.0 else g for n, g in grads.items()}
        elif clip > 0:
            norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads.values()))
            scale = clip / (norm + CLIP_EPS)
            if scale < 1.0:
                grads = {n: g * scale for n, g in grads.items()}
        for n, p in self.params:
            if n in held:
                continue
            g = grads[n]
            self.t[n] += 1
            bc1, bc2 = 1.0 - b1 ** self.t[n], 1.0 - b2 ** self.t[n]
            if self.decay[n]:
                p.sub_(lr * wd * p)
            self.m[n].mul_(b1).add_((1.0 - b1) * g)
            self.v[n].mul_(b2).add_((1.0 - b2) * g * g)
            mhat, vhat = self.m[n] / bc1, self.v[n] / bc2
            p.sub_(lr * mhat / (vhat.sqrt() + eps))


@torch.no_grad()
def ema_update(model, s):
    m = ema_momentum(model.cfg, s)
    online = dict(model.named_parameters())
    for name in model.target_names():
        t = online[name]
        t.mul_(m).add_((1.0 - m) * online[name[len("target."):]])


@torch.no_grad()
def update_centers(model):
    """align_loss = dino, after the step: c <- m c + (1 - m) mean over rows of the step's
    teacher outputs (one rank here)."""
    m = model.cfg.f("center_momentum")
    model.center_cls.mul_(m).add_((1.0 - m) * model.teacher_rows["cls"].mean(0))
    model.center_tokens.mul_(m).add_((1.0 - m) * model.teacher_rows["tokens"].mean(0))


def default_decay(name, tensor):
    """Weight matrices (and the patch-embedding kernel) decay; biases, norms, mask_token don't."""
    return len(tensor.shape) >= 2     # torch tensor or numpy array


# ----------------------------------------------------------------------------- init (writer)

def init_params(model, seed):
    """docs/MODEL.md initialisation, drawn from torch's generator (the writer's own weights;
    the C weights come from its Philox RNG, so only the distributions agree)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("target."):
                continue
            if name.endswith("mask_token"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif p.dim() >= 2:
                w = p.reshape(p.shape[0], -1)
                bound = math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            elif ".norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        online = dict(model.named_parameters())
        for name in (model.target_names() if model.method == "alice" else []):
            online[name].copy_(online[name[len("target."):]])


# ----------------------------------------------------------------------------- dump I/O

BATCH_KEYS = {"mae": ("u", "perm_u"), "alice": ("u", "perm_u", "r", "perm_r", "w", "v")}
LOSS_KEYS = ("loss", "l_r", "l_dv", "l_st")


def _attr_text(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return _attr_text(v.reshape(-1)[0])
    return str(v)


def load_dump(path):
    import h5py
    with h5py.File(path, "r") as f:
        for attr in ("config", "method"):
            if attr not in f.attrs:
                raise ValueError("%s: root attribute '%s' missing" % (path, attr))
        cfg = Cfg(parse_config_text(_attr_text(f.attrs["config"])))
        method = _attr_text(f.attrs["method"]).strip()
        d = dict(path=path, cfg=cfg, method=method)
        d["params"] = {k: np.array(v) for k, v in f["params"].items()}
        d["decay"] = {k: bool(int(np.array(v.attrs.get("decay", 0)).reshape(-1)[0]))
                      for k, v in f["params"].items()}
        d["batch"] = {k: np.array(v) for k, v in f["batch"].items()}
        d["out"] = {k: float(np.array(v).reshape(-1)[0]) for k, v in f["out"].items()}
        d["grads"] = {k: np.array(v) for k, v in f["grads"].items()}
        d["adam"] = np.array(f["adam/losses"], dtype=np.float64).reshape(-1)
        d["ema"] = {k: np.array(v) for k, v in f["ema"].items()} if "ema" in f else {}
        d["centers"] = {k: np.array(v) for k, v in f["centers"].items()} if "centers" in f else {}
    return d


def build_from_dump(dump, dtype=torch.float32):
    """Model with the dump's weights; raises on a name or shape mismatch."""
    model = AliceModel(dump["cfg"], dump["method"]).to(dtype)
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(dump["params"]))
    extra = sorted(set(dump["params"]) - set(own))
    if missing or extra:
        raise ValueError("%s: parameter names differ from docs/MODEL.md: missing %s, unexpected %s"
                         % (dump["path"], missing, extra))
    with torch.no_grad():
        for n, p in own.items():
            a = dump["params"][n]
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError("%s: /params/%s has shape %s, docs/MODEL.md says %s"
                                 % (dump["path"], n, a.shape, tuple(p.shape)))
            p.copy_(torch.from_numpy(a.astype(np.float64)))
    return model


def drop_keep_keys(cfg, method):
    """The batch's drop-path flags, one [B, depth, 2] array per masked view, when drop_path > 0."""
    if cfg.f("drop_path") <= 0:
        return ()
    return tuple("drop_keep_" + k for k in BATCH_KEYS[method] if k in ("u", "r"))


def batch_tensors(dump, dtype=torch.float32):
    keys = BATCH_KEYS[dump["method"]]
    out = {}
    cfg = dump["cfg"]
    for k in drop_keep_keys(cfg, dump["method"]):
        if k not in dump["batch"]:
            raise ValueError("%s: /batch/%s missing (drop_path = %g)"
                             % (dump["path"], k, cfg.f("drop_path")))
        a = dump["batch"][k]
        want = (cfg.i("batch"), cfg.i("depth"), 2)
        if a.shape != want or not np.isin(a, (0, 1)).all():
            raise ValueError("%s: /batch/%s is not 0/1 flags of shape %s" % (dump["path"], k, want))
        out[k] = torch.from_numpy(a.astype(np.int64))
    for k in keys:
        if k not in dump["batch"]:
            raise ValueError("%s: /batch/%s missing" % (dump["path"], k))
        a = dump["batch"][k]
        if k.startswith("perm"):
            if a.ndim != 2 or not all(np.array_equal(np.sort(row), np.arange(a.shape[1])) for row in a):
                raise ValueError("%s: /batch/%s is not one permutation of 0..N-1 per sample"
                                 % (dump["path"], k))
            out[k] = torch.from_numpy(a.astype(np.int64))
            continue
        if a.ndim == 4:      # [B, X, Y, Z] without the channel axis: same voxels
            a = a[:, None]
        if a.ndim != 5 or a.shape[1] != 1:
            raise ValueError("%s: /batch/%s has shape %s, expected [B, 1, X, Y, Z]"
                             % (dump["path"], k, a.shape))
        out[k] = torch.from_numpy(a.astype(np.float64)).to(dtype)
    return out


def reference_run(model, batch, decay, steps=ADAM_STEPS):
    """Everything the dump records, computed by the reference from the model's current weights:
    loss terms and gradients at the initial weights, the losses before each AdamW step, and the
    targets after the first EMA update. Leaves the model at its post-steps weights."""
    names = model.online_names()
    params = dict(model.named_parameters())
    opt = AdamW([(n, params[n]) for n in names], decay, model.cfg)
    res = dict(adam=[], ema={})
    for s in range(steps):
        for n in names:
            params[n].grad = None
        model.step = s
        terms = forward_loss(model, batch)
        terms["loss"].backward()
        for n in names:   # tensors a switch leaves unused (CASA with use_casa = 0) get zeros
            if params[n].grad is None:
                params[n].grad = torch.zeros_like(params[n])
        if s == 0:
            res["out"] = {k: float(v.detach()) for k, v in terms.items()}
            res["grads"] = {n: params[n].grad.detach().clone() for n in names}
        res["adam"].append(float(terms["loss"].detach()))
        # DINO's freeze_last_layer: the head's last layer sits out the first steps
        frozen = model.method == "alice" and s < model.cfg.i("freeze_last_layer")
        opt.step(s, held=("head.last.weight",) if frozen else ())
        if model.method == "alice":
            ema_update(model, s)
            if s == 0:
                res["ema"] = {n: params[n].detach().clone() for n in model.target_names()}
            if model.dino:
                update_centers(model)
                if s == 0:
                    res["centers"] = {"center.cls": model.center_cls.clone(),
                                      "center.tokens": model.center_tokens.clone()}
    return res


def write_dump(path, cfg, method, seed=1, perturb=None):
    """The dump layout from PyTorch itself (validates the harness without the C tool).
    perturb: optional callable(res) that edits the recorded results before writing."""
    import h5py
    torch.manual_seed(seed)
    model = AliceModel(cfg, method)
    init_params(model, seed)
    params0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    decay = {n: default_decay(n, p) for n, p in params0.items()}
    B, (X, Y, Z) = cfg.i("batch"), cfg.i3("crop")
    N = int(np.prod(grid_of(cfg)))
    g = torch.Generator().manual_seed(seed + 1)
    batch = {}
    for k in BATCH_KEYS[method]:
        if k.startswith("perm"):
            batch[k] = torch.stack([torch.randperm(N, generator=g) for _ in range(B)])
        else:
            batch[k] = torch.randn((B, 1, X, Y, Z), generator=g)
    for k in drop_keep_keys(cfg, method):
        batch[k] = torch.randint(0, 2, (B, cfg.i("depth"), 2), generator=g)
    res = reference_run(model, batch, decay)
    if perturb:
        perturb(res)
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["config"] = cfg.text()
        f.attrs["method"] = method
        for n, p in params0.items():
            ds = f.create_dataset("params/" + n, data=p.numpy().astype(np.float32))
            ds.attrs["decay"] = np.int32(decay[n])
        for k, v in batch.items():
            f.create_dataset("batch/" + k, data=v.numpy().astype(
                np.int32 if k.startswith(("perm", "drop_keep")) else np.float32))
        for k in LOSS_KEYS:
            f.create_dataset("out/" + k, data=np.array([res["out"][k]], dtype=np.float64))
        for n, v in res["grads"].items():
            f.create_dataset("grads/" + n, data=v.numpy().astype(np.float32))
        f.create_dataset("adam/losses", data=np.array(res["adam"], dtype=np.float64))
        for n, v in res["ema"].items():
            f.create_dataset("ema/" + n, data=v.numpy().astype(np.float32))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- comparison

def rel_err(c, t):
    """||c - t|| / ||t|| (absolute when t is exactly 0)."""
    c = np.asarray(c, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    den = np.linalg.norm(t)
    num = np.linalg.norm(c - t)
    return num / den if den > 0 else num


def check_uniform(n, m, bound, what, fails):
    """m's entries within +-bound (exact), and where there are >= 256 its spread within 25% of
    the uniform's bound/sqrt(3)."""
    if np.abs(m).max() > bound * (1 + 1e-6):
        fails.append("init: %s exceeds the %s bound %.4g (max %.4g)"
                     % (n, what, bound, np.abs(m).max()))
    if m.size >= 256 and abs(m.std() / (bound / math.sqrt(3)) - 1) > 0.25:
        fails.append("init: %s std %.4g, %s-uniform gives %.4g"
                     % (n, m.std(), what, bound / math.sqrt(3)))


def check_init(dump):
    """The initial weights against docs/MODEL.md "Initialisation": Xavier-uniform matrices
    (bound exact; spread within 25% of bound/sqrt(3) where there are >= 256 draws), zero
    biases, unit/zero LayerNorm, mask_token ~ normal(0, 0.02), targets equal to their online
    namesakes, and the decay flags of "Optimisation step"; with head_init = dino the head's
    fc1-fc3 weights normal(0, 0.02) (spread within 25% where >= 256 draws, none past 6 std) and
    its last layer uniform(+-1/sqrt(in)) (torch's nn.Linear default). Returns the list of
    failures."""
    fails = []
    P = dump["params"]
    dino_head = dump["cfg"].s("head_init") == "dino"
    for n, a in sorted(P.items()):
        a = a.astype(np.float64)
        if n.startswith("target."):
            src = n[len("target."):]
            if src in P and not np.array_equal(a, P[src]):
                fails.append("init: %s is not a copy of %s" % (n, src))
            continue
        if dump["decay"][n] != default_decay(n, a):
            fails.append("init: %s has decay %d; docs/MODEL.md: 1 exactly for rank >= 2 tensors"
                         % (n, dump["decay"][n]))
        if n.endswith("mask_token"):
            if not (0 < np.abs(a).max() < 0.02 * 6):
                fails.append("init: %s max |x| %.3g is not normal(0, 0.02)-like" % (n, np.abs(a).max()))
        elif dino_head and n == "head.last.weight":
            check_uniform(n, a, 1.0 / math.sqrt(a.shape[1]), "nn.Linear default", fails)
        elif dino_head and n.startswith("head.fc") and a.ndim == 2:
            if np.abs(a).max() > 0.02 * 6 or (a.size >= 256 and abs(a.std() / 0.02 - 1) > 0.25):
                fails.append("init: %s (std %.4g, max |x| %.3g) is not normal(0, 0.02)"
                             % (n, a.std(), np.abs(a).max()))
        elif a.ndim >= 2:
            m = a.reshape(a.shape[0], -1)
            check_uniform(n, m, math.sqrt(6.0 / (m.shape[0] + m.shape[1])), "Xavier", fails)
        elif n.endswith("weight"):          # LayerNorm gains
            if not np.all(a == 1):
                fails.append("init: %s is not all ones" % n)
        elif not np.all(a == 0):            # biases and LayerNorm shifts
            fails.append("init: %s is not all zeros" % n)
    return fails


def check_drop_draws(dump, log):
    """drop_path > 0: the dump's flags must drop some branch and keep some other in the blocks
    whose rate is above 0 (block 0's is 0), else the comparison does not exercise drop-path."""
    keys = drop_keep_keys(dump["cfg"], dump["method"])
    if not keys:
        return []
    flags = np.concatenate([dump["batch"][k][:, 1:] for k in keys if k in dump["batch"]])
    dropped = int((flags == 0).sum())
    log("  drop-path: %d of %d branches of blocks 1.. dropped" % (dropped, flags.size))
    if dropped == 0 or dropped == flags.size:
        return ["the dump's drop-path draws drop %d of %d branches: choose a drop_path or seed "
                "that drops some and keeps some" % (dropped, flags.size)]
    return []


def compare_dump(path, tol=1e-4, ema_change_tol=1e-2, show=8, log=print):
    """Recompute a dump in PyTorch float32 and compare. Returns the list of failures (empty
    when everything matches). Also prints the float64 reference's distance as the noise floor."""
    dump = load_dump(path)
    method = dump["method"]
    fails = []
    runs = {}
    for dtype in (torch.float32, torch.float64):
        model = build_from_dump(dump, dtype)
        runs[dtype] = reference_run(model, batch_tensors(dump, dtype), dump["decay"])
    ref, ref64 = runs[torch.float32], runs[torch.float64]
    log("parity %s (%s): %d parameter tensors" % (path, method, len(dump["params"])))
    init_fails = check_init(dump)
    log("  initial weights (docs/MODEL.md Initialisation): %s"
        % ("as documented" if not init_fails else "%d problems" % len(init_fails)))
    fails += init_fails
    fails += check_drop_draws(dump, log)

    log("  %-8s %16s %16s %10s %10s" % ("term", "C", "torch fp32", "rel err", "fp32-fp64"))
    for k in LOSS_KEYS:
        if k not in dump["out"]:
            fails.append("/out/%s missing" % k)
            continue
        c, t, t64 = dump["out"][k], ref["out"][k], ref64["out"][k]
        e, e64 = rel_err(c, t), rel_err(t, t64)
        log("  %-8s %16.9g %16.9g %10.2e %10.2e" % (k, c, t, e, e64))
        if not e <= tol:
            fails.append("loss term %s: C %.9g vs torch %.9g (rel %.2e > %g)" % (k, c, t, e, tol))

    names = sorted(ref["grads"])
    gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in ref["grads"].values()))
    clip = dump["cfg"].f("clip")
    log("  global gradient norm %.6g, clip %g (%s)" % (gnorm, clip, "active" if 0 < clip < gnorm
                                                      else "inactive"))
    missing = [n for n in names if n not in dump["grads"]]
    extra = sorted(set(dump["grads"]) - set(names))
    if missing or extra:
        fails.append("gradient names: missing %s, unexpected %s" % (missing, extra))
    errs = []
    for n in names:
        if n in dump["grads"]:
            c, t = dump["grads"][n], ref["grads"][n].numpy()
            if c.shape != t.shape:
                fails.append("/grads/%s shape %s, expected %s" % (n, c.shape, t.shape))
                continue
            errs.append((rel_err(c, t), n, rel_err(t, ref64["grads"][n].numpy()),
                         float(np.linalg.norm(t))))
    errs.sort(reverse=True)
    log("  gradients (worst %d of %d): rel err, fp32-fp64, ||g||" % (min(show, len(errs)), len(errs)))
    for e, n, e64, gn in errs[:show]:
        log("    %-50s %10.2e %10.2e %10.3e" % (n, e, e64, gn))
    for e, n, _, _ in errs:
        if not e <= tol:
            fails.append("gradient %s: rel err %.2e > %g" % (n, e, tol))

    c_adam = dump["adam"]
    if len(c_adam) != ADAM_STEPS:
        fails.append("/adam/losses has %d entries, expected %d" % (len(c_adam), ADAM_STEPS))
    else:
        log("  AdamW losses (C, torch, rel err, fp32-fp64):")
        for s in range(ADAM_STEPS):
            e = rel_err(c_adam[s], ref["adam"][s])
            log("    step %d %16.9g %16.9g %10.2e %10.2e" % (s, c_adam[s], ref["adam"][s], e,
                                                         rel_err(ref["adam"][s], ref64["adam"][s])))
            if not e <= tol:
                fails.append("AdamW loss before step %d: rel err %.2e > %g" % (s, e, tol))
        moved = abs(ref["adam"][-1] - ref["adam"][0]) / max(abs(ref["adam"][0]), 1e-30)
        log("  AdamW moved the loss by %.2e (relative) over %d steps" % (moved, ADAM_STEPS))
        if moved < 100 * tol:
            log("  WARNING: the loss barely moves; the AdamW comparison does not discriminate "
                "(raise lr in the parity config)")

    if method == "alice":
        tnames = sorted(ref["ema"])
        missing = [n for n in tnames if n not in dump["ema"]]
        if missing:
            fails.append("/ema tensors missing: %s" % missing)
        worst = []
        for n in tnames:
            if n in dump["ema"]:
                c, t = dump["ema"][n], ref["ema"][n].numpy()
                t0 = dump["params"][n]
                e = rel_err(c, t)
                # the EMA moves a target by (1 - m) * (online update): compare against that
                # change too, or an EMA that does nothing would pass the plain test
                change = np.linalg.norm(t.astype(np.float64) - t0)
                ec = np.linalg.norm(c.astype(np.float64) - t) / change if change > 0 else 0.0
                worst.append((ec, n, e))
                if not e <= tol:
                    fails.append("EMA %s: rel err %.2e > %g" % (n, e, tol))
                if not ec <= ema_change_tol:
                    fails.append("EMA %s: error %.2e of the EMA change > %g" % (n, ec, ema_change_tol))
        worst.sort(reverse=True)
        log("  EMA after step 0 (worst %d of %d): err / change, rel err" % (min(show, len(worst)), len(worst)))
        for ec, n, e in worst[:show]:
            log("    %-50s %10.2e %10.2e" % (n, ec, e))

    if "centers" in ref:
        for n in sorted(ref["centers"]):
            if n not in dump["centers"]:
                fails.append("/centers/%s missing (align_loss = dino)" % n)
                continue
            e = rel_err(dump["centers"][n], ref["centers"][n].numpy())
            log("  DINO %-14s after step 0: rel err %.2e" % (n, e))
            if not e <= tol:
                fails.append("DINO %s after step 0: rel err %.2e > %g" % (n, e, tol))

    log("  %s" % ("PASS" if not fails else "FAIL: %d problems" % len(fails)))
    for f in fails[:20]:
        log("    " + f)
    return fails


# ----------------------------------------------------------------------------- C tool driver

def dump_tool_path():
    build = os.environ.get("BUILD", "build")
    path = build if os.path.isabs(build) else os.path.join(REPO, build)
    return os.path.join(path, "tools", "parity_dump")


def run_dump_tool(out, overrides):
    """Runs the C dump tool; returns the path it wrote."""
    import subprocess
    cmd = [dump_tool_path(), out] + ["%s=%s" % kv for kv in overrides.items()]
    print("running:", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(r.stdout[-4000:])
    if r.returncode != 0:
        raise RuntimeError("parity_dump exited with %d" % r.returncode)
    return out


def parity_main(method, variants):
    """Body of the parity tests: for each variant (overrides beyond PARITY_OVERRIDES) run the C
    dump tool and compare. Returns the exit status (0 pass, 1 fail: also when the dump tool
    is not built, which `make test` always builds)."""
    import shutil
    import sys
    import tempfile
    tool = dump_tool_path()
    if not os.access(tool, os.X_OK):
        print("FAIL: %s is not built (make tests-build BUILD=%s builds it)"
              % (tool, os.environ.get("BUILD", "build")))
        return 1
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="alice_parity_")
    failed = []
    try:
        for i, extra in enumerate(variants):
            overrides = dict(PARITY_OVERRIDES, method=method, **extra)
            out = os.path.join(tmp, "dump%d.h5" % i)
            try:
                run_dump_tool(out, overrides)
                fails = compare_dump(out)
            except (RuntimeError, ValueError, KeyError, OSError) as e:
                fails = ["%s: %s" % (type(e).__name__, e)]
                print("  FAIL:", fails[0])
            if fails:
                failed.append((extra, len(fails)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for extra, n in failed:
        print("variant %s: %d problems" % (extra or "default", n))
    sys.stdout.flush()
    return 1 if failed else 0

#!/usr/bin/env python3
"""Export the online encoder of an alice checkpoint to PyTorch.

usage: export_encoder.py CKPT.h5 [--out encoder.pt] [--img-size X,Y,Z]

Loads /params/encoder.* with h5py into a plain PyTorch 3D ViT whose state-dict keys are
MONAI's ViT keys (patch_embedding.patch_embeddings.*, blocks.{i}.*, norm.*) with strict
name and shape checking, prints what was loaded, and optionally saves the state dict
(torch.save) for `monai.networks.nets.ViT(..., pos_embed_type="sincos")` users. The state dict
also holds MONAI's `patch_embedding.position_embeddings` for the input size --img-size (default:
the checkpoint's crop), the fixed sin-cos table MONAI builds itself, so that
`ViT(in_channels=1, img_size=X,Y,Z, patch_size=P, hidden_size=..., mlp_dim=..., num_layers=...,
num_heads=..., pos_embed_type="sincos", classification=False).load_state_dict(sd, strict=True)`
loads it (checked against MONAI 1.3.2 by tests/analysis/test_export_encoder.py where MONAI is
installed).

--out is checked before the checkpoint is read (its folder must exist) and written atomically
(analysis/outputs.py: a temporary file in the same folder, renamed onto --out). A missing or
unreadable checkpoint, or an --img-size that is not three positive whole numbers, ends with a
message naming it.
"""
import argparse
import math
import sys

import h5py
import numpy as np
import torch
from torch import nn

from alice_config import parse_config_text
from outputs import check_out, write_atomic


class Block(nn.Module):
    def __init__(self, width, heads, mlp):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn.out_proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Module()
        self.mlp.linear1 = nn.Linear(width, mlp)
        self.mlp.linear2 = nn.Linear(mlp, width)

    def forward(self, x):
        b, t, w = x.shape
        h, d = self.heads, w // self.heads
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(d), dim=-1)
        x = x + self.attn.out_proj((att @ qkv[2]).transpose(1, 2).reshape(b, t, w))
        return x + self.mlp.linear2(nn.functional.gelu(self.mlp.linear1(self.norm2(x))))


class ViT3D(nn.Module):
    """MONAI ViT layout with the fixed 3D sin-cos position embedding of docs/MODEL.md. With
    grid (patches per axis), the embedding of that grid is a fixed parameter under MONAI's key
    patch_embedding.position_embeddings [1, patches, width]; inputs of another grid compute
    theirs."""

    def __init__(self, patch, width, depth, heads, mlp, grid=None):
        super().__init__()
        self.patch = patch
        self.grid = tuple(grid) if grid else None
        self.patch_embedding = nn.Module()
        self.patch_embedding.patch_embeddings = nn.Conv3d(1, width, patch, stride=patch)
        if self.grid:
            table = self.sincos(self.grid, width)[None]
            self.patch_embedding.position_embeddings = nn.Parameter(table, requires_grad=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    @staticmethod
    def sincos(grid, dim):
        h, w, d = torch.meshgrid(*(torch.arange(g, dtype=torch.float64) for g in grid),
                                 indexing="ij")
        k = dim // 6
        omega = 1.0 / 10000 ** (torch.arange(k, dtype=torch.float64) / k)
        parts = []
        for c in (w, h, d):
            o = c.flatten()[:, None] * omega[None]
            parts += [torch.sin(o), torch.cos(o)]
        return torch.cat(parts, dim=1).float()

    def forward(self, x):
        t = self.patch_embedding.patch_embeddings(x)
        grid = t.shape[2:]
        t = t.flatten(2).transpose(1, 2)
        if self.grid == tuple(grid):
            t = t + self.patch_embedding.position_embeddings
        else:
            t = t + self.sincos(grid, t.shape[-1])
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)


def img_size(text):
    """argparse type for --img-size: X,Y,Z, three positive whole numbers (the multiple-of-patch
    check needs the checkpoint's patch, so it comes after reading it)."""
    try:
        size = [int(v) for v in text.split(",")]
    except ValueError:
        size = []
    if len(size) != 3 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': expected X,Y,Z, three positive whole "
                                         f"numbers (e.g. 96,96,32)")
    return size


def read_checkpoint(path):
    """(config dict, {encoder key: tensor}) of a pre-training checkpoint; anything else (a
    missing file, not HDF5, another kind of checkpoint) ends the script naming the file."""
    want = "give a pre-training checkpoint (alice pretrain's run_dir/ckpt_<step>.h5)"
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SystemExit(f"{path}: cannot read it as HDF5 ({e}); {want}")
    with f:
        if f.attrs.get("format") not in ("alice-checkpoint", b"alice-checkpoint"):
            sys.exit(f"{path}: not an alice checkpoint; {want}")
        kind = f.attrs.get("kind", b"")
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind != "pretrain":
            sys.exit(f"{path}: a {kind or 'kindless'} checkpoint; this exports the "
                     f"encoder of a pre-training checkpoint (alice pretrain's ckpt_<step>.h5)")
        if "config" not in f.attrs or not isinstance(f.get("params"), h5py.Group):
            sys.exit(f"{path}: no config attribute or /params group (an incomplete "
                     f"checkpoint); {want}")
        text = f.attrs["config"]
        cfg = parse_config_text(text.decode() if isinstance(text, bytes) else text)
        state = {k[len("encoder."):]: torch.from_numpy(np.asarray(v[()]))
                 for k, v in f["params"].items() if k.startswith("encoder.")}
    missing = [k for k in ("patch", "crop", "embed_dim", "depth", "heads", "mlp_dim")
               if k not in cfg]
    if missing:
        sys.exit(f"{path}: its config lacks {', '.join(missing)}; {want}")
    return cfg, state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="write the state dict here (torch.save)")
    ap.add_argument("--img-size", type=img_size, help="X,Y,Z input size of the position "
                    "embedding table (default: the checkpoint's crop)")
    args = ap.parse_args(argv)
    if args.out:
        check_out(args.out)                # a wrong --out found before the checkpoint is read
    cfg, state = read_checkpoint(args.checkpoint)
    patch = int(cfg["patch"])
    size = args.img_size or [int(v) for v in cfg["crop"].split(",")]
    if len(size) != 3 or any(s <= 0 or s % patch for s in size):
        sys.exit(f"--img-size {','.join(map(str, size))}: expected X,Y,Z, each a positive "
                 f"multiple of the patch size {patch}")
    grid = [s // patch for s in size]
    model = ViT3D(patch, int(cfg["embed_dim"]), int(cfg["depth"]), int(cfg["heads"]),
                  int(cfg["mlp_dim"]), grid)
    state["patch_embedding.position_embeddings"] = model.patch_embedding.position_embeddings.data
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:              # names the missing/unexpected/misshapen keys
        sys.exit(f"{args.checkpoint}: its encoder tensors do not fit the ViT its config "
                 f"describes ({e})")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"loaded {len(state) - 1} encoder tensors ({n} parameters) from {args.checkpoint}: "
          f"ViT patch {cfg['patch']}, width {cfg['embed_dim']}, depth {cfg['depth']}, "
          f"heads {cfg['heads']}; "
          f"position embedding for img_size {','.join(map(str, size))}")
    if args.out:
        write_atomic(args.out, lambda tmp: torch.save(model.state_dict(), tmp))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Export the online encoder of an alice checkpoint to PyTorch.

usage: export_encoder.py CKPT.h5 [--out encoder.pt]

Loads /params/encoder.* with h5py into a plain PyTorch 3D ViT whose state-dict keys are
MONAI's ViT keys (patch_embedding.patch_embeddings.*, blocks.{i}.*, norm.*) with strict
name and shape checking, prints what was loaded, and optionally saves the state dict
(torch.save) for `monai.networks.nets.ViT(..., pos_embed_type="sincos")` users.
"""
import argparse
import math
import sys

import h5py
import numpy as np
import torch
from torch import nn


def parse_config(text):
    cfg = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            cfg[k.strip()] = v.strip()
    return cfg


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
    """MONAI ViT layout with the fixed 3D sin-cos position embedding of docs/MODEL.md."""

    def __init__(self, patch, width, depth, heads, mlp):
        super().__init__()
        self.patch = patch
        self.patch_embedding = nn.Module()
        self.patch_embedding.patch_embeddings = nn.Conv3d(1, width, patch, stride=patch)
        self.blocks = nn.ModuleList(Block(width, heads, mlp) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    @staticmethod
    def sincos(grid, dim):
        h, w, d = torch.meshgrid(*(torch.arange(g, dtype=torch.float64) for g in grid), indexing="ij")
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
        t = t + self.sincos(grid, t.shape[-1])
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--out", help="write the state dict here (torch.save)")
    args = ap.parse_args()
    with h5py.File(args.checkpoint, "r") as f:
        if f.attrs.get("format") not in ("alice-checkpoint", b"alice-checkpoint"):
            sys.exit(f"{args.checkpoint}: not an alice checkpoint")
        text = f.attrs["config"]
        cfg = parse_config(text.decode() if isinstance(text, bytes) else text)
        state = {k[len("encoder."):]: torch.from_numpy(np.asarray(v[()]))
                 for k, v in f["params"].items() if k.startswith("encoder.")}
    model = ViT3D(int(cfg["patch"]), int(cfg["embed_dim"]), int(cfg["depth"]), int(cfg["heads"]),
                  int(cfg["mlp_dim"]))
    model.load_state_dict(state, strict=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"loaded {len(state)} encoder tensors ({n} parameters) from {args.checkpoint}: "
          f"ViT patch {cfg['patch']}, width {cfg['embed_dim']}, depth {cfg['depth']}, heads {cfg['heads']}")
    if args.out:
        torch.save(model.state_dict(), args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

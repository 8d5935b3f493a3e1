"""FLOPs of one UNETR fine-tuning step (unetr_enqueue_step: forward, DiceCE, backward), counted
two independent ways, for the figure `alice finetune --bench-steps N` prints (flop_per_step,
src/models/unetr.c unetr_step_flops). Sibling of flops_ref.py (pre-training).

1. analytic(cfg): layer by layer from the configuration (MONAI's UNETR layout, unetr_ref.py's
   docstring): the ViT (patch embedding, qkv / out-proj / MLP GEMMs, attention QK^T and PV),
   every conv3d (2 * k^3 * Cin * Cout * output voxels), every transposed conv (kernel = stride
   = 2: 2 * 8 * Cin * Cout * input voxels), the 1x1x1 output conv.
2. measured(cfg): one forward + backward of unetr_ref.UNETR (PyTorch, float32, CPU) under a
   TorchDispatchMode that sees every aten matmul (flops_ref._matmul_flops) and convolution /
   convolution_backward the step really runs, costed from the operands' shapes: a convolution
   2 * (output elements) * Cin/groups * prod(kernel) (transposed: 2 * (input elements) *
   Cout/groups * prod(kernel)); its backward that cost once per gradient it computes (the
   output_mask's input and weight entries; bias gradients are sums, not counted).

The convention (as flops_ref.py): 2 FLOPs per multiply-add, GEMMs and convolutions only
(norms, activations, softmax, the loss and the optimiser are not counted); backward computes a
weight and an input gradient per layer (2x forward) except where the input is data: autograd
(and the C step) compute no input gradient for layers that read the image (the patch
embedding, encoder1's conv1 and conv3).

Command line: /usr/bin/python3 tests/reference/unetr_flops_ref.py --config jobs/finetune_btcv.cfg
[key=value ...] [--measure] prints `unetr_flops flop_per_step=... gflop_per_step=...`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref as ar  # noqa: E402
import flops_ref  # noqa: E402

PATCH = 16


def conv(B, cin, cout, k, out_vox):
    """Conv3d, stride 1, 'same' padding: one k^3 x Cin dot product per output voxel and Cout."""
    return 2 * B * k ** 3 * cin * cout * out_vox


def up(B, cin, cout, in_vox):
    """ConvTranspose3d kernel = stride = 2: every input voxel scatters Cin x Cout x 8 taps."""
    return 2 * B * 8 * cin * cout * in_vox


def res_block(B, cin, cout, vox):
    """UnetResBlock: conv1 (3^3), conv2 (3^3) and, when the channels differ, conv3 (1^3)."""
    return conv(B, cin, cout, 3, vox) + conv(B, cout, cout, 3, vox) + \
        (conv(B, cin, cout, 1, vox) if cin != cout else 0)


def analytic(cfg):
    """dict: fwd (forward FLOPs), data_input (the input-gradient FLOPs not run: layers reading
    the image), total = 3 * fwd - data_input."""
    B, E, F, K = cfg.i("batch"), cfg.i("embed_dim"), cfg.i("feature_size"), cfg.i("num_classes")
    grid = [n // PATCH for n in cfg.i3("crop")]
    N = grid[0] * grid[1] * grid[2]
    vox = [N * 8 ** level for level in range(5)]     # token grid, x2, x4, x8, x16 = the crop
    D = vox[4]
    patch = flops_ref.linear(B * N, PATCH ** 3, E)
    vit = patch + flops_ref.transformer(B, N, E, cfg.i("mlp_dim"), cfg.i("depth"))
    enc1 = res_block(B, 1, F, D)
    encoders = 0
    for k, layers in enumerate((2, 1, 0)):            # encoder2, 3, 4: E -> 2F, 4F, 8F
        c = F << (k + 1)
        encoders += up(B, E, c, vox[0])
        for i in range(layers):
            encoders += up(B, c, c, vox[1 + i]) + res_block(B, c, c, vox[2 + i])
    decoders = 0
    for d in range(4):                                # decoder5..2: 8F, 4F, 2F, F
        c = F << (3 - d)
        cin = E if d == 0 else 2 * c
        decoders += up(B, cin, c, vox[d]) + res_block(B, 2 * c, c, vox[d + 1])
    out = conv(B, F, K, 1, D)
    fwd = vit + enc1 + encoders + decoders + out
    data_input = patch + conv(B, 1, F, 3, D) + conv(B, 1, F, 1, D)
    return dict(fwd=fwd, data_input=data_input, total=3 * fwd - data_input)


def _prod(xs):
    p = 1
    for x in xs:
        p *= x
    return p


def conv_flops(inp_shape, w_shape, out_shape, transposed, groups):
    """Forward FLOPs of one aten.convolution from its operand shapes."""
    kernel = _prod(w_shape[2:])
    if transposed:   # weight [Cin, Cout/groups, k...]: each input element meets Cout/g x k^3
        return 2 * _prod(inp_shape) * w_shape[1] * kernel
    return 2 * _prod(out_shape) * w_shape[1] * kernel   # weight [Cout, Cin/groups, k...]


def measured(cfg, seed=0):
    """dict: fwd, bwd, total from one forward + backward of unetr_ref.UNETR at cfg."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    import unetr_ref

    torch.manual_seed(seed)
    model = unetr_ref.UNETR(cfg)
    B, (X, Y, Z), K = cfg.i("batch"), cfg.i3("crop"), cfg.i("num_classes")
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand((B, 1, X, Y, Z), generator=gen)
    y = torch.randint(0, K, (B, X, Y, Z), generator=gen)
    counts = dict(fwd=0, bwd=0)
    phase = ["fwd"]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name == "convolution":
                inp, w = args[0], args[1]
                f = conv_flops(inp.shape, w.shape, out.shape, bool(args[6]), args[8])
            elif name == "convolution_backward":
                # (grad_output, input, weight, bias_sizes, stride, padding, dilation,
                #  transposed, output_padding, groups, output_mask)
                g, inp, w = args[0], args[1], args[2]
                once = conv_flops(inp.shape, w.shape, g.shape, bool(args[7]), args[9])
                mask = args[10]
                f = once * (int(bool(mask[0])) + int(bool(mask[1])))
            elif name in ("mv", "dot", "addmv", "addbmm", "addr", "vdot", "_convolution"):
                raise RuntimeError("unetr_flops_ref: aten.%s is not counted" % name)
            else:
                f = flops_ref._matmul_flops(name, args)
            if f:
                counts[phase[0]] += f
            return out

    with Counter():
        loss, _, _ = unetr_ref.dice_ce(model(x), y)
        phase[0] = "bwd"
        loss.backward()
    counts["total"] = counts["fwd"] + counts["bwd"]
    return counts


def load_cfg(paths, overrides):
    d = ar.registry_defaults()
    for path in paths:
        with open(path) as f:
            d.update(ar.parse_config_text(f.read()))
    for kv in overrides:
        if "=" not in kv:
            raise ValueError("%r is not key=value" % kv)
        k, v = kv.split("=", 1)
        d[k.strip()] = v.strip()
    return ar.Cfg(d)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=[], help="job file (repeatable)")
    ap.add_argument("--measure", action="store_true",
                    help="also count by running unetr_ref's step on the CPU (small configs)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    cfg = load_cfg(args.config, args.overrides)
    a = analytic(cfg)
    print("unetr_flops batch=%d crop=%s flop_per_step=%d gflop_per_step=%.3f fwd_gflop=%.3f"
          % (cfg.i("batch"), ",".join(map(str, cfg.i3("crop"))), a["total"], a["total"] / 1e9,
             a["fwd"] / 1e9))
    if args.measure:
        m = measured(cfg)
        print("unetr_flops measured flop_per_step=%d fwd=%d bwd=%d" % (m["total"], m["fwd"], m["bwd"]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, KeyError, OSError) as e:
        sys.exit("unetr_flops_ref: error: %s" % e)

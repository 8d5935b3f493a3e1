"""Matmul FLOPs of one pre-training step of the docs/MODEL.md model, counted two independent
ways, and the floor they imply on a card (issue 6: "matmul FLOPs of the step over the measured
time over the card's dense bf16 peak; state the FLOP count and the floor it implies").

1. analytic(cfg, method): from the configuration alone, layer by layer (patch embedding,
   qkv / out_proj / linear1 / linear2, attention QK^T and PV, decoder, heads, CASA).
2. measured(cfg, method): one forward + backward of alice_ref.py's model under a
   TorchDispatchMode that sees every aten mm / addmm / bmm / baddbmm the step really runs,
   attributed to the innermost module by forward hooks. This counts what alice_ref.py's module
   shapes imply, without repeating the formulas of (1).

The convention (the one MFU uses: matmul FLOPs, 2 per multiply-add, elementwise work not
counted):
  - student (the masked views; the encoder sees the visible tokens only; decoder, heads, CASA):
    forward, plus backward = 2x forward for each GEMM (one GEMM for the weight gradient, one for
    the input gradient), EXCEPT the patch embedding, whose input is data: its backward is the
    weight gradient alone (1x forward). Neither the C step (vit.c passes no input gradient) nor
    autograd runs the input-gradient GEMM there.
  - teacher (the intact views, all tokens; the EMA target's encoder, its decoder without the
    voxel prediction (teacher_decoder = full) or decoder_embed alone (embed), and head,
    and the teacher side of CASA): forward only.
  - CASA's query path LN_q(V) W_q (casa_layer = transformer: LN_q(V) W_q_in, then W_q) is
    computed once per masked view and shared by the student
    (S) and the teacher (T) pairs (src/models/casa.h). alice_ref.py recomputes it for T under
    no_grad; measured() reports that as `recomputed` and leaves it out of the model count.

Command line: the count and the floor for a job file, e.g.
  /usr/bin/python3 tests/reference/flops_ref.py --config jobs/pretrain_vitb_paper.cfg batch=8
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref as ar  # noqa: E402

DEFAULT_PEAK_TFLOPS = 989.0   # H100 SXM / H200 dense bf16 (tensor cores, no sparsity)
MASKED_VIEWS = 2              # Alice: Q and K each give one masked (student) and one intact view


def linear(rows, fan_in, fan_out):
    """y[rows, fan_out] = x[rows, fan_in] W^T."""
    return 2 * rows * fan_in * fan_out


def attention(B, Tq, Tk, width):
    """QK^T [B, h, Tq, Tk] and PV over all heads: the head split does not change the count."""
    return 2 * (2 * B * Tq * Tk * width)


def transformer(rows_B, T, width, mlp, depth):
    rows = rows_B * T
    per_block = (linear(rows, width, 3 * width) + linear(rows, width, width) +
                 linear(rows, width, mlp) + linear(rows, mlp, width) +
                 attention(rows_B, T, T, width))
    return depth * per_block


class Sizes:
    def __init__(self, cfg):
        self.B = cfg.i("batch")
        self.P = cfg.i("patch") ** 3
        g = ar.grid_of(cfg)
        self.N = g[0] * g[1] * g[2]
        self.nvis = ar.num_visible(cfg, self.N)
        for k in ("embed_dim", "depth", "mlp_dim", "dec_dim", "dec_depth", "dec_mlp_dim",
                  "head_hidden", "head_bottleneck", "head_out", "casa_dim", "casa_ffn_dim"):
            setattr(self, k, cfg.i(k))
        self.casa_transformer = cfg.s("casa_layer") == "transformer"


def analytic(cfg, method=None):
    """dict of FLOPs: fwd_student, bwd_student, fwd_teacher, total (= the model count), and
    patch_embed_fwd (the student patch embeddings' forward, whose input gradient is not run)."""
    method = method or cfg.s("method")
    s = Sizes(cfg)
    B, N, nvis, E, D = s.B, s.N, s.nvis, s.embed_dim, s.dec_dim

    def encoder(T):
        return linear(B * T, s.P, E) + transformer(B, T, E, s.mlp_dim, s.depth)

    decoder = (linear(B * nvis, E, D) + transformer(B, N, D, s.dec_mlp_dim, s.dec_depth) +
               linear(B * N, D, s.P))
    patch_fwd = linear(B * nvis, s.P, E)
    student = encoder(nvis) + decoder
    views = 1
    teacher = 0
    if method == "alice":
        views = MASKED_VIEWS
        head = (linear(B * N, D, s.head_hidden) + linear(B * N, s.head_hidden, s.head_hidden) +
                linear(B * N, s.head_hidden, s.head_bottleneck) +
                linear(B * N, s.head_bottleneck, s.head_out))
        casa_query = linear(B * nvis, E, s.casa_dim)
        kv = D if cfg.s("casa_kv") == "features" else s.head_out   # what k and v read
        casa_pair = (2 * linear(B * N, kv, s.casa_dim) +               # k and v
                     attention(B, nvis, N, s.casa_dim) + linear(B * nvis, s.casa_dim, s.head_out))
        if s.casa_transformer:
            # the query token in the heads' space, then q; the feed-forward after zeta
            casa_query = (linear(B * nvis, E, s.head_out) +
                          linear(B * nvis, s.head_out, s.casa_dim))
            casa_pair += (linear(B * nvis, s.head_out, s.casa_ffn_dim) +
                          linear(B * nvis, s.casa_ffn_dim, s.head_out))
        use_casa = cfg.b("use_casa")
        student += head + (casa_query + casa_pair if use_casa else 0)
        # cls_source = encoder: cls_proj and the head on one pooled row per sample, both sides
        # (the student's with a backward only when l_dv is on)
        cls = 0
        if cfg.s("cls_source") == "encoder":
            cls = linear(B, E, D) + head // N
        cls_fwd_only = cls if not cfg.b("use_dv") else 0
        student += cls - cls_fwd_only
        # teacher_decoder = full: the EMA decoder's blocks over all N tokens (no voxel
        # prediction); embed: its input projection alone
        teacher_decoder = (linear(B * N, E, D) +
                           (transformer(B, N, D, s.dec_mlp_dim, s.dec_depth)
                            if cfg.s("teacher_decoder") == "full" else 0))
        teacher = encoder(N) + teacher_decoder + head + cls + (casa_pair if use_casa else 0)
    elif method != "mae":
        raise ValueError("method %r is not mae|alice" % method)
    else:
        cls_fwd_only = 0
    out = dict(fwd_student=views * (student + cls_fwd_only),
               bwd_student=views * (2 * student - patch_fwd),
               fwd_teacher=views * teacher, patch_embed_fwd=views * patch_fwd)
    out["total"] = out["fwd_student"] + out["bwd_student"] + out["fwd_teacher"]
    return out


# ----------------------------------------------------------------------------- measured

def _matmul_flops(name, args):
    """FLOPs of one aten matmul-family call from its operand shapes (None: not a matmul)."""
    if name == "mm":
        a, b = args[0].shape, args[1].shape
        return 2 * a[0] * a[1] * b[1]
    if name == "addmm":
        a, b = args[1].shape, args[2].shape
        return 2 * a[0] * a[1] * b[1]
    if name == "bmm":
        a, b = args[0].shape, args[1].shape
        return 2 * a[0] * a[1] * a[2] * b[2]
    if name == "baddbmm":
        a, b = args[1].shape, args[2].shape
        return 2 * a[0] * a[1] * a[2] * b[2]
    return None


# Matmul-family ops this counter does not handle: seeing one means the count would be short.
_UNHANDLED = {"mv", "dot", "addmv", "addbmm", "addr", "vdot", "convolution", "_convolution",
              "convolution_backward", "matmul", "linear"}


def _model_and_batch(cfg, method, seed):
    import torch
    torch.manual_seed(seed)
    model = ar.AliceModel(cfg, method)
    ar.init_params(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    B, (X, Y, Z) = cfg.i("batch"), cfg.i3("crop")
    N = Sizes(cfg).N
    batch = {k: (torch.stack([torch.randperm(N, generator=gen) for _ in range(B)])
                 if k.startswith("perm") else torch.randn((B, 1, X, Y, Z), generator=gen))
             for k in ar.BATCH_KEYS[method]}
    return model, batch


def measured(cfg, method=None, seed=0):
    """One forward + backward of alice_ref's model at cfg (float32, CPU) under a dispatch-level
    counter. Returns dict fwd_student (grad enabled), fwd_teacher (under no_grad, less the
    recomputed CASA query path), recomputed (that query path), bwd_student, total (model count,
    comparable with analytic()), by_module {module: forward FLOPs}."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    method = method or cfg.s("method")
    model, batch = _model_and_batch(cfg, method, seed)
    stack = []     # qualified names of the modules whose forward is running, innermost last

    def enter(module, inputs, name):
        stack.append(name)

    def leave(module, inputs, output):
        stack.pop()    # returns None: a forward hook's return value would replace the output

    hooks = []
    for name, mod in model.named_modules():
        hooks.append(mod.register_forward_pre_hook(lambda m, i, n=name: enter(m, i, n)))
        hooks.append(mod.register_forward_hook(leave))

    counts = dict(fwd_student=0, fwd_teacher=0, recomputed=0, bwd_student=0)
    by_module = {}
    phase = ["forward"]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name in _UNHANDLED:
                raise RuntimeError("flops_ref: aten.%s is not counted; extend _matmul_flops" % name)
            f = _matmul_flops(name, args)
            if f is None:
                return out
            if phase[0] == "backward":
                counts["bwd_student"] += f
                return out
            where = stack[-1] if stack else "(functional)"
            if torch.is_grad_enabled():
                counts["fwd_student"] += f
            elif where in ("casa.q", "casa.q_in"):
                counts["recomputed"] += f    # alice_ref recomputes the shared query path for T
            else:
                counts["fwd_teacher"] += f
            by_module[where] = by_module.get(where, 0) + f
            return out

    try:
        with Counter():
            terms = ar.forward_loss(model, batch)
            phase[0] = "backward"
            terms["loss"].backward()
    finally:
        for h in hooks:
            h.remove()
    counts["total"] = counts["fwd_student"] + counts["bwd_student"] + counts["fwd_teacher"]
    counts["by_module"] = by_module
    return counts


def flop_counter_total(cfg, method=None, seed=0):
    """PyTorch's own count (torch.utils.flop_counter.FlopCounterMode, torch >= 2.1) of one
    forward + backward of alice_ref's model: everything run, so measured()'s total plus its
    recomputed query path. None where torch has no FlopCounterMode (Debian's 1.13)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    method = method or cfg.s("method")
    model, batch = _model_and_batch(cfg, method, seed)
    with FlopCounterMode(display=False) as counter:
        ar.forward_loss(model, batch)["loss"].backward()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- floor

def floor_ms(flops, peak_tflops=DEFAULT_PEAK_TFLOPS):
    """Minimum time of the step at 100% model FLOP utilisation."""
    return flops / (peak_tflops * 1e12) * 1e3


def describe(cfg, method, peak_tflops=DEFAULT_PEAK_TFLOPS):
    a = analytic(cfg, method)
    s = Sizes(cfg)
    return ("flops method=%s batch=%d tokens=%d visible=%d flop_per_step=%d gflop_per_step=%.3f "
            "fwd_student_gflop=%.3f bwd_student_gflop=%.3f fwd_teacher_gflop=%.3f "
            "peak_tflops=%g floor_ms=%.3f"
            % (method, s.B, s.N, s.nvis, a["total"], a["total"] / 1e9, a["fwd_student"] / 1e9,
               a["bwd_student"] / 1e9, a["fwd_teacher"] / 1e9, peak_tflops,
               floor_ms(a["total"], peak_tflops)))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=[], help="job file (repeatable)")
    ap.add_argument("--method", choices=("mae", "alice"), default=None)
    ap.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS,
                    help="dense bf16 peak of the card (default %g: H100 SXM / H200)"
                         % DEFAULT_PEAK_TFLOPS)
    ap.add_argument("--measure", action="store_true",
                    help="also count by running alice_ref's step on the CPU (small configs)")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = ap.parse_args(argv)
    d = ar.registry_defaults()
    for path in args.config:
        with open(path) as f:
            d.update(ar.parse_config_text(f.read()))
    for kv in args.overrides:
        if "=" not in kv:
            sys.exit("flops_ref: %r is not key=value" % kv)
        k, v = kv.split("=", 1)
        d[k.strip()] = v.strip()
    cfg = ar.Cfg(d)
    method = args.method or cfg.s("method")
    print(describe(cfg, method, args.peak_tflops))
    if args.measure:
        m = measured(cfg, method)
        print("measured flop_per_step=%d (alice_ref also recomputes %d in CASA's query path)"
              % (m["total"], m["recomputed"]))
        for mod, f in sorted(m["by_module"].items()):
            print("  forward %-40s %14d" % (mod, f))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, KeyError, OSError) as e:
        sys.exit("flops_ref: error: %s" % e)

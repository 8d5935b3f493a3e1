"""One pre-training step (forward, backward, AdamW, and the EMA for alice) of the reference
model of docs/MODEL.md in PyTorch, on the CPU or a CUDA card: the figure the C step is measured
against (issues 2, 4 and 6). Prints seconds per step (median of the timed steps after warm-up),
throughput, peak memory and the model FLOP utilisation as one machine-readable line:

  torch_step method=<m> device=<d> amp=<none|bf16> compile=<0|1> batch=<B> s_per_step=<s>
    samples_per_s=<x> peak_mem_mb=<MiB> gflop_per_step=<GFLOP> gflops=<GFLOP/s>
    tflops_achieved=<TFLOP/s> mfu_pct=<%> floor_ms=<ms> peak_tflops=<card> peak_rss_mb=<MiB>
    threads=<n> crop=<X,Y,Z> steps=<n> fwd_s= bwd_s= opt_s= ema_s= compile_scope= tf32=
    attention=<explicit|sdpa> adamw=<fused|foreach>

(one line in the output). gflop_per_step is the step's matmul FLOP count of flops_ref.py (the
same count as `alice pretrain --bench-steps`), gflops the achieved GFLOP/s as in alice_step,
mfu_pct = achieved / --peak-tflops, floor_ms the step time at 100% MFU. peak_mem_mb is
torch.cuda.max_memory_allocated over the timed steps on cuda (reset after the warm-up) and
the peak RSS on the CPU. AdamW is torch's fastest: fused on cuda, foreach elsewhere.

Model sizes: ViT-B/16 with the paper crop by default; `--config jobs/<x>.cfg` (repeatable, as
for `alice pretrain`) takes them from job files, then explicit flags and trailing key=value
overrides win. Honest by construction: torch.set_num_threads(threads), float32 master weights,
torch.optim.AdamW as a user would call it, fresh random masks every step; --amp bf16 wraps the
forward and the loss in torch.autocast(device, bfloat16) (backward and optimizer outside, as
the PyTorch AMP recipe says); --compile 1 runs the forward + loss through torch.compile (its
backward through AOTAutograd; --compile-scope modules compiles each module instead, for when
the whole step does not compile); --tf32 1 lets float32 matmuls use TF32 tensor cores.
Timing: CUDA events around each part of the step on cuda (synchronised before reading),
perf_counter on the CPU.

Exit status: 0 measured; 3 when the requested combination cannot run here (--compile 1 without
torch.compile or when compilation fails, --device cuda without a CUDA device), after a line
`torch_step ... compile=unavailable reason=...` (or `device=unavailable reason=...`), so
that callers report "skip"; 1 on bad arguments.
"""
import argparse
import contextlib
import inspect
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import alice_ref as ar  # noqa: E402
import flops_ref  # noqa: E402

EXIT_UNAVAILABLE = 3   # the requested device / compile mode does not exist here: callers skip

# flag -> (config key, the brief's default: ViT-B/16 at the paper crop)
FLAGS = {
    "crop": ("crop", "192,192,64"), "patch": ("patch", "16"),
    "embed": ("embed_dim", "768"), "depth": ("depth", "12"), "heads": ("heads", "12"),
    "mlp": ("mlp_dim", "3072"), "dec_dim": ("dec_dim", "384"), "dec_depth": ("dec_depth", "4"),
    "dec_heads": ("dec_heads", "12"), "dec_mlp": ("dec_mlp_dim", "1536"),
    "head_hidden": ("head_hidden", "2048"), "head_bottleneck": ("head_bottleneck", "256"),
    "head_out": ("head_out", "256"), "casa_dim": ("casa_dim", "768"),
    "mask_ratio": ("mask_ratio", "0.75"), "batch": ("batch", "1"),
}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=("mae", "alice"), default=None)
    ap.add_argument("--config", action="append", default=[],
                    help="job file (key = value lines) for the model sizes; repeatable, later "
                         "files override earlier ones (as `alice pretrain --config`)")
    for flag, (key, default) in FLAGS.items():
        ap.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None,
                        help="%s (default %s)" % (key, default))
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    ap.add_argument("--warmup-steps", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="where the step runs (default cpu)")
    ap.add_argument("--amp", choices=("none", "bf16"), default="none",
                    help="bf16: torch.autocast around forward + loss (default none: float32)")
    ap.add_argument("--compile", type=int, choices=(0, 1), default=0,
                    help="1: torch.compile the forward + loss (exit 3 where unavailable)")
    ap.add_argument("--compile-scope", choices=("step", "modules"), default="step",
                    help="with --compile 1: the whole forward + loss function (default), or "
                         "each module (encoders, decoder, heads, CASA) on its own")
    ap.add_argument("--attention", choices=("explicit", "sdpa"), default="explicit",
                    help="the encoder/decoder self-attention: explicit softmax(QK^T)V as "
                         "alice_ref.py and MONAI's SABlock write it (default), or "
                         "F.scaled_dot_product_attention (torch >= 2.0; exit 3 where absent)")
    ap.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                    help="1: torch.set_float32_matmul_precision('high') (TF32 on CUDA; "
                         "default 0: full float32)")
    ap.add_argument("--peak-tflops", type=float, default=flops_ref.DEFAULT_PEAK_TFLOPS,
                    help="dense bf16 peak of the card for the MFU and the floor (default %g: "
                         "H100 SXM / H200)" % flops_ref.DEFAULT_PEAK_TFLOPS)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides")
    return ap.parse_args(argv)


def resolve_config(args):
    d = ar.registry_defaults()
    d.update({key: default for key, default in FLAGS.values()})
    d["method"] = "mae"
    for path in args.config:
        with open(path) as f:
            d.update(ar.parse_config_text(f.read()))
    for flag, (key, _) in FLAGS.items():
        if getattr(args, flag) is not None:
            d[key] = str(getattr(args, flag))
    if args.method:
        d["method"] = args.method
    for kv in args.overrides:
        if "=" not in kv:
            sys.exit("bench_torch_step: %r is not key=value" % kv)
        k, v = kv.split("=", 1)
        d[k.strip()] = v.strip()
    return ar.Cfg(d)


def random_batch(cfg, method, gen, device):
    """Random views and masks drawn on the CPU generator (the same numbers on every device)."""
    B, (X, Y, Z) = cfg.i("batch"), cfg.i3("crop")
    N = 1
    for g in ar.grid_of(cfg):
        N *= g
    batch = {}
    for k in ar.BATCH_KEYS[method]:
        if k.startswith("perm"):
            batch[k] = torch.stack([torch.randperm(N, generator=gen) for _ in range(B)])
        else:
            batch[k] = torch.randn((B, 1, X, Y, Z), generator=gen)
        batch[k] = batch[k].to(device)
    return batch


def unavailable(what, args, method, reason):
    """The line callers parse to report a skip, then exit 3."""
    fields = dict(method=method, device=args.device, amp=args.amp, compile=args.compile)
    fields[what] = "unavailable"
    print("torch_step %s reason=%s" % (" ".join("%s=%s" % kv for kv in fields.items()), reason),
          flush=True)
    return EXIT_UNAVAILABLE


class StepClock:
    """Marks taken inside one step. On cuda the host runs ahead of the kernels, so the marks are
    CUDA events read after a synchronize; on the CPU they are perf_counter readings."""

    def __init__(self, device):
        self.cuda = device == "cuda"
        self.marks = []

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def intervals(self):
        """Seconds between consecutive marks (waits for the last one on cuda)."""
        if self.cuda:
            self.marks[-1].synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def adamw_impl(device):
    """torch's fastest AdamW here: the fused CUDA kernel (torch >= 2.0) on cuda, else the
    multi-tensor (foreach) path. Returns (keyword arguments, name for the header line)."""
    if device == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters:
        return {"fused": True}, "fused"
    return {"foreach": True}, "foreach"


def make_optimizer(named, cfg, impl):
    """torch.optim.AdamW as a user would set it up: decay on the weight matrices only."""
    decay = [p for n, p in named if ar.default_decay(n, p)]
    no_decay = [p for n, p in named if not ar.default_decay(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.f("weight_decay")},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.f("lr"), betas=(cfg.f("beta1"), cfg.f("beta2")),
                             eps=cfg.f("adam_eps"), **impl)


def sdpa_forward(self, x):
    """alice_ref.Attention.forward with the score/softmax/PV part through
    F.scaled_dot_product_attention (flash / memory-efficient kernels on cuda): the same
    function, the same FLOPs, as a PyTorch >= 2.0 user would write it."""
    B, n, W = x.shape
    qkv = self.qkv(x).reshape(B, n, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
    o = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return self.out_proj(o.transpose(1, 2).reshape(B, n, W))


def step_forward(model, compile_scope):
    """The forward + loss of one step: eager (compile_scope None/False), the whole function
    through torch.compile ("step"), or each module compiled on its own ("modules"). Static
    shapes: the encoders see two token counts (visible, all), one graph for each."""
    def forward_loss(batch):
        return ar.forward_loss(model, batch)

    if compile_scope == "step":
        return torch.compile(forward_loss, dynamic=False)
    if compile_scope == "modules":
        owners = [model] + ([model.target] if model.method == "alice" else [])
        for owner in owners:
            for name in ("encoder", "decoder", "head", "casa"):
                mod = getattr(owner, name, None)
                # the target's decoder runs through features() (teacher_decoder = full) or is
                # a holder of decoder_embed (embed): compiling its forward covers neither
                if isinstance(mod, torch.nn.Module) and type(mod).forward is not torch.nn.Module.forward:
                    setattr(owner, name, torch.compile(mod, dynamic=False))
    return forward_loss


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def main(argv):
    args = parse_args(argv)
    cfg = resolve_config(args)
    method = cfg.s("method")
    if args.compile and not hasattr(torch, "compile"):
        return unavailable("compile", args, method, "torch %s has no torch.compile (it came in "
                           "torch 2.0)" % torch.__version__)
    if args.device == "cuda" and not torch.cuda.is_available():
        return unavailable("device", args, method, "torch %s sees no CUDA device (built %s CUDA)"
                           % (torch.__version__, "with" if torch.version.cuda else "without"))
    if args.attention == "sdpa" and not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return unavailable("attention", args, method, "torch %s has no "
                           "F.scaled_dot_product_attention (it came in torch 2.0)" % torch.__version__)
    if args.attention == "sdpa":
        ar.Attention.forward = sdpa_forward   # before any torch.compile traces it
    dev = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = ar.AliceModel(cfg, method)
    ar.init_params(model, args.seed)
    model.to(dev)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("target.")]
    impl, impl_name = adamw_impl(args.device)
    opt = make_optimizer(named, cfg, impl)
    online = dict(named)
    targets = [(p, online[n[len("target."):]]) for n, p in model.named_parameters()
               if n.startswith("target.")]
    target_list, source_list = [t for t, _ in targets], [o for _, o in targets]
    gen = torch.Generator().manual_seed(args.seed + 1)
    batch = random_batch(cfg, method, gen, dev)
    nparams = sum(p.numel() for _, p in named)
    flops = flops_ref.analytic(cfg, method)["total"]

    if args.tf32:
        torch.set_float32_matmul_precision("high")
    forward_loss = step_forward(model, args.compile and args.compile_scope)
    amp = (torch.autocast(device_type=args.device, dtype=torch.bfloat16) if args.amp == "bf16"
           else contextlib.nullcontext())
    print("bench_torch_step: method=%s device=%s amp=%s compile=%d crop=%s patch=%d embed=%d "
          "depth=%d dec=%d/%d batch=%d threads=%d online params=%.1fM float32 matmul "
          "precision=%s torch=%s%s"
          % (method, args.device, args.amp, args.compile, cfg.s("crop"), cfg.i("patch"),
             cfg.i("embed_dim"), cfg.i("depth"), cfg.i("dec_dim"), cfg.i("dec_depth"),
             cfg.i("batch"), args.threads, nparams / 1e6, torch.get_float32_matmul_precision(),
             torch.__version__,
             (" card=%s" % torch.cuda.get_device_name(dev)) if args.device == "cuda" else ""),
          flush=True)
    print(flops_ref.describe(cfg, method, args.peak_tflops), flush=True)

    times, parts = [], []
    for s in range(args.warmup_steps + args.steps):
        # fresh masks every step, as the training loop draws them (outside the timed region)
        for k in batch:
            if k.startswith("perm"):
                B, N = batch[k].shape
                batch[k] = torch.stack([torch.randperm(N, generator=gen) for _ in range(B)]).to(dev)
        clock = StepClock(args.device)
        clock.mark()
        opt.zero_grad(set_to_none=True)
        try:
            with amp:
                terms = forward_loss(batch)
            clock.mark()
            terms["loss"].backward()
        except Exception as e:   # noqa: BLE001 -- compilation errors surface at a call
            if not args.compile:
                raise
            return unavailable("compile", args, method, "torch.compile (scope %s) failed at "
                               "step %d: %s: %s" % (args.compile_scope, s, type(e).__name__,
                                                    str(e).strip().splitlines()[0] if str(e).strip() else ""))
        clock.mark()
        if cfg.f("clip") > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.f("clip"))
        for group in opt.param_groups:
            group["lr"] = ar.lr_at(cfg, s)
        opt.step()
        clock.mark()
        if targets:
            m = ar.ema_momentum(cfg, s)
            with torch.no_grad():   # the usual fused EMA idiom (timm ModelEmaV3)
                torch._foreach_mul_(target_list, m)
                torch._foreach_add_(target_list, source_list, alpha=1.0 - m)
        clock.mark()
        part = clock.intervals()
        dt = sum(part)
        print("  step %d%s %.4f s loss %.5f" % (s, " (warm-up)" if s < args.warmup_steps else "",
                                                dt, float(terms["loss"].detach())), flush=True)
        if s + 1 == args.warmup_steps and args.device == "cuda":
            # peak_mem_mb is a steady step's, not the warm-up's (compilation, first allocations)
            torch.cuda.reset_peak_memory_stats(dev)
        if s >= args.warmup_steps:
            times.append(dt)
            parts.append(part)

    rss = peak_rss_mb()
    peak_mb = torch.cuda.max_memory_allocated(dev) / 1048576.0 if args.device == "cuda" else rss
    fwd, bwd, opt_s, ema_s = (statistics.median(p[i] for p in parts) for i in range(4))
    sps = statistics.median(times)
    achieved = flops / sps
    print("torch_step method=%s device=%s amp=%s compile=%d batch=%d s_per_step=%.6f "
          "samples_per_s=%.3f peak_mem_mb=%.1f gflop_per_step=%.6f gflops=%.3f "
          "tflops_achieved=%.4f mfu_pct=%.3f floor_ms=%.4f peak_tflops=%g peak_rss_mb=%.1f "
          "threads=%d crop=%s steps=%d fwd_s=%.4f bwd_s=%.4f opt_s=%.4f ema_s=%.4f "
          "compile_scope=%s tf32=%d attention=%s adamw=%s"
          % (method, args.device, args.amp, args.compile, cfg.i("batch"), sps,
             cfg.i("batch") / sps, peak_mb, flops / 1e9, achieved / 1e9, achieved / 1e12,
             100.0 * achieved / (args.peak_tflops * 1e12),
             flops_ref.floor_ms(flops, args.peak_tflops), args.peak_tflops, rss, args.threads,
             cfg.s("crop").replace(" ", ""), len(times), fwd, bwd, opt_s, ema_s,
             args.compile_scope if args.compile else "none", args.tf32, args.attention,
             impl_name))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, KeyError) as e:   # inconsistent sizes: say which, no traceback
        sys.exit("bench_torch_step: error: %s" % e)

"""One pre-training step (forward, backward, AdamW, and the EMA for alice) of the reference
model of docs/MODEL.md in PyTorch on the CPU: the figure the C step is measured against
(issues 2 and 4). Prints seconds per step (median of the timed steps after warm-up) and the
peak RSS as one machine-readable line:

  torch_step method=mae s_per_step=0.812 peak_rss_mb=2140.3 threads=2 ...

Model sizes: ViT-B/16 with the paper crop by default; `--config jobs/<x>.cfg` (repeatable, as
for `alice pretrain`) takes them from job files, then explicit flags and trailing key=value
overrides win. Honest by construction:
torch.set_num_threads(threads), float32, no autocast, torch.optim.AdamW as a user would call it,
fresh random masks every step.
"""
import argparse
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import alice_ref as ar  # noqa: E402

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


def random_batch(cfg, method, gen):
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
    return batch


def main(argv):
    args = parse_args(argv)
    cfg = resolve_config(args)
    method = cfg.s("method")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = ar.AliceModel(cfg, method)
    ar.init_params(model, args.seed)
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("target.")]
    decay = [p for n, p in named if ar.default_decay(n, p)]
    no_decay = [p for n, p in named if not ar.default_decay(n, p)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.f("weight_decay")},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.f("lr"), betas=(cfg.f("beta1"), cfg.f("beta2")),
                            eps=cfg.f("adam_eps"), foreach=True)   # torch's fastest AdamW path
    online = dict(named)
    targets = [(p, online[n[len("target."):]]) for n, p in model.named_parameters()
               if n.startswith("target.")]
    target_list, source_list = [t for t, _ in targets], [o for _, o in targets]
    gen = torch.Generator().manual_seed(args.seed + 1)
    batch = random_batch(cfg, method, gen)
    nparams = sum(p.numel() for _, p in named)
    print("bench_torch_step: method=%s crop=%s patch=%d embed=%d depth=%d dec=%d/%d batch=%d "
          "threads=%d online params=%.1fM" % (method, cfg.s("crop"), cfg.i("patch"),
                                              cfg.i("embed_dim"), cfg.i("depth"), cfg.i("dec_dim"),
                                              cfg.i("dec_depth"), cfg.i("batch"), args.threads,
                                              nparams / 1e6), flush=True)

    times, parts = [], []
    for s in range(args.warmup_steps + args.steps):
        # fresh masks every step, as the training loop draws them (outside the timed region)
        fresh = random_batch(cfg, method, gen)
        for k in batch:
            if k.startswith("perm"):
                batch[k] = fresh[k]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        terms = ar.forward_loss(model, batch)
        t1 = time.perf_counter()
        terms["loss"].backward()
        t2 = time.perf_counter()
        if cfg.f("clip") > 0:
            torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.f("clip"))
        for group in opt.param_groups:
            group["lr"] = ar.lr_at(cfg, s)
        opt.step()
        t3 = time.perf_counter()
        if targets:
            m = ar.ema_momentum(cfg, s)
            with torch.no_grad():   # the usual fused EMA idiom (timm ModelEmaV3)
                torch._foreach_mul_(target_list, m)
                torch._foreach_add_(target_list, source_list, alpha=1.0 - m)
        dt = time.perf_counter() - t0
        print("  step %d%s %.3f s loss %.5f" % (s, " (warm-up)" if s < args.warmup_steps else "",
                                                dt, float(terms["loss"])), flush=True)
        if s >= args.warmup_steps:
            times.append(dt)
            parts.append((t1 - t0, t2 - t1, t3 - t2, t0 + dt - t3))

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux
    fwd, bwd, opt_s, ema_s = (statistics.median(p[i] for p in parts) for i in range(4))
    print("torch_step method=%s s_per_step=%.4f peak_rss_mb=%.1f threads=%d batch=%d crop=%s "
          "steps=%d fwd_s=%.4f bwd_s=%.4f opt_s=%.4f ema_s=%.4f"
          % (method, statistics.median(times), peak_mb, args.threads, cfg.i("batch"),
             cfg.s("crop").replace(" ", ""), len(times), fwd, bwd, opt_s, ema_s))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ValueError, KeyError) as e:   # inconsistent sizes: say which, no traceback
        sys.exit("bench_torch_step: error: %s" % e)

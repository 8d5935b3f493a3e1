"""Smoke test of bench_torch_step.py (the PyTorch side of the step benchmarks, issues 2, 4, 6):
a tiny model, one timed step per run:
  - float32 on the CPU, both methods: the machine-readable line is present and well-formed, and
    its FLOP count is flops_ref.analytic's (the count test_flop_count.py checks against C);
  - --amp bf16 on the CPU (torch.autocast exists there in torch 1.13): runs, finite loss;
  - --compile 1: measured where torch.compile exists and works, else exit 3 with a
    `compile=unavailable reason=...` line (Debian's torch 1.13 has no torch.compile);
  - --attention sdpa (F.scaled_dot_product_attention, torch >= 2.0): the same first-step loss
    as the explicit attention, else exit 3 with an `attention=unavailable` line;
  - --device cuda: measured where a CUDA device is visible, else exit 3 with `device=cuda
    unavailable`;
  - a crop not divisible by the patch is refused with a clear message.
Figures are not asserted (benchmarks never assert times)."""
import math
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import alice_ref as ar  # noqa: E402
import flops_ref  # noqa: E402

SIZES = dict(crop="16,16,8", patch="4", embed="24", depth="1", heads="2", mlp="48", dec_dim="12",
             dec_depth="1", dec_heads="2", dec_mlp="24", head_hidden="16", head_bottleneck="8",
             head_out="16", casa_dim="12", batch="2")
TINY = [a for k, v in SIZES.items() for a in ("--" + k.replace("_", "-"), v)] + \
       ["--steps", "1", "--warmup-steps", "1"]
NUM = r"([0-9.]+)"
LINE = re.compile(r"^torch_step method=(\w+) device=(\w+) amp=(\w+) compile=([01]) batch=2 "
                  r"s_per_step=%s samples_per_s=%s peak_mem_mb=%s gflop_per_step=%s gflops=%s "
                  r"tflops_achieved=%s mfu_pct=%s floor_ms=%s peak_tflops=%s peak_rss_mb=%s "
                  r"threads=1 crop=16,16,8 steps=1 fwd_s=[0-9.]+ bwd_s=[0-9.]+ "
                  r"opt_s=[0-9.]+ ema_s=[0-9.]+ compile_scope=(none|step|modules) tf32=[01] "
                  r"attention=(?:explicit|sdpa) adamw=(?:fused|foreach)$"
                  % ((NUM,) * 10), re.M)
LOSS = re.compile(r"^  step 1 [0-9.]+ s loss (\S+)$", re.M)
FIRST_LOSS = re.compile(r"^  step 0 \(warm-up\) [0-9.]+ s loss (\S+)$", re.M)


def run(args):
    return subprocess.run([sys.executable, os.path.join(HERE, "bench_torch_step.py")] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def expected_gflop(method):
    flag_to_key = {"embed": "embed_dim", "mlp": "mlp_dim", "dec_mlp": "dec_mlp_dim"}
    d = ar.registry_defaults()
    d.update({flag_to_key.get(k, k): v for k, v in SIZES.items()})
    return flops_ref.analytic(ar.Cfg(d), method)["total"] / 1e9


def check_measured(r, method, device, amp, compile_flag):
    """Problems with one measured run's output (empty when fine)."""
    m = LINE.search(r.stdout)
    if r.returncode != 0 or m is None:
        return ["exit %d, machine-readable line %s" % (r.returncode, "found" if m else "missing")]
    probs = []
    if m.groups()[:4] != (method, device, amp, str(compile_flag)):
        probs.append("line says %s" % (m.groups()[:4],))
    s, sps, mem, gflop, gflops, tfl, mfu, floor, peak, rss = (float(x) for x in m.groups()[4:14])
    if not (s > 0 and mem > 0 and rss > 0 and peak == flops_ref.DEFAULT_PEAK_TFLOPS):
        probs.append("s_per_step %g, peak_mem_mb %g, peak_rss_mb %g, peak_tflops %g" % (s, mem, rss, peak))
    if not math.isclose(sps, 2 / s, rel_tol=0.01):
        probs.append("samples_per_s %g is not batch / s_per_step = %g" % (sps, 2 / s))
    want = expected_gflop(method)
    if abs(gflop - want) > 1e-6:
        probs.append("gflop_per_step %g, flops_ref.analytic gives %.6f" % (gflop, want))
    if not math.isclose(gflops, gflop / s, rel_tol=0.01, abs_tol=0.002):
        probs.append("gflops %g is not gflop_per_step / s_per_step = %g" % (gflops, gflop / s))
    if not math.isclose(floor, want / peak, rel_tol=0.01, abs_tol=0.00006):
        probs.append("floor_ms %g is not GFLOP / peak TFLOP/s = %g ms" % (floor, want / peak))
    loss = LOSS.search(r.stdout)
    if loss is None or not math.isfinite(float(loss.group(1))):
        probs.append("timed step's loss %s" % (loss.group(1) if loss else "missing"))
    return probs


def main():
    bad = 0

    def report(ok, what, out=""):
        nonlocal bad
        if not ok and out:
            print(out)
        print("%s %s" % ("ok  " if ok else "FAIL", what))
        bad += not ok

    def report_unavailable(r, line_re, what):
        """Exit 3 runs: the machine-readable line says what is unavailable and why."""
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "(no output)"
        report(re.search(line_re, r.stdout, re.M) is not None, "%s (%s)" % (what, last), r.stdout)

    for method in ("mae", "alice"):
        r = run(["--method", method] + TINY)
        probs = check_measured(r, method, "cpu", "none", 0)
        report(not probs, "%s fp32 cpu: machine-readable line, FLOP count of flops_ref %s"
               % (method, probs or ""), r.stdout)

    r = run(["--method", "alice", "--amp", "bf16"] + TINY)
    probs = check_measured(r, "alice", "cpu", "bf16", 0)
    report(not probs, "alice --amp bf16 on the CPU (torch.autocast bfloat16) %s" % (probs or ""), r.stdout)

    r = run(["--method", "alice", "--amp", "bf16", "--compile", "1"] + TINY)
    if r.returncode == 3:
        report_unavailable(r, r"^torch_step method=alice device=cpu amp=bf16 compile=unavailable "
                           r"reason=\S.*$",
                           "--compile 1 where it cannot run: exit 3 and a compile=unavailable line")
    else:
        probs = check_measured(r, "alice", "cpu", "bf16", 1)
        report(not probs, "--compile 1 measured %s" % (probs or ""), r.stdout)

    # --attention sdpa computes the same function: the first step's loss (same seed, same
    # weights, same batch) must match the explicit attention's to float32 rounding
    explicit = run(["--method", "alice"] + TINY)
    r = run(["--method", "alice", "--attention", "sdpa"] + TINY)
    if r.returncode == 3:
        report_unavailable(r, r"^torch_step method=alice device=cpu amp=none compile=0 "
                           r"attention=unavailable reason=\S.*$", "--attention sdpa where torch "
                           "has no SDPA: exit 3 and an attention=unavailable line")
    else:
        probs = check_measured(r, "alice", "cpu", "none", 0)
        a, b = FIRST_LOSS.search(explicit.stdout), FIRST_LOSS.search(r.stdout)
        if a is None or b is None or not math.isclose(float(a.group(1)), float(b.group(1)),
                                                       rel_tol=1e-5):
            probs.append("first-step loss explicit %s vs sdpa %s" % (a and a.group(1),
                                                                      b and b.group(1)))
        if "attention=sdpa" not in r.stdout:
            probs.append("the line does not say attention=sdpa")
        report(not probs, "--attention sdpa: measured, same first-step loss as explicit %s"
               % (probs or ""), r.stdout)

    r = run(["--method", "mae", "--device", "cuda"] + TINY)
    if r.returncode == 3:
        report_unavailable(r, r"^torch_step method=mae device=unavailable amp=none compile=0 "
                           r"reason=\S.*$",
                           "--device cuda without a CUDA device: exit 3 and a device=unavailable line")
    else:
        probs = check_measured(r, "mae", "cuda", "none", 0)
        report(not probs, "--device cuda measured %s" % (probs or ""), r.stdout)

    r = run(["--crop", "17,16,8"] + TINY[2:])
    ok = r.returncode not in (0, 3) and "not divisible by patch" in r.stdout
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "(no output)")
    report(ok, "crop not divisible by the patch is refused with a clear message")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

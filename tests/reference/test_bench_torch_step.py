"""Smoke test of bench_torch_step.py (the PyTorch side of the step benchmarks): a tiny model,
both methods, one timed step; the machine-readable line is present and well-formed, and a
bad argument gives a clear error. Figures are not asserted (benchmarks never assert times)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--crop", "16,16,8", "--patch", "4", "--embed", "24", "--depth", "1", "--heads", "2",
        "--mlp", "48", "--dec-dim", "12", "--dec-depth", "1", "--dec-heads", "2", "--dec-mlp", "24",
        "--head-hidden", "16", "--head-bottleneck", "8", "--head-out", "16", "--casa-dim", "12",
        "--batch", "2", "--steps", "1", "--warmup-steps", "1"]
LINE = re.compile(r"^torch_step method=(\w+) s_per_step=([0-9.]+) peak_rss_mb=([0-9.]+) "
                  r"threads=1 batch=2 crop=16,16,8 steps=1 fwd_s=[0-9.]+ bwd_s=[0-9.]+ "
                  r"opt_s=[0-9.]+ ema_s=[0-9.]+$", re.M)


def run(args):
    return subprocess.run([sys.executable, os.path.join(HERE, "bench_torch_step.py")] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main():
    bad = 0
    for method in ("mae", "alice"):
        r = run(["--method", method] + TINY)
        print(r.stdout)
        m = LINE.search(r.stdout)
        ok = r.returncode == 0 and m is not None and m.group(1) == method \
            and float(m.group(2)) > 0 and float(m.group(3)) > 0
        print("%s %s: machine-readable line" % ("ok  " if ok else "FAIL", method))
        bad += not ok
    r = run(["--crop", "17,16,8"] + TINY[2:])
    ok = r.returncode != 0 and "not divisible by patch" in r.stdout
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "(no output)")
    print("%s crop not divisible by the patch is refused with a clear message" % ("ok  " if ok else "FAIL"))
    bad += not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Backend op calls per pre-training step, counted on the CPU backend with valgrind's callgrind.

The GPU pays per kernel launch (docs/PERFORMANCE.md: the host could not launch ~2600 kernels per
step fast enough), and every backend op is one to a few launches, so the number of op calls per
step is a launch count that any machine can measure, no GPU needed. The call sequence depends
only on the model's structure (depths, method, losses), not on its widths or crop, so the
paper configuration (jobs/pretrain_vitb_paper.cfg) runs here with its depths and tiny widths.

Two runs, `--bench-steps 1` and `--bench-steps 2` (warm-up + 1 and warm-up + 2 steps): the
difference is exactly one step, set-up excluded. Counted: calls of the functions that
src/ops/cpu_backend.c puts in the ops table, including the calls such functions make to each
other (e.g. a bf16 linear op that runs the fp32 one); the same rule for every binary compared.

  scripts/step_op_census.py [--config CFG] [KEY=VALUE ...] ALICE [ALICE_BEFORE]

ALICE is a CPU (or CUDA-linked, run with device=cpu) build of `alice`; with ALICE_BEFORE (e.g.
a build of an earlier commit) the table shows both and the change per op.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny widths that every width constraint accepts (embed_dim and dec_dim divisible by 6 and by
# the head counts of the paper file): depths, heads, method and losses stay the paper's.
TINY = ["device=cpu", "crop=64,64,32", "embed_dim=48", "mlp_dim=96", "dec_dim=24",
        "dec_mlp_dim=48", "head_hidden=32", "head_bottleneck=16", "head_out=16", "casa_dim=48",
        "batch=2"]
LINE = re.compile(r"(c?fn)=\((\d+)\)(?: (.*))?")


def table_functions():
    with open(os.path.join(REPO, "src/ops/cpu_backend.c")) as f:
        return set(re.findall(r"=\s*(cpu_\w+)\s*,", f.read()))


def callgrind_calls(alice, config, keys, steps, scratch):
    """callee name -> calls, over the whole run."""
    out = os.path.join(scratch, "callgrind.%d.out" % steps)
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, alice, "pretrain",
           "--config", config] + keys + ["--bench-steps", str(steps)]
    run = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    if run.returncode != 0:
        sys.exit("step_op_census: %s failed (exit %d):\n%s" % (" ".join(cmd), run.returncode,
                                                               run.stderr[-2000:]))
    names, calls, callee = {}, collections.Counter(), None
    with open(out) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                if m.group(3):   # a name is given at an id's first use only
                    names[m.group(2)] = m.group(3).strip()
                if m.group(1) == "cfn":   # the callee of the calls= lines that follow
                    callee = names[m.group(2)]
                continue
            if line.startswith("calls=") and callee:
                calls[callee] += int(line[6:].split()[0])
    return calls


def per_step(alice, config, keys, ops):
    with tempfile.TemporaryDirectory(prefix="op_census.") as scratch:
        one = callgrind_calls(alice, config, keys, 1, scratch)
        two = callgrind_calls(alice, config, keys, 2, scratch)
    return {op: two[op] - one[op] for op in ops if two[op] != one[op]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=os.path.join(REPO, "jobs/pretrain_vitb_paper.cfg"))
    ap.add_argument("args", nargs="+", help="KEY=VALUE overrides, then ALICE [ALICE_BEFORE]")
    a = ap.parse_args()
    keys = TINY + [x for x in a.args if "=" in x]
    bins = [x for x in a.args if "=" not in x]
    if not 1 <= len(bins) <= 2:
        ap.error("give one alice binary, or two (after, before)")
    if not shutil.which("valgrind"):
        sys.exit("step_op_census: valgrind not found (apt-get install valgrind)")
    ops = table_functions()
    counts = [per_step(b, a.config, keys, ops) for b in bins]
    print("config %s, %s" % (a.config, " ".join(keys)))
    header = ["op"] + [os.path.relpath(b) for b in bins]
    print("%-36s" % header[0] + "".join("%14s" % h[-14:] for h in header[1:]))
    names = sorted(set().union(*counts), key=lambda op: -max(c.get(op, 0) for c in counts))
    for op in names:
        print("%-36s" % op + "".join("%14d" % c.get(op, 0) for c in counts))
    totals = [sum(c.values()) for c in counts]
    print("%-36s" % "backend op calls per step" + "".join("%14d" % t for t in totals))
    if len(totals) == 2 and totals[1]:
        print("after / before: %.3f" % (totals[0] / totals[1]))


if __name__ == "__main__":
    main()

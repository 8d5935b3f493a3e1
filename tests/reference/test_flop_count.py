"""The matmul FLOP count behind the MFU figures (issue 6), three ways that must agree:
  1. `alice pretrain --bench-steps 1` (pretrain_model_step_flops in C): its flop_per_step;
  2. flops_ref.analytic: layer by layer from the configuration (Python, written from
     docs/MODEL.md, not from the C formulas);
  3. flops_ref.measured: the aten mm/addmm/bmm/baddbmm calls of one forward + backward of
     alice_ref.py's model, counted from their operand shapes.
Where torch has torch.utils.flop_counter.FlopCounterMode (>= 2.1; not Debian's 1.13), PyTorch's
own count must equal what (3) saw executed. Configs: tests/train/micro.cfg and
jobs/pretrain_tiny.cfg; mae, alice, alice without CASA, alice with teacher_decoder = embed,
alice with casa_layer = transformer, alice with cls_source = encoder, alice with casa_kv =
features (and on micro one odd mask ratio, and cls_source = encoder without l_dv; and
accum_steps = 2, whose step is two micro-batches: the analytic count of one, twice). C vs
Python to 1e-6 relative; analytic vs measured exactly.
Before that, the counter itself against hand counts of one linear layer (with and without an
input gradient) and one batched matmul, and the hand count of the patch-embedding layer.
Prints the count and the floor of the paper configuration (ViT-B/16, 192x192x64, batch 8)."""
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import alice_ref as ar  # noqa: E402
import flops_ref  # noqa: E402

REPO = ar.REPO
CONFIGS = ("tests/train/micro.cfg", "jobs/pretrain_tiny.cfg")
VARIANTS = (("mae", {"method": "mae"}), ("alice", {"method": "alice"}),
            ("alice no CASA", {"method": "alice", "use_casa": "0"}),
            ("alice embed teacher", {"method": "alice", "teacher_decoder": "embed"}),
            ("alice CASA transformer", {"method": "alice", "casa_layer": "transformer",
                                        "casa_heads": "2", "casa_ffn_dim": "40"}),
            ("alice cls encoder", {"method": "alice", "cls_source": "encoder"}),
            ("alice casa_kv features", {"method": "alice", "casa_kv": "features"}))
EXTRA = (("tests/train/micro.cfg", "alice mask 0.6", {"method": "alice", "mask_ratio": "0.6"}),
         ("tests/train/micro.cfg", "cls encoder, no l_dv",
          {"method": "alice", "cls_source": "encoder", "use_dv": "0"}),
         ("tests/train/micro.cfg", "alice accum 2", {"method": "alice", "accum_steps": "2"}))
REL_TOL = 1e-6


def load_cfg(path, overrides):
    d = ar.registry_defaults()
    with open(os.path.join(REPO, path)) as f:
        d.update(ar.parse_config_text(f.read()))
    d.update(overrides)
    return ar.Cfg(d)


class Count(TorchDispatchMode):
    """Matmul FLOPs of everything run inside (flops_ref's per-op rule)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        f = flops_ref._matmul_flops(func.overloadpacket.__name__, args)
        self.flops += f or 0
        return func(*args, **(kwargs or {}))


def hand_counts():
    """The counter against counts done by hand. Returns the list of failures."""
    fails = []
    rows, fin, fout = 6, 5, 4
    w = torch.randn(fout, fin, requires_grad=True)
    b = torch.zeros(fout, requires_grad=True)
    for input_grad, want in ((False, 2 * 240), (True, 3 * 240)):   # fwd 2*6*5*4 = 240
        x = torch.randn(2, rows // 2, fin, requires_grad=input_grad)
        with Count() as c:
            torch.nn.functional.linear(x, w, b).sum().backward()
        print("hand count: linear 6x5->4, input gradient %-5s: %4d FLOPs (hand: %d)"
              % (input_grad, c.flops, want))
        if c.flops != want:
            fails.append("linear, input gradient %s: counted %d, hand count %d"
                         % (input_grad, c.flops, want))
    q = torch.randn(2, 3, 7, 4, requires_grad=True)   # [B, heads, T, hd]
    k = torch.randn(2, 3, 5, 4, requires_grad=True)
    with Count() as c:
        (q @ k.transpose(-2, -1)).sum().backward()
    want = 3 * (2 * 2 * 3 * 7 * 5 * 4)                # fwd, dq, dk: 840 each
    print("hand count: QK^T [2,3,7,4]x[2,3,4,5] with both gradients: %d FLOPs (hand: %d)"
          % (c.flops, want))
    if c.flops != want:
        fails.append("QK^T: counted %d, hand count %d" % (c.flops, want))

    # The layer where the C and Python counts first disagreed: micro.cfg's patch embedding.
    cfg = load_cfg("tests/train/micro.cfg", {"method": "mae"})
    s = flops_ref.Sizes(cfg)
    fwd = 2 * s.B * s.nvis * s.P * s.embed_dim    # [B*nvis, P] x [P, E]
    a = flops_ref.analytic(cfg)
    print("hand count: micro patch embedding %d rows x %d -> %d: forward %d, backward %d "
          "(weight gradient only: the patches are data)" % (s.B * s.nvis, s.P, s.embed_dim, fwd, fwd))
    if a["patch_embed_fwd"] != fwd:
        fails.append("patch embedding: analytic %d, hand count %d" % (a["patch_embed_fwd"], fwd))
    return fails


def micro_batches(overrides):
    """Micro-batches of an optimiser step (accum_steps): the references count one."""
    return int(overrides.get("accum_steps", "1"))


def c_flops(alice, path, overrides):
    cmd = [alice, "pretrain", "--config", os.path.join(REPO, path), "threads=1"] + \
          ["%s=%s" % kv for kv in overrides.items()] + ["--bench-steps", "1"]
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    m = re.search(r"alice_step .* flop_per_step=([0-9]+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise RuntimeError("%s: exit %d, %s\n%s" % (" ".join(cmd), r.returncode,
                           "no flop_per_step= in its alice_step line" if r.returncode == 0 else "",
                           r.stdout[-1500:]))
    return int(m.group(1))


def main():
    torch.set_num_threads(1)
    fails = hand_counts()
    alice = os.environ.get("ALICE", os.path.join(REPO, "bin", "alice"))
    have_c = os.access(alice, os.X_OK)
    cases = [(p, name, ov) for p in CONFIGS for name, ov in VARIANTS] + list(EXTRA)
    print("%-24s %-15s %16s %16s %16s %10s" % ("config", "variant", "C", "analytic", "measured",
                                               "C rel err"))
    cross = []   # (case, FlopCounterMode's count, measured's executed count)
    for path, name, ov in cases:
        cfg = load_cfg(path, ov)
        a = flops_ref.analytic(cfg)
        m = flops_ref.measured(cfg)
        step_total = a["total"] * micro_batches(ov)   # C counts the optimiser step
        try:
            c = c_flops(alice, path, ov) if have_c else None
        except RuntimeError as e:
            fails.append(str(e))
            c = None
        rel = abs(c - step_total) / step_total if c is not None else float("nan")
        print("%-24s %-15s %16s %16d %16d %10.2e" % (os.path.basename(path), name,
                                                    c if c is not None else "-", a["total"],
                                                    m["total"], rel))
        if m["total"] != a["total"]:
            fails.append("%s %s: analytic %d, measured from alice_ref %d (fwd student %d/%d, "
                         "bwd %d/%d, teacher %d/%d)" % (path, name, a["total"], m["total"],
                                                       a["fwd_student"], m["fwd_student"],
                                                       a["bwd_student"], m["bwd_student"],
                                                       a["fwd_teacher"], m["fwd_teacher"]))
        fc = flops_ref.flop_counter_total(cfg)
        if fc is not None:
            cross.append(("%s %s" % (path, name), fc, m["total"] + m["recomputed"]))
        if c is not None and not rel <= REL_TOL:
            fails.append("%s %s: C flop_per_step %d vs Python %d (rel %.2e > %g; the patch "
                         "embedding's forward is %d)" % (path, name, c, step_total, rel, REL_TOL,
                                                         a["patch_embed_fwd"]))
    if not cross:
        print("torch.utils.flop_counter.FlopCounterMode: not in torch %s, that cross-check "
              "is left out" % torch.__version__)
    for case, fc, executed in cross:
        print("FlopCounterMode %-40s %16d (executed by alice_ref: %d)" % (case, fc, executed))
        if fc != executed:
            fails.append("%s: FlopCounterMode counts %d, the dispatch counter %d" % (case, fc, executed))
    paper = load_cfg("jobs/pretrain_vitb_paper.cfg", {"batch": "8"})
    print(flops_ref.describe(paper, "alice"))
    for f in fails:
        print("FAIL:", f)
    if fails:
        return 1
    if not have_c:
        print("skip: %s is not built (make BIN=...); the Python counts agree" % alice)
        return 77
    print("ok: C, analytic and measured counts agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch parity of the CPU backend's segmentation ops (issue 5, item 1).

tests/tools/seg_ops_dump (built by `make tests-build`) runs conv3d, conv_transpose3d,
instance norm, leaky ReLU and DiceCE forward and backward in C and writes inputs, outputs and
gradients to HDF5; this script recomputes every output and gradient with PyTorch in fp32:
torch.nn.functional.conv3d / conv_transpose3d / instance_norm / leaky_relu / cross_entropy and
a written-out MONAI-style soft Dice (softmax, one-hot labels, background included, batch=False,
smooth_nr = smooth_dr = 1e-5). Backward is the gradient of sum(y * dy) with the dumped dy.

Tolerance: for every tensor, max|C - torch| <= 1e-4 * max|torch| (relative error in the
max norm); the scalar losses within relative 1e-4.
Exit status: 0 pass, 1 fail (also when the dump tool is not built).
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

REL_TOL = 1e-4
failures = []


def check(what, got, ref):
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        failures.append(f"{what}: shape {got.shape} vs torch {ref.shape}")
        return
    scale = max(np.abs(ref).max(), 1e-30)
    err = np.abs(got - ref).max() / scale
    status = "ok  " if err <= REL_TOL else "FAIL"
    print(f"  {status} {what:40s} rel err {err:.2e}")
    if not err <= REL_TOL:
        failures.append(f"{what}: relative error {err:.3e} > {REL_TOL}")


def t(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=grad)


def conv3d_case(name, g):
    x, W, b = t(g["x"], True), t(g["W"], True), t(g["b"], True)
    y = F.conv3d(x, W, b, stride=int(g.attrs["stride"]), padding=int(g.attrs["pad"]))
    (y * t(g["dy"])).sum().backward()
    check(f"{name} y", g["y"], y.detach())
    check(f"{name} dx", g["dx"], x.grad)
    check(f"{name} dW", g["dW"], W.grad)
    check(f"{name} db", g["db"], b.grad)


def conv_transpose3d_case(name, g):
    k = int(g.attrs["k"])
    x, W, b = t(g["x"], True), t(g["W"], True), t(g["b"], True)
    y = F.conv_transpose3d(x, W, b, stride=k)
    (y * t(g["dy"])).sum().backward()
    check(f"{name} y", g["y"], y.detach())
    check(f"{name} dx", g["dx"], x.grad)
    check(f"{name} dW", g["dW"], W.grad)
    check(f"{name} db", g["db"], b.grad)


def instnorm_case(name, g):
    x = t(g["x"], True)
    affine = "gamma" in g
    gamma = t(g["gamma"], True) if affine else None
    beta = t(g["beta"], True) if affine else None
    y = F.instance_norm(x, weight=gamma, bias=beta, eps=float(g.attrs["eps"]))
    (y * t(g["dy"])).sum().backward()
    check(f"{name} y", g["y"], y.detach())
    check(f"{name} dx", g["dx"], x.grad)
    if affine:
        check(f"{name} dgamma", g["dgamma"], gamma.grad)
        check(f"{name} dbeta", g["dbeta"], beta.grad)


def leaky_relu_case(name, g):
    x = t(g["x"], True)
    y = F.leaky_relu(x, negative_slope=float(g.attrs["slope"]))
    (y * t(g["dy"])).sum().backward()
    check(f"{name} y", g["y"], y.detach())
    check(f"{name} dx", g["dx"], x.grad)


def dicece_case(name, g):
    logits = t(g["logits"], True)
    labels = torch.tensor(np.asarray(g["labels"]), dtype=torch.long)
    K = logits.shape[1]
    ce = F.cross_entropy(logits, labels)
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(labels, K).permute(0, 4, 1, 2, 3).to(p.dtype)
    dims = (2, 3, 4)
    inter = (p * onehot).sum(dims)
    denom = p.sum(dims) + onehot.sum(dims)
    dice = 1.0 - ((2.0 * inter + 1e-5) / (denom + 1e-5)).mean()
    w_ce, w_dice = float(g.attrs["w_ce"]), float(g.attrs["w_dice"])
    (w_ce * ce + w_dice * dice).backward()
    check(f"{name} probs", g["probs"], p.detach())
    check(f"{name} ce", [g.attrs["ce"]], [ce.item()])
    check(f"{name} dice", [g.attrs["dice"]], [dice.item()])
    check(f"{name} dlogits", g["dlogits"], logits.grad)


def main():
    build = os.environ.get("BUILD", "build")
    tool = os.path.join(build, "tools", "seg_ops_dump")
    if not os.access(tool, os.X_OK):
        print(f"FAIL: {tool} is not built (run make tests-build)")
        return 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "seg_ops.h5")
        subprocess.run([tool, path], check=True)
        with h5py.File(path, "r") as f:
            names = sorted(f.keys())
            cases = {"conv3d_": conv3d_case, "conv_transpose3d": conv_transpose3d_case,
                     "instnorm": instnorm_case, "leaky_relu": leaky_relu_case,
                     "dicece": dicece_case}
            seen = set()
            for name in names:
                for prefix, fn in cases.items():
                    if name.startswith(prefix):
                        fn(name, f[name])
                        seen.add(prefix)
                        break
                else:
                    failures.append(f"unknown case {name} in the dump")
            missing = set(cases) - seen
            if missing:
                failures.append(f"cases missing from the dump: {sorted(missing)}")
    for msg in failures:
        print("FAIL", msg)
    print(f"{'FAIL' if failures else 'PASS'}: seg ops vs PyTorch, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

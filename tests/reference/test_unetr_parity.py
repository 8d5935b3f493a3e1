"""PyTorch parity of the tiny UNETR (issue 5 item 2): the C dump tool's logits, DiceCE loss
terms and every parameter gradient against the MONAI-faithful reference in unetr_ref.py
(float32, relative error <= 1e-4; the float64 reference's distance is printed as the noise
floor; see unetr_ref.compare_dump for ill-conditioned gradients). Variants: depth 12 (MONAI's
own skips hs[3], hs[6], hs[9]), depth 4 with another crop and class count, and drop-path.
Fails when $BUILD/tools/unetr_dump is not built."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref  # noqa: E402
import torch  # noqa: E402
import unetr_ref  # noqa: E402

VARIANTS = [
    {"depth": "12"},
    # (seed 7 here puts a decoder4 LeakyReLU input at 6e-7 from 0, within fp32 round-off: its
    # slope flips between implementations and moves low-resolution gradients by ~0.5%)
    {"depth": "4", "crop": "32,16,32", "num_classes": "4", "feature_size": "2"},
    # drop-path in the ViT (rates 0, 0.2, 0.4, 0.6 over the 4 blocks; 4 samples, so every
    # branch is kept by some sample and its gradient seen)
    {"depth": "4", "drop_path": "0.6", "batch": "4"},
]


def main():
    build = os.environ.get("BUILD", "build")
    root = build if os.path.isabs(build) else os.path.join(alice_ref.REPO, build)
    tool = os.path.join(root, "tools", "unetr_dump")
    if not os.access(tool, os.X_OK):
        print("FAIL: %s is not built (make tests-build BUILD=%s builds it)" % (tool, build))
        return 1
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="alice_unetr_parity_")
    failed = 0
    try:
        for i, v in enumerate(VARIANTS):
            out = os.path.join(tmp, "dump%d.h5" % i)
            cmd = [tool, out] + ["%s=%s" % kv for kv in v.items()]
            print("running:", " ".join(cmd), flush=True)
            r = subprocess.run(cmd, cwd=alice_ref.REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            print(r.stdout[-3000:])
            if r.returncode != 0:
                print("FAIL: unetr_dump exited with %d" % r.returncode)
                failed += 1
                continue
            if unetr_ref.compare_dump(out):
                failed += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("unetr parity: %d of %d variants failed" % (failed, len(VARIANTS)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

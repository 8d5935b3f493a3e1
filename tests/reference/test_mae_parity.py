"""PyTorch parity of the tiny MAE (issue 2): the C dump tool's loss, every parameter gradient
and the losses of 5 AdamW steps against the reference in alice_ref.py (float32, relative error
<= 1e-4; the float64 reference's distance is printed as the noise floor).
Fails when $BUILD/tools/parity_dump is not built."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref  # noqa: E402

if __name__ == "__main__":
    # default tiny model; norm_pix off with another mask ratio (different nvis) on the odd-shaped
    # grid; global-norm clipping active (initial norm about 0.8) with an adam_eps that makes
    # Adam see the scale; drop-path on the odd-shaped grid (rates 0 and 0.5 of its two encoder
    # blocks, 3 samples)
    sys.exit(alice_ref.parity_main("mae", [
        {}, dict(alice_ref.ODD_SHAPE_VARIANT, norm_pix="0", mask_ratio="0.5"),
        {"clip": "0.1", "adam_eps": alice_ref.CLIP_VARIANT_EPS},
        dict(alice_ref.ODD_SHAPE_VARIANT, drop_path="0.5")]))

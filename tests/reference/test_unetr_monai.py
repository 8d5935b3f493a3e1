"""The UNETR reference (unetr_ref.py, a transcription of MONAI's UNETR that test_unetr_parity
checks the C model against) against MONAI 1.3.2's own monai.networks.nets.UNETR and DiceCELoss,
so the chain C -> reference -> MONAI holds with an independent last link: the reference's
parameters loaded into MONAI's UNETR by name (strict but for the position embedding, a
learnable parameter in MONAI's UNETR, set to the reference's fixed sin-cos table, which MONAI's
own build_sincos_position_embedding must reproduce), then in float64 on a random crop and
labels: logits, DiceCELoss(to_onehot_y=True, softmax=True) and every parameter's gradient
within 1e-10 relative of the largest. Two shapes: the tiny fine-tuning model (a cube) and an
anisotropic crop with another class count. Skipped (77) without MONAI."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from monai_import import monai  # noqa: E402

if monai() is None:
    sys.exit(77)
import torch  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from monai.networks.blocks.patchembedding import PatchEmbeddingBlock  # noqa: E402
from monai.networks.nets import UNETR  # noqa: E402

import alice_ref  # noqa: E402
import unetr_ref  # noqa: E402

PE = "vit.patch_embedding.position_embeddings"
SHAPES = [dict(crop="32,32,32", embed_dim="24", heads="2", mlp_dim="48", feature_size="4",
               num_classes="14"),
          dict(crop="32,16,48", embed_dim="36", heads="4", mlp_dim="40", feature_size="2",
               num_classes="4")]


def max_rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check(shape, seed):
    cfg = alice_ref.Cfg(dict(shape, depth="12", drop_path="0"))
    crop = cfg.i3("crop")
    torch.manual_seed(seed)
    ref = unetr_ref.UNETR(cfg).double()
    net = UNETR(in_channels=1, out_channels=cfg.i("num_classes"), img_size=crop,
                feature_size=cfg.i("feature_size"), hidden_size=cfg.i("embed_dim"),
                mlp_dim=cfg.i("mlp_dim"), num_heads=cfg.i("heads"), proj_type="conv",
                norm_name="instance", res_block=True, dropout_rate=0.0).double()
    missing, unexpected = net.load_state_dict(ref.state_dict(), strict=False)
    assert missing == [PE] and not unexpected, (missing, unexpected)
    # MONAI's own sin-cos table (PatchEmbeddingBlock, pos_embed_type="sincos") as the position
    # embedding: the reference's alice_ref.sincos_pos_embed must equal it
    sincos = PatchEmbeddingBlock(1, crop, 16, cfg.i("embed_dim"), 1, proj_type="conv",
                                 pos_embed_type="sincos").position_embeddings.detach().double()
    table_err = max_rel(ref.vit.pos.double().unsqueeze(0), sincos)
    with torch.no_grad():
        net.get_parameter(PE).copy_(sincos)
    x = torch.randn(2, 1, *crop, dtype=torch.float64)
    y = torch.randint(0, cfg.i("num_classes"), (2, *crop))
    out_ref = ref(x)
    loss_ref, _, _ = unetr_ref.dice_ce(out_ref, y)
    out_monai = net(x)
    loss_monai = DiceCELoss(to_onehot_y=True, softmax=True)(out_monai, y.unsqueeze(1))
    loss_ref.backward()
    loss_monai.backward()
    grads = dict(net.named_parameters())
    grad_err = max(max_rel(p.grad, grads[n].grad) for n, p in ref.named_parameters())
    errs = dict(table=table_err, logits=max_rel(out_ref, out_monai),
                loss=abs(float(loss_ref - loss_monai)) / abs(float(loss_monai)), grads=grad_err)
    print(f"crop {crop} E {cfg.i('embed_dim')} K {cfg.i('num_classes')}: loss {float(loss_ref):.6f}"
          f" (MONAI {float(loss_monai):.6f}); max relative differences " +
          ", ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    return all(v <= 1e-10 for v in errs.values())


def main():
    torch.set_num_threads(2)
    ok = all([check(s, seed) for seed, s in enumerate(SHAPES)])
    print("ok: unetr_ref is MONAI's UNETR and DiceCELoss" if ok else
          "FAIL: unetr_ref differs from MONAI's UNETR (above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch parity of the whole Alice loss (issue 4): every loss term, every online gradient
(encoder, decoder, both heads' online half, CASA), the losses of 5 AdamW steps and the EMA
targets after the first step (with align_loss = dino also the centers, which every step
updates, so the later AdamW losses see them), C dump tool against alice_ref.py (float32, relative error
<= 1e-4; the EMA also against the size of its own update).
Fails when $BUILD/tools/parity_dump is not built."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alice_ref  # noqa: E402

if __name__ == "__main__":
    # the paper's default; the ablation switches with non-unit loss weights; clipping active
    # (initial norm about 11) with an adam_eps that makes Adam see the scale, and w_dv != 1;
    # the odd-shaped grid (three different sides, batch 3, 3 heads). Every variant but the
    # teacher_decoder = embed ones runs the teacher through the whole EMA decoder (full).
    variants = [{}, {"use_casa": "0", "use_dv": "0", "w_rec": "0.7", "w_st": "2"},
                {"w_dv": "0.5", "clip": "1", "adam_eps": alice_ref.CLIP_VARIANT_EPS},
                alice_ref.ODD_SHAPE_VARIANT,
                # align_loss = dino (centers updated by every step), with and without CASA
                {"align_loss": "dino"},
                {"align_loss": "dino", "use_casa": "0", "center_momentum": "0.5"},
                # the teacher's former path: the EMA decoder_embed alone before psi
                {"teacher_decoder": "embed"},
                {"teacher_decoder": "embed", "use_casa": "0", "align_loss": "dino"},
                # the heads' plain last layer (head_norm_last = 0; every other variant
                # normalises its weight rows), with DINO's loss on CASA's outputs
                {"head_norm_last": "0", "align_loss": "dino"},
                # DINO's teacher temperature warm-up over 4 of the 5 AdamW steps (0.02 to
                # teacher_temp's 0.04: another temperature each step, then the constant)
                {"align_loss": "dino", "use_casa": "0", "warmup_teacher_temp": "0.02",
                 "warmup_teacher_temp_steps": "4"},
                # DINO's cosine weight decay schedule (0.5 towards 5 over the 5 steps: large,
                # so a schedule not followed shows in the losses of steps 2-4)
                {"weight_decay_schedule": "cosine", "weight_decay_end": "5"},
                # per-tensor clipping (DINO's clip_gradients) with Adam seeing the scale, and
                # the released code's z-tube masks (masks from the dump: the model must take
                # whole columns as any permutation)
                {"clip_mode": "per_tensor", "clip": "0.05", "adam_eps": alice_ref.CLIP_VARIANT_EPS},
                {"mask_shape": "z_tubes"},
                # the released code's reconstruction: plain MSE over every token
                {"rec_region": "all", "norm_pix": "0"},
                # the released code's CASA layer (2 heads), with both alignment losses
                {"casa_layer": "transformer", "casa_heads": "2", "casa_ffn_dim": "20"},
                {"casa_layer": "transformer", "casa_heads": "2", "casa_ffn_dim": "20",
                 "align_loss": "dino"},
                # CASA's keys and values from H and the teacher's features (casa_kv =
                # features), single and the released layer, both losses; and with the
                # embed teacher (Yd = decoder_embed(Y), no position embedding)
                {"casa_kv": "features"},
                {"casa_kv": "features", "casa_layer": "transformer", "casa_heads": "2",
                 "casa_ffn_dim": "20", "align_loss": "dino"},
                {"casa_kv": "features", "teacher_decoder": "embed"},
                # l_dv's [cls] from the encoder (head(cls_proj(mean V))), both losses
                {"cls_source": "encoder"},
                {"cls_source": "encoder", "align_loss": "dino", "use_casa": "0"},
                # DINO's freeze_last_layer: the head's last layer sits out AdamW steps 0-1, so
                # its own step count (bias corrections) trails the other tensors' from step 2
                {"freeze_last_layer": "2", "align_loss": "dino"},
                # DINOHead's initialisation (the initial weights checked against it)
                {"head_init": "dino"},
                # the linear scaling rule: lr for a global batch of 8, the dump's batch 2 (a
                # peak 4x lower: the AdamW losses move less, and differently)
                {"lr_reference_batch": "8"},
                # drop-path (0.5 at the tiny encoder's last block, per masked sample), with
                # bf16-free fp32 arithmetic as every variant
                {"drop_path": "0.5"}]
    sys.exit(alice_ref.parity_main("alice", variants))

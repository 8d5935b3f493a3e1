/* UNETR (Hatamizadeh et al. 2022) exactly as MONAI lays it out (monai.networks.nets.UNETR with
 * res_block = True, conv_block = True, norm_name = "instance", patch 16), forward and backward
 * through the ops table, parameters named as MONAI's state_dict:
 *
 *   vit.*                         our ViT encoder (docs/MODEL.md), fixed sin-cos positions
 *   encoder1.layer.*              UnetrBasicBlock(1 -> F) = UnetResBlock at full resolution
 *   encoder2.transp_conv_init.conv.weight, encoder2.blocks.{0,1}.0.conv.weight (transposed
 *                                 convs), encoder2.blocks.{0,1}.1.* (UnetResBlock): E -> 2F
 *   encoder3 (one block) E -> 4F, encoder4 (no block) E -> 8F
 *   decoder{5,4,3,2}.transp_conv.conv.weight, decoder{k}.conv_block.*  (UnetrUpBlock)
 *   out.conv.conv.{weight,bias}   UnetOutBlock, 1x1x1 conv with bias
 * A UnetResBlock "P" is P.conv1.conv.weight [C,Cin,3,3,3], P.conv2.conv.weight [C,C,3,3,3] and,
 * when Cin != C, P.conv3.conv.weight [C,Cin,1,1,1]; every conv has no bias; each is followed by
 * InstanceNorm3d(affine=False, eps 1e-5) (no parameters) and LeakyReLU(0.01), the residual
 * branch is conv3 + norm3 (or the identity), out = lrelu(norm2(conv2(...)) + residual).
 *
 * Skips: MONAI takes hidden_states_out[3], [6], [9] of its 12-block ViT (the outputs of blocks
 * 3, 6 and 9, 0-based, before the final LayerNorm) for encoder2, 3 and 4, and the normed
 * output for decoder5. For other depths we take blocks depth/4, depth/2 and 3*depth/4
 * (integer division), which is 3, 6, 9 at depth 12. */
#ifndef ALICE_UNETR_H
#define ALICE_UNETR_H

#include <stdint.h>

#include "core/config.h"
#include "models/vit.h"

enum {
    UNETR_PATCH = 16,          /* MONAI's UNETR: patch 16, four x2 up-samplings back to the crop */
    UNETR_SKIPS = 3,           /* hidden states feeding encoder2..encoder4 */
    UNETR_PRUP_MAX_LAYERS = 2, /* encoder2 has the most up-sampling blocks */
    UNETR_LEVELS = 5,          /* resolutions: grid, 2x, 4x, 8x, 16x (= crop) */
};

#define UNETR_NORM_EPS 1e-5f
#define UNETR_LEAKY_SLOPE 0.01f

/* UnetResBlock: tensor indices; conv3 is NO_PARAM when cin == cout. */
typedef struct {
    int cin, cout;
    int conv1, conv2, conv3;
} ResBlock;

typedef struct {
    /* [B, cout, V] each: conv outputs c1, c2, c3 (c3 NULL without conv3), a1 = lrelu(norm1(c1)),
     * out = lrelu(norm2(c2) + residual). The norms' outputs and the sum are not kept: the fused
     * ops make them in registers, the backward gates by the LeakyReLUs' outputs. */
    float *c1, *a1, *c2, *c3, *out;
    float *mean[3], *rstd[3];                         /* [B*cout] per instance norm */
} ResBlockActs;

/* Transposed conv kernel 2 stride 2, no bias: weight [cin, cout, 2, 2, 2]. */
typedef struct {
    int cin, cout, w;
} UpConv;

/* UnetrPrUpBlock: transp_conv_init, then `layers` x (transposed conv, UnetResBlock). */
typedef struct {
    int layers;
    UpConv init;
    UpConv up[UNETR_PRUP_MAX_LAYERS];
    ResBlock res[UNETR_PRUP_MAX_LAYERS];
    int level_in;              /* resolution level of the input (0 = token grid) */
} PrUpBlock;

typedef struct {
    float *feat;               /* [B, E, N] the hidden state as a feature volume */
    float *init_out;           /* [B, cout, 2g] */
    float *up_out[UNETR_PRUP_MAX_LAYERS];
    ResBlockActs res[UNETR_PRUP_MAX_LAYERS];
    float *out;                /* alias of the last output */
} PrUpActs;

/* UnetrUpBlock: transp_conv (x2), concat with the skip, UnetResBlock(2C -> C). */
typedef struct {
    UpConv up;
    ResBlock res;
    int level_out;
} UpBlock;

typedef struct {
    float *up_out, *cat;       /* [B, C, V], [B, 2C, V] */
    ResBlockActs res;
} UpBlockActs;

enum { DEC5, DEC4, DEC3, DEC2, UNETR_DECODERS };

typedef struct {
    Config cfg;
    const AliceBackend *be;
    int B, train;
    int E, F, K;
    int grid[3], N, P;
    int level_dim[UNETR_LEVELS][3];
    long level_vox[UNETR_LEVELS];
    int skip_block[UNETR_SKIPS];
    ParamSet ps;
    VitEncoder vit;
    ResBlock enc1;
    PrUpBlock enc[UNETR_SKIPS];          /* encoder2, encoder3, encoder4 */
    UpBlock dec[UNETR_DECODERS];
    int out_w, out_b;
    ParamRange cnn_params;   /* every tensor after the ViT: done before the ViT's backward */

    Arena arena;
    float *pos;                           /* [N, E] */
    int *identity;                        /* [B, N] */
    float *image;                         /* [B, 1, crop] */
    int *label;                           /* [B, crop] (training) */
    float *patches;                       /* [B, N, P] */
    VitEncoderActs va;
    ResBlockActs enc1_a;
    PrUpActs enc_a[UNETR_SKIPS];
    float *xfeat;                         /* [B, E, N] normed ViT output as a volume */
    UpBlockActs dec_a[UNETR_DECODERS];
    float *logits, *probs;                /* [B, K, crop] */
    /* gradients (training) */
    float *dlogits;
    float *loss_values;                   /* [SEG_LOSS_VALUE_COUNT] (ops/backend.h), backend memory */
    float *scratch[3];                    /* res-block backward scratch, largest block */
    float *dcat, *dup;                    /* up-block backward, largest level */
    float *chain[2];                      /* encoder-path ping-pong */
    float *ddec[UNETR_DECODERS];          /* w.r.t. each decoder output */
    float *denc1, *denc[UNETR_SKIPS];     /* w.r.t. each encoder output */
    float *dfeat;                         /* [B, E, N] */
    float *dvit_out;                      /* [B, N, E] */
    float *dtaps[UNETR_SKIPS];            /* [B, N, E] w.r.t. the skip hidden states */
    const float *taps[TSTACK_MAX_DEPTH];  /* per ViT block, NULL or one of dtaps */
    /* drop_path > 0 (training): staging of the ViT's drop-path scales (va.st.drop_scale,
     * tstack_drop_scale_count floats); NULL otherwise */
    float *drop_host;
    /* the step zeroes the gradients first (1, set by init); a loop accumulating micro-batches
     * sets 0 and zeroes them itself before a step's first */
    int zero_grads_in_step;
} UnetrModel;

typedef struct {
    double loss, ce, dice;
} SegLoss;

/* Registers, allocates and initialises (seed) the model for B crops of cfg->crop; train = 0
 * lays out a forward-only model (no gradients). Errors out when the configuration cannot
 * build a UNETR (patch != 16, crop not divisible by 16, embed_dim vs heads / 6). A trained
 * model with layer_decay < 1 sets its ParamSet's lr scales (unetr_layer_lr_scale). */
void unetr_init(UnetrModel *m, const Config *cfg, const AliceBackend *be, int B, int train);
void unetr_free(UnetrModel *m);
/* Layer-wise lr decay (BEiT; MAE's param_groups_lrd): the ViT is layers 0 (patch embedding),
 * 1 .. depth (blocks 0 .. depth - 1), everything after it (the ViT's final norm, the CNN) layer
 * depth + 1; layer l learns at lr x decay^(depth + 1 - l). The scale of tensor t of m's
 * ParamSet. */
float unetr_layer_lr_scale(const UnetrModel *m, int t, float decay);
/* Loads `encoder.*` of a pre-training checkpoint into `vit.*` by name; logs loaded and
 * initialised counts and returns the number loaded. Errors: another kind of checkpoint,
 * other encoder keys (checkpoint_check_encoder_source), a shape mismatch, nothing loaded. */
int unetr_load_pretrained(UnetrModel *m, const char *path);
/* Host inputs: image [B, 1, X, Y, Z] (windowed), labels [B, X, Y, Z] in 0..K-1 (may be NULL
 * for inference). */
void unetr_set_batch(UnetrModel *m, const float *image, const int32_t *label);
/* Drop-path (drop_path > 0, a trained model): draws which ViT branches the step's samples
 * first_sample .. first_sample + B - 1 (global indices, io/loader.h) drop, keyed by (seed, step,
 * global sample, RNG_DROP_PATH), and uploads them for the next unetr_enqueue_step. No-op
 * without drop-path. */
void unetr_draw_drop_path(UnetrModel *m, long step, long first_sample);
/* Forward only (inference: no drop-path); returns the logits [B, K, X, Y, Z] in backend
 * memory. */
const float *unetr_forward(UnetrModel *m);
/* Zeroes the gradients, forward, DiceCE (w_ce = w_dice = 1), backward; the loss values stay in
 * backend memory (m->loss_values). Nothing in it waits for the device, so the CUDA backend can
 * record it as a graph (train/step_graph.h); the image and labels must be in place before it. */
void unetr_enqueue_step(UnetrModel *m);
/* The loss of the step enqueued last: one read-back (it waits for the step). Labels outside
 * 0..K-1 in that step's batch stop the run (alice_die). */
SegLoss unetr_read_losses(const UnetrModel *m);
/* unetr_enqueue_step, then unetr_read_losses. */
SegLoss unetr_forward_backward(UnetrModel *m);
/* Sliding-window callback (eval/sliding_window.h SwPredictFn) with ctx = the UnetrModel:
 * windows in backend memory [B, 1, crop] (slots n..B-1 ignored), copied into the model's
 * input; returns its logits [B, K, crop] in backend memory. */
const float *unetr_predict(void *ctx, const float *windows, int n);
/* Number of voxels of one crop. */
long unetr_crop_voxels(const UnetrModel *m);
/* FLOPs of one training step (unetr_enqueue_step), counted from the model's layers: GEMMs,
 * attention (QK^T, PV) and convolutions, 2 per multiply-add; norms, activations, the loss
 * and the optimiser are not counted. Forward:
 *   ViT       vit_encoder_forward_flops (patch embedding, qkv, out-proj, MLP, attention)
 *   conv3d    2 * k^3 * Cin * Cout * output voxels * B        (stride 1, "same" padding)
 *   up-conv   2 * 2^3 * Cin * Cout * input voxels * B  (= 2 * Cin * Cout * output voxels * B:
 *             kernel = stride = 2, each output voxel gets one tap per channel pair)
 * Backward is 2x forward (weight gradient + input gradient), except where the input is data:
 * the patch embedding and encoder1's conv1 and conv3 (they read the image) run the weight
 * gradient only (1x). Cross-checked by tests/reference/unetr_flops_ref.py. */
double unetr_step_flops(const UnetrModel *m);

#endif

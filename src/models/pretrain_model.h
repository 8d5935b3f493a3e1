/* The pre-training model: MAE (method = mae) or Alice (method = alice), every loss term of
 * docs/MODEL.md, forward and backward through the ops table. The training loop owns the
 * optimiser, EMA, data and checkpoints; this owns parameters, activations and the math. */
#ifndef ALICE_PRETRAIN_MODEL_H
#define ALICE_PRETRAIN_MODEL_H

#include "core/config.h"
#include "models/casa.h"
#include "models/mae_decoder.h"
#include "models/proj_head.h"
#include "models/vit.h"

/* The four views of a step (Alice); MAE uses only VIEW_MASKED_Q. */
typedef enum { VIEW_MASKED_Q, VIEW_MASKED_K, VIEW_INTACT_Q, VIEW_INTACT_K, VIEW_COUNT } ViewId;
/* Masked view m pairs with intact view PAIRED_INTACT(m) of the same crop. */
#define MASKED_VIEWS 2
#define PAIRED_INTACT(m) ((m) == VIEW_MASKED_Q ? VIEW_INTACT_Q : VIEW_INTACT_K)
/* ... and with the intact view of the OTHER crop for the cross-volume loss l_dv. */
#define CROSS_INTACT(m) ((m) == VIEW_MASKED_Q ? VIEW_INTACT_K : VIEW_INTACT_Q)

typedef struct {
    double loss, l_r, l_dv, l_st;
} LossTerms;

/* The loss values the loss ops of a step leave in backend memory (PretrainModel.loss_values),
 * read back once per step by pretrain_model_read_losses. */
typedef enum { LOSS_VALUE_REC, LOSS_VALUE_DV, LOSS_VALUE_ST, LOSS_VALUE_COUNT } LossValueId;

/* align_loss = dino: the running means of the teacher outputs subtracted before the teacher
 * softmax (DINO's centering), one for the pooled [cls] rows of l_dv and one for the token rows
 * of l_st. They are state (checkpointed under /buffers with these names), not parameters. */
typedef enum { CENTER_CLS, CENTER_TOKENS, CENTER_COUNT } CenterId;
extern const char *const pretrain_center_names[CENTER_COUNT];

/* buf (backend memory, n floats) <- its mean over every rank of the job. */
typedef void (*AllreduceMeanFn)(float *buf, size_t n, void *ctx);

/* The online ("student") branch runs EVERY masked view of the step as one forward and one
 * backward over S = views x B samples (views = MASKED_VIEWS for Alice, 1 for MAE), laid out
 * view after view ([view 0's B samples][view 1's B samples]), like the teacher's intact batch
 * below: half the launches of a pass per view, GEMMs of S x tokens rows, and one backward whose
 * gradients are final as they complete. Masked sample s pairs with intact sample s (the same
 * crop, PAIRED_INTACT); each view has the same number of masked tokens and rows, so a mean over
 * the merged rows is the mean of the per-view means. */
typedef struct {
    int S;                /* samples: views x B */
    float *vol;           /* [S, X, Y, Z] */
    int *perm;            /* [S, N] */
    float *mask;          /* [S*N], 1 = masked */
    float *patches;       /* [S, N, P] */
    float *target;        /* [S*N, P] reconstruction target */
    float *dpred;         /* [S*N, P] */
    float *dV;            /* [S, nvis, E] */
    VitEncoderActs enc;
    MaeDecoderActs dec;
    ProjHeadActs phi;     /* Alice only */
    float *cls, *dcls;    /* [S, out] pooled phi, its gradient */
    float *cls_cross;     /* [S, out] the pooled teacher rows l_dv compares sample s with: those
                           * of the CROSS_INTACT view's same sample */
    /* cls_source = encoder: cls = phi(cls_proj(mean of V)) through phi_cls (S rows) */
    float *pooled, *cls_in, *dpooled, *dV_cls;   /* [S, E], [S, D], [S, E], [S, nvis, E] */
    ProjHeadActs phi_cls;
    CasaQuery cq;
    CasaKV student, teacher;
    float *sel_s, *sel_t, *dsel;   /* no-CASA: head outputs at the visible positions */
} MaskedBatchActs;

/* One masked view's inputs: its B samples' slice of MaskedBatchActs. */
typedef struct {
    float *vol;           /* [B, X, Y, Z] */
    int *perm;            /* [B, N] */
    float *mask;          /* [B*N] */
} MaskedViewSlice;

/* The EMA target ("teacher") runs BOTH intact views as one forward over MASKED_VIEWS x B
 * samples, laid out view after view ([view 0's B samples][view 1's B samples]): half the
 * launches of a forward per view, and GEMMs of MASKED_VIEWS x B x N rows (on the GPU the
 * teacher is launch-bound). One forward-only stack of 2B costs the memory of two of B. */
typedef struct {
    float *vol;           /* [MASKED_VIEWS * B, X, Y, Z] */
    /* [MASKED_VIEWS * B, N, P] in the arena's act_type: read only by the target's patch
     * embedding GEMM, so with bf16 activations patchify_bf16 stores them rounded (the bits
     * the GEMM's fp32 operand path would round to: no rounding launch, half the buffer) */
    Act patches;
    VitEncoderActs enc;   /* forward only, all tokens */
    /* psi's input [MASKED_VIEWS * B, N, D]: with teacher_decoder = full the EMA decoder's H
     * (dec: its blocks over all tokens, forward only; bf16 with bf16 activations), with embed
     * the EMA decoder_embed output (yd, fp32) */
    MaeDecoderActs dec;
    float *yd;
    Act feat;
    ProjHeadActs psi;     /* forward only, MASKED_VIEWS * B * N rows */
    float *cls;           /* [MASKED_VIEWS * B, out] */
    /* cls_source = encoder: cls = psi(cls_proj(mean of Y)), the target's copies */
    float *pooled, *cls_in;                      /* [MASKED_VIEWS * B, E], [.., D] */
    ProjHeadActs psi_cls;
} IntactBatchActs;

/* One intact view: its B samples' slice of IntactBatchActs (every pointer an offset into the
 * merged buffers), so the losses read a view's teacher outputs as if it ran alone. */
typedef struct {
    float *vol;           /* [B, X, Y, Z] */
    Act patches;          /* [B, N, P], IntactBatchActs.patches' type */
    float *enc_out;       /* [B, N, E] target encoder output */
    Act feat;             /* [B, N, D] psi's input (IntactBatchActs.feat) */
    ProjHeadActs psi;     /* forward tensors of the view's B * N rows (psi.z: [B * N, out]) */
    float *cls;           /* [B, out] */
} IntactViewActs;

typedef struct {
    Config cfg;
    const AliceBackend *be;
    int alice;
    int teacher_full;    /* teacher_decoder = full */
    /* casa_kv = features (Alice with CASA): CASA's keys and values read H and the teacher's
     * features (dec_dim wide, kept fp32) instead of the heads' outputs */
    int casa_features;
    int B, dims[3], grid[3], N, nvis, P;
    ParamSet online, target;
    /* align_loss = dino (Alice only): non-trainable centers; dino is 0 otherwise and buffers
     * stays empty (count 0), so cosine checkpoints are unchanged. */
    int dino;
    float teacher_temp;             /* dino: this step's (pretrain_model_begin_step) */
    ParamSet buffers;
    int center[CENTER_COUNT];       /* tensor indices in buffers */
    float *center_batch;            /* [CENTER_COUNT, out] batch means, then all-reduced */
    VitEncoder enc;
    MaeDecoder dec;
    ProjHead head;
    Casa casa;
    /* cls_source = encoder: the linear map of the pooled encoder tokens to the head's input
     * width (in the head's parameter range; NO_PARAM otherwise) */
    int cls_encoder, cls_proj_w, cls_proj_b;
    /* Tensor ranges reported done after their module's backward (the encoder's blocks report
     * themselves); head and casa are empty for MAE. */
    ParamRange decoder_params, head_params, casa_params;
    float *posE, *posD;
    int *identity;                     /* [N]: 0 .. N-1, read with idx_ld = 0 by every sample */
    Arena arena;
    float *loss_values;                /* [LOSS_VALUE_COUNT], backend memory */
    MaskedBatchActs masked;            /* every masked view, one student pass */
    MaskedViewSlice mv[MASKED_VIEWS];  /* slices of masked (MAE: mv[0] only) */
    IntactBatchActs intact;            /* Alice: both intact views, one teacher forward */
    IntactViewActs iv[MASKED_VIEWS];   /* indexed by view - VIEW_INTACT_Q; slices of intact */
    int *perm_host;                    /* [S, N] staging of the drawn masks */
    /* drop_path > 0: staging of the student encoder's drop-path scales (masked.enc.st's
     * drop_scale, tstack_drop_scale_count floats), drawn with the masks; NULL otherwise */
    float *drop_host;
    int *column_perm;                  /* mask_shape = z_tubes: [N / grid z], else NULL */
    float *mask_host;                  /* [S * N] */
    /* T (CASA on the teacher features) uses the online query and CASA weights but is a
     * stop-gradient target. With freeze_teacher set, a forward keeps the T of the previous
     * forward, so finite differences see the loss exactly as the analytic gradient treats it. */
    int freeze_teacher;
    /* The step zeroes the gradients first (1, set by init); a loop accumulating micro-batches
     * sets 0 and zeroes them itself before the first, so one recorded step serves each. */
    int zero_grads_in_step;
    /* align_loss = dino with accumulation: the sum of the collected micro-batches' teacher means
     * ([CENTER_COUNT, out], backend memory) and how many (pretrain_model_collect_centers) */
    float *center_sum;
    int centers_collected;
} PretrainModel;

/* Registers, allocates and initialises everything for B samples per step; errors out (before
 * any work) when the configuration is inconsistent. */
void pretrain_model_init(PretrainModel *m, const Config *cfg, const AliceBackend *be, int B);
void pretrain_model_free(PretrainModel *m);
/* Draws the masks of the step for global samples first_sample .. first_sample + B - 1, and
 * with drop_path > 0 which of the student encoder's residual branches each masked sample drops
 * (the same sample words as the masks, RNG_DROP_PATH). */
void pretrain_model_draw_masks(PretrainModel *m, long step, long first_sample);
/* Sets the masks explicitly (host [B, N] per masked view; tests and parity dumps). */
void pretrain_model_set_masks(PretrainModel *m, int view, const int *perm_host);
/* Where the views handed to the model live: host memory (uploaded), or memory of the model's
 * own backend (copied on its stream, e.g. batches the loader rendered or uploaded to the GPU). */
typedef enum { VIEWS_FROM_HOST, VIEWS_FROM_DEVICE } ViewTransfer;
/* views[v]: [B, X, Y, Z] crops where `from` says; views the method does not read may be NULL. */
void pretrain_model_transfer_views(PretrainModel *m, const float *const views[VIEW_COUNT],
                                   ViewTransfer from);
/* pretrain_model_transfer_views from host memory. */
void pretrain_model_set_views(PretrainModel *m, const float *const views[VIEW_COUNT]);
/* Zeroes the gradients, runs forward and backward; the loss values stay in backend memory
 * (m->loss_values). Nothing in it waits for the device, so the CUDA backend can capture it. */
void pretrain_model_enqueue_step(PretrainModel *m);
/* The loss terms of the step enqueued last: one read-back (it waits for the step). */
LossTerms pretrain_model_read_losses(const PretrainModel *m);
/* Sets the scalars step `step` (0-based) reads that change from step to step: DINO's teacher
 * temperature during its warm-up (pretrain_teacher_temp). Returns 1 when they are those of
 * every later step too, so a recorded step (train/step_graph.h) replays them; 0 while they
 * still change (the step must run eagerly). The model starts at step 0's. Also marks the
 * tensors that sit out this step's optimiser update (online.held: the head's last layer while
 * step < freeze_last_layer), host state read after the recorded work, not part of it. */
int pretrain_model_begin_step(PretrainModel *m, long step);
/* pretrain_model_enqueue_step, then pretrain_model_read_losses. */
LossTerms pretrain_model_forward_backward(PretrainModel *m);
/* align_loss = dino: after the step (DINO updates the centers after the loss of the step),
 * c <- center_momentum c + (1 - center_momentum) mean over rows of this step's teacher outputs,
 * the mean taken over every rank through allreduce_mean: those of the forward just run, or with
 * micro-batches collected (pretrain_model_collect_centers) the mean of theirs, and the
 * collection starts again. No-op for cosine and MAE. */
void pretrain_model_update_centers(PretrainModel *m, AllreduceMeanFn allreduce_mean, void *ctx);
/* Gradient accumulation, align_loss = dino: after each micro-batch's forward, adds the means
 * of its teacher rows to the step's sum (the same rows as update_centers reads). No-op else. */
void pretrain_model_collect_centers(PretrainModel *m);
/* Matmul FLOPs of one forward + backward step (backward counted as 2x forward). */
double pretrain_model_step_flops(const PretrainModel *m);
/* Collapse monitor of the alignment losses: the spread of the teacher head's l2-normalised
 * token outputs, sqrt(dim) x mean over dims of their standard deviation over tokens (about 1
 * for outputs spread over the sphere, 0 when every token maps to the same vector: then l_dv and
 * l_st carry no signal). pretrain_model_feature_sums puts this rank's per-dimension sums and
 * sums of squares of the intact Q view's rows ([dim] each) and the row count in sums
 * [2 head_out + 1] and returns how many it wrote (0 for MAE: no heads); summed over the ranks,
 * pretrain_feature_spread(sums, head_out) is the spread over every rank's tokens. Downloads
 * one view's outputs: call at log steps. */
int pretrain_model_feature_sums(const PretrainModel *m, double *sums);
double pretrain_feature_spread(const double *sums, int dim);
/* DINO's teacher temperature at 0-based step: warmup_teacher_temp_steps values from
 * warmup_teacher_temp to teacher_temp, both included (DINO's np.linspace), then teacher_temp. */
float pretrain_teacher_temp(const Config *cfg, long step);
/* EMA momentum at step s of `steps` (cosine from ema_start to ema_end). */
float pretrain_ema_momentum(const Config *cfg, long step);

#endif

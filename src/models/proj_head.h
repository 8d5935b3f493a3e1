/* DINO-style projection head: 3-layer MLP (GELU) to an l2-normalised bottleneck, then a
 * bias-free linear layer to the output width. phi (online, on the decoder output H) and psi
 * (its EMA, on the target features) share this definition and tensor indices.
 *
 * Mixed precision (nn/act.h): with bf16 activations the hidden layers h1, h1g (= GELU(h1)),
 * h2, h2g are bf16 Acts, as the transformer blocks keep their MLP's h and hg: fc1 and fc2
 * write bf16 from their GEMMs, the GELUs read and write bf16, and the backward of fc2 and fc1
 * runs through their GELU in the fused op (act_linear_gelu_bwd). The fp32 input x is rounded
 * to bf16 once (x16) for fc1's forward and weight gradient (a bf16 input, proj_head_forward_act,
 * is read as it is). The input x, the bottleneck b and
 * bn, the output z and every gradient stay fp32 (losses and CASA read z as float *). With fp32
 * activations the head computes exactly what the fp32 ops compute, bit for bit.
 *
 * norm_last (config head_norm_last, DINO's norm_last_layer): `last` multiplies by its weight
 * with every row (output unit) l2-normalised, W_k / max(||W_k||, eps), the weight-norm gain
 * fixed at 1, so each logit is bounded by ||bn|| = 1. The parameter stays the raw W (AdamW
 * and the EMA act on it); its gradient goes back through the row normalisation. */
#ifndef ALICE_PROJ_HEAD_H
#define ALICE_PROJ_HEAD_H

#include "nn/act.h"
#include "nn/arena.h"
#include "nn/params.h"

#define HEAD_L2_EPS 1e-12f

typedef struct {
    int in, hidden, bottleneck, out;
    int norm_last;
    int fc1_w, fc1_b, fc2_w, fc2_b, fc3_w, fc3_b, last_w;
} ProjHead;

typedef struct {
    int rows, train;
    /* x16: the input rounded to bf16 [rows, in] with bf16 activations (p NULL with fp32 ones,
     * which read x itself). h1 .. h2g: [rows, hidden] of the arena's activation type; laid out
     * forward only, h2 shares h1's memory and h2g h1g's (each is dead when the next is written),
     * so their contents there are the last written. */
    Act x16, h1, h1g, h2, h2g;
    float *b, *bn, *norms, *z;
    /* norm_last: last's row-normalised weight [out, bottleneck] and its row norms [out], made
     * by each forward (NULL otherwise). A slice (proj_head_rows) shares them. */
    float *w_unit, *w_norms;
    float *dz;                          /* gradient w.r.t. z, accumulated by the losses (training) */
    /* training scratch, fp32; dx: w.r.t. the input. dh_scratch [rows, hidden]: fc2's GELU
     * backward scratch (act_linear_gelu_bwd); fc1's uses dh2g, dead by then. */
    float *dbn, *db, *dh2g, *dh1g, *dh_scratch, *dx;
    /* norm_last, training: the gradients w.r.t. w_unit and (before accumulation) W */
    float *dw_unit, *dw_last;
} ProjHeadActs;

/* dino_init (config head_init = dino): DINOHead's initialisation, fc1-fc3 weights normal(0,
 * 0.02) and the last layer's nn.Linear default, uniform(+-1/sqrt(bottleneck)); else every weight
 * Xavier-uniform. Biases 0. */
void proj_head_register(ProjHead *h, ParamSet *ps, const char *prefix, int in, int hidden,
                        int bottleneck, int out, int norm_last, int dino_init);
/* The activation type is the arena's (ar->act_type), like the transformer stacks'. */
void proj_head_layout(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows, int train);
/* proj_head_layout for an input of type input_type (proj_head_forward_act): a bf16 input is
 * fc1's operand as it is, so no x16 copy is laid out (p NULL) nor made. */
void proj_head_layout_for_input(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows,
                                int train, DType input_type);
void proj_head_forward(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, const float *x);
/* proj_head_forward on an input of either type: fp32 is proj_head_forward; a bf16 x (already
 * rounded by its producer, e.g. the MAE decoder's final LayerNorm) is read by fc1's GEMMs
 * directly, the bits they would take from x16 (the producer rounded as to_bf16 does). */
void proj_head_forward_act(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, Act x);
/* Rows [first, first + rows) of forward-only activations `all` (train = 0), as activations of
 * their own: readers of one part of a batched forward (the teacher's two views). */
ProjHeadActs proj_head_rows(const ProjHead *h, const ProjHeadActs *all, size_t first,
                            size_t rows);
/* Uses a->dz; writes a->dx. x: the input the forward read (fp32 activations read it again for
 * fc1's weight gradient; bf16 ones read x16). */
void proj_head_backward(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, const float *x);
/* proj_head_backward after proj_head_forward_act: x the same Act. */
void proj_head_backward_act(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, Act x);

#endif

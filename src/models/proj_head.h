/* DINO-style projection head: 3-layer MLP (GELU) to an l2-normalised bottleneck, then a
 * bias-free linear layer to the output width. phi (online, on the decoder output H) and psi
 * (its EMA, on the target features) share this definition and tensor indices. */
#ifndef ALICE_PROJ_HEAD_H
#define ALICE_PROJ_HEAD_H

#include "nn/arena.h"
#include "nn/params.h"

#define HEAD_L2_EPS 1e-12f

typedef struct {
    int in, hidden, bottleneck, out;
    int fc1_w, fc1_b, fc2_w, fc2_b, fc3_w, fc3_b, last_w;
} ProjHead;

typedef struct {
    int rows, train;
    float *h1, *h1g, *h2, *h2g, *b, *bn, *norms, *z;
    float *dz;                          /* gradient w.r.t. z, accumulated by the losses (training) */
    float *dbn, *db, *dh2g, *dh2, *dh1g, *dh1, *dx;   /* training scratch; dx: w.r.t. the input */
} ProjHeadActs;

void proj_head_register(ProjHead *h, ParamSet *ps, const char *prefix, int in, int hidden,
                        int bottleneck, int out);
void proj_head_layout(const ProjHead *h, ProjHeadActs *a, Arena *ar, int rows, int train);
void proj_head_forward(const ProjHead *h, ProjHeadActs *a, const ParamSet *ps, const float *x);
/* Rows [first, first + rows) of forward-only activations `all` (train = 0), as activations of
 * their own: readers of one part of a batched forward (the teacher's two views). */
ProjHeadActs proj_head_rows(const ProjHead *h, const ProjHeadActs *all, size_t first,
                            size_t rows);
/* Uses a->dz; writes a->dx. */
void proj_head_backward(const ProjHead *h, ProjHeadActs *a, ParamSet *ps, const float *x);

#endif

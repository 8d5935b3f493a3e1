/* Small conveniences over the backend for layers whose weights live in a ParamSet. */
#ifndef ALICE_LAYERS_H
#define ALICE_LAYERS_H

#include "nn/params.h"

#define NO_PARAM (-1)

/* y = x W^T + b for the tensors W = ps[w] [out, in], b = ps[b] (or NO_PARAM). */
static inline void linear_forward(const ParamSet *ps, int w, int b, float *y, const float *x,
                                  int rows, int in, int out)
{
    ps->be->linear_fwd(y, x, param(ps, w), b == NO_PARAM ? NULL : param(ps, b), rows, in, out);
}

/* dx = dy W (NULL skips); dW, db accumulate into the ParamSet's gradients. */
static inline void linear_backward(ParamSet *ps, int w, int b, float *dx, const float *dy,
                                   const float *x, int rows, int in, int out)
{
    ps->be->linear_bwd(dx, param_grad(ps, w), b == NO_PARAM ? NULL : param_grad(ps, b), dy, x,
                       param(ps, w), rows, in, out);
}

/* Registers a Linear layer "<prefix>.weight" [out, in] (+ "<prefix>.bias"), the weight
 * Xavier-uniform (register_linear) or initialised by `init`, the bias zeros. */
void register_linear(ParamSet *ps, const char *prefix, int in, int out, int bias, int *w, int *b);
void register_linear_init(ParamSet *ps, const char *prefix, int in, int out, int bias,
                          ParamInit init, int *w, int *b);
/* Registers a LayerNorm "<prefix>.weight" and "<prefix>.bias" of width dim. */
void register_layernorm(ParamSet *ps, const char *prefix, int dim, int *w, int *b);

/* MONAI's fixed 3D sin-cos position embedding for a grid (gx, gy, gz) and width dim
 * (divisible by 6), written to host memory pos [gx*gy*gz, dim]. */
void sincos_position_embedding_3d(float *pos, const int grid[3], int dim);

#endif

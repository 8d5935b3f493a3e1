#include "nn/layers.h"

#include <math.h>
#include <stdio.h>

#include "core/check.h"

void register_linear(ParamSet *ps, const char *prefix, int in, int out, int bias, int *w, int *b)
{
    register_linear_init(ps, prefix, in, out, bias, INIT_XAVIER_UNIFORM, w, b);
}

void register_linear_init(ParamSet *ps, const char *prefix, int in, int out, int bias,
                          ParamInit init, int *w, int *b)
{
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", prefix);
    *w = params_add2(ps, name, out, in, 1, init);
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        *b = params_add1(ps, name, out, 0, INIT_ZEROS);
    } else {
        *b = NO_PARAM;
    }
}

void register_layernorm(ParamSet *ps, const char *prefix, int dim, int *w, int *b)
{
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", prefix);
    *w = params_add1(ps, name, dim, 0, INIT_ONES);
    snprintf(name, sizeof name, "%s.bias", prefix);
    *b = params_add1(ps, name, dim, 0, INIT_ZEROS);
}

void sincos_position_embedding_3d(float *pos, const int grid[3], int dim)
{
    ALICE_ASSERT(dim % 6 == 0, "sin-cos position embedding needs a width divisible by 6, got %d", dim);
    int k = dim / 6;
    int n = 0;
    for (int h = 0; h < grid[0]; h++)
        for (int w = 0; w < grid[1]; w++)
            for (int d = 0; d < grid[2]; d++, n++) {
                float *row = pos + (size_t)n * dim;
                /* MONAI order: w, h, d, each as sin then cos. */
                const int coord[3] = {w, h, d};
                for (int c = 0; c < 3; c++)
                    for (int i = 0; i < k; i++) {
                        double omega = 1.0 / pow(10000.0, (double)i / k);
                        row[(2 * c) * k + i] = (float)sin(coord[c] * omega);
                        row[(2 * c + 1) * k + i] = (float)cos(coord[c] * omega);
                    }
            }
}

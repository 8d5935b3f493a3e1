/* The CUDA backend table: every op of src/ops/backend.h, implemented in cuda/cuda_<concern>.cu.
 * The first call picks this rank's device and creates stream and library handles; it errors
 * out with a clear message when no device is visible. */
#include "cuda/cuda_context.h"
#include "cuda/cuda_ops.h"

static AliceBackend g_table;

static void fill_table(AliceBackend *t)
{
    t->name = "cuda";
    /* memory */
    t->alloc = cuda_alloc;
    t->release = cuda_release;
    t->upload = cuda_upload;
    t->download = cuda_download;
    t->copy = cuda_copy;
    t->fill = cuda_fill;
    t->synchronize = cuda_synchronize;
    /* elementwise and reductions */
    t->axpby = cuda_axpby;
    t->scale = cuda_scale;
    t->add = cuda_add;
    t->sum_squares = cuda_sum_squares;
    t->all_finite = cuda_all_finite;
    /* normalisation and activations */
    t->gelu_fwd = cuda_gelu_fwd;
    t->gelu_bwd = cuda_gelu_bwd;
    t->leaky_relu_fwd = cuda_leaky_relu_fwd;
    t->leaky_relu_bwd = cuda_leaky_relu_bwd;
}

extern "C" const AliceBackend *backend_cuda(void)
{
    cuda_context_init();
    if (!g_table.name) fill_table(&g_table);
    return &g_table;
}

/* The CUDA backend table: every op of src/ops/backend.h, implemented in cuda/cuda_<concern>.cu.
 * The first call picks this rank's device and creates stream and library handles; it errors
 * out with a clear message when no device is visible. */
#include "cuda/cuda_context.h"
#include "cuda/cuda_graph.h"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"

static AliceBackend g_table;

static void fill_table(AliceBackend *t)
{
    t->name = "cuda";
    /* memory */
    t->alloc = cuda_alloc;
    t->release = cuda_release;
    /* Entries that may write weight buffers keep their bf16 copies honest (weights_aware). */
    t->upload = cuda_upload_weights_aware;
    t->download = cuda_download;
    t->copy = cuda_copy_weights_aware;
    t->fill = cuda_fill_weights_aware;
    t->synchronize = cuda_synchronize;
    t->weights_hint = cuda_weights_hint;
    t->weights_forget = cuda_weights_forget;
    /* elementwise and reductions */
    t->axpby = cuda_axpby_weights_aware;
    t->scale = cuda_scale_weights_aware;
    t->add = cuda_add_weights_aware;
    t->add_group_scaled = cuda_add_group_scaled;
    t->sum_squares = cuda_sum_squares;
    /* GEMM */
    t->gemm = cuda_gemm;
    t->linear_fwd = cuda_linear_fwd;
    t->linear_bwd = cuda_linear_bwd;
    /* normalisation and activations */
    t->layernorm_fwd = cuda_layernorm_fwd;
    t->layernorm_bwd = cuda_layernorm_bwd;
    t->gelu_fwd = cuda_gelu_fwd;
    t->gelu_bwd = cuda_gelu_bwd;
    t->softmax_fwd = cuda_softmax_fwd;
    t->softmax_bwd = cuda_softmax_bwd;
    /* attention */
    t->attention_fwd = cuda_attention_fwd;
    t->attention_bwd = cuda_attention_bwd;
    t->attention_saved_floats = cuda_attention_saved_floats;
    /* patches and tokens */
    t->patchify = cuda_patchify;
    t->unpatchify = cuda_unpatchify;
    t->gather_rows = cuda_gather_rows;
    t->patchify_bf16 = cuda_patchify_bf16;
    t->gather_rows_bf16 = cuda_gather_rows_bf16;
    t->scatter_add_rows = cuda_scatter_add_rows;
    t->add_table_rows = cuda_add_table_rows;
    t->insert_mask_tokens = cuda_insert_mask_tokens;
    t->insert_mask_tokens_bwd = cuda_insert_mask_tokens_bwd;
    /* pooling, vector normalisation, losses */
    t->mean_rows_fwd = cuda_mean_rows_fwd;
    t->mean_rows_bwd = cuda_mean_rows_bwd;
    t->l2norm_fwd = cuda_l2norm_fwd;
    t->l2norm_bwd = cuda_l2norm_bwd;
    t->cosine_loss_fwd = cuda_cosine_loss_fwd;
    t->cosine_loss_bwd = cuda_cosine_loss_bwd;
    t->soft_ce_fwd = cuda_soft_ce_fwd;
    t->soft_ce_bwd = cuda_soft_ce_bwd;
    t->normalize_rows = cuda_normalize_rows;
    t->masked_mse_fwd = cuda_masked_mse_fwd;
    t->masked_mse_bwd = cuda_masked_mse_bwd;
    /* optimiser and target network */
    t->adamw = cuda_adamw;
    t->ema_update = cuda_ema_update;
    t->clip_segments = cuda_clip_segments;
    /* 3D convolution network ops */
    t->conv3d_fwd = cuda_conv3d_fwd;
    t->conv3d_bwd = cuda_conv3d_bwd;
    t->conv_transpose3d_fwd = cuda_conv_transpose3d_fwd;
    t->conv_transpose3d_bwd = cuda_conv_transpose3d_bwd;
    t->instnorm_fwd = cuda_instnorm_fwd_selected;  /* own kernels or cuDNN: gpu_set_instnorm */
    t->instnorm_bwd = cuda_instnorm_bwd_selected;
    t->leaky_relu_fwd = cuda_leaky_relu_fwd;
    t->leaky_relu_bwd = cuda_leaky_relu_bwd;
    t->sw_gather_window = cuda_sw_gather_window;
    t->sw_blend_window = cuda_sw_blend_window;
    t->sw_finish = cuda_sw_finish;
    t->instnorm_lrelu_fwd = cuda_instnorm_lrelu_fwd_selected;
    t->instnorm_lrelu_bwd = cuda_instnorm_lrelu_bwd_selected;
    t->dicece_fwd = cuda_dicece_fwd;
    t->dicece_bwd = cuda_dicece_bwd;
    t->concat_channels = cuda_concat_channels;
    t->split_channels = cuda_split_channels;
    t->transpose_tokens = cuda_transpose_tokens;
    /* mixed precision: bf16 activations */
    t->linear_fwd_bf16 = cuda_linear_fwd_bf16;
    t->linear_bwd_bf16 = cuda_linear_bwd_bf16;
    t->layernorm_fwd_bf16 = cuda_layernorm_fwd_bf16;
    t->add_layernorm_fwd = cuda_add_layernorm_fwd;
    t->gelu_fwd_bf16 = cuda_gelu_fwd_bf16;
    t->gelu_bwd_bf16 = cuda_gelu_bwd_bf16;
    t->linear_gelu_bwd_bf16 = cuda_linear_gelu_bwd_bf16;
    t->attention_fwd_bf16 = cuda_attention_fwd_bf16;
    t->attention_bwd_bf16 = cuda_attention_bwd_bf16;
    t->attention_bwd_bf16_grad16 = cuda_attention_bwd_bf16_grad16;
    t->linear_bwd_bf16_dy16 = cuda_linear_bwd_bf16_dy16;
    t->linear_bwd_bf16_dx16 = cuda_linear_bwd_bf16_dx16;
    t->linear_bwd_bf16_dy16_dx16 = cuda_linear_bwd_bf16_dy16_dx16;
    t->linear_gelu_bwd_bf16_dy16 = cuda_linear_gelu_bwd_bf16_dy16;
    t->layernorm_bwd_dx16 = cuda_layernorm_bwd_dx16;
    t->to_bf16 = cuda_to_bf16;
    /* graphs: the step recorded once, replayed with one launch (cuda/cuda_graph.cu) */
    t->graph_capture_begin = cuda_graph_capture_begin;
    t->graph_capture_end = cuda_graph_capture_end;
    t->graph_launch = cuda_graph_launch;
    t->graph_free = cuda_graph_free;
}

extern "C" const AliceBackend *backend_cuda(void)
{
    cuda_context_init();
    if (!g_table.name) fill_table(&g_table);
    return &g_table;
}

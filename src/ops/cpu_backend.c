/* The CPU backend table: every op of ops/backend.h on OpenMP + OpenBLAS. */
#include "ops/backend.h"
#include "ops/cpu_ops.h"

static const AliceBackend cpu_backend = {
    .name = "cpu",

    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .synchronize = cpu_synchronize,
    .weights_hint = cpu_weights_hint,
    .weights_forget = cpu_weights_forget,

    .axpby = cpu_axpby,
    .scale = cpu_scale,
    .add = cpu_add,
    .sum_squares = cpu_sum_squares,

    .gemm = cpu_gemm,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,

    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .softmax_fwd = cpu_softmax_fwd,
    .softmax_bwd = cpu_softmax_bwd,

    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .attention_saved_floats = cpu_attention_saved_floats,

    .patchify = cpu_patchify,
    .unpatchify = cpu_unpatchify,
    .gather_rows = cpu_gather_rows,
    .patchify_bf16 = cpu_patchify_bf16,
    .gather_rows_bf16 = cpu_gather_rows_bf16,
    .scatter_add_rows = cpu_scatter_add_rows,
    .add_table_rows = cpu_add_table_rows,
    .insert_mask_tokens = cpu_insert_mask_tokens,
    .insert_mask_tokens_bwd = cpu_insert_mask_tokens_bwd,

    .mean_rows_fwd = cpu_mean_rows_fwd,
    .mean_rows_bwd = cpu_mean_rows_bwd,
    .l2norm_fwd = cpu_l2norm_fwd,
    .l2norm_bwd = cpu_l2norm_bwd,
    .cosine_loss_fwd = cpu_cosine_loss_fwd,
    .cosine_loss_bwd = cpu_cosine_loss_bwd,
    .soft_ce_fwd = cpu_soft_ce_fwd,
    .soft_ce_bwd = cpu_soft_ce_bwd,
    .normalize_rows = cpu_normalize_rows,
    .masked_mse_fwd = cpu_masked_mse_fwd,
    .masked_mse_bwd = cpu_masked_mse_bwd,

    .adamw = cpu_adamw,
    .ema_update = cpu_ema_update,

    .conv3d_fwd = cpu_conv3d_fwd,
    .conv3d_bwd = cpu_conv3d_bwd,
    .conv_transpose3d_fwd = cpu_conv_transpose3d_fwd,
    .conv_transpose3d_bwd = cpu_conv_transpose3d_bwd,
    .instnorm_fwd = cpu_instnorm_fwd,
    .instnorm_bwd = cpu_instnorm_bwd,
    .leaky_relu_fwd = cpu_leaky_relu_fwd,
    .leaky_relu_bwd = cpu_leaky_relu_bwd,
    .dicece_fwd = cpu_dicece_fwd,
    .dicece_bwd = cpu_dicece_bwd,
    .concat_channels = cpu_concat_channels,
    .split_channels = cpu_split_channels,
    .transpose_tokens = cpu_transpose_tokens,

    .linear_fwd_bf16 = cpu_linear_fwd_bf16,
    .linear_bwd_bf16 = cpu_linear_bwd_bf16,
    .layernorm_fwd_bf16 = cpu_layernorm_fwd_bf16,
    .gelu_fwd_bf16 = cpu_gelu_fwd_bf16,
    .gelu_bwd_bf16 = cpu_gelu_bwd_bf16,
    .linear_gelu_bwd_bf16 = cpu_linear_gelu_bwd_bf16,
    .attention_fwd_bf16 = cpu_attention_fwd_bf16,
    .attention_bwd_bf16 = cpu_attention_bwd_bf16,
    .attention_bwd_bf16_grad16 = cpu_attention_bwd_bf16_grad16,
    .linear_bwd_bf16_dy16 = cpu_linear_bwd_bf16_dy16,
    .linear_bwd_bf16_dx16 = cpu_linear_bwd_bf16_dx16,
    .linear_bwd_bf16_dy16_dx16 = cpu_linear_bwd_bf16_dy16_dx16,
    .linear_gelu_bwd_bf16_dy16 = cpu_linear_gelu_bwd_bf16_dy16,
    .layernorm_bwd_dx16 = cpu_layernorm_bwd_dx16,
    .to_bf16 = cpu_to_bf16,
};

const AliceBackend *backend_cpu(void) { return &cpu_backend; }

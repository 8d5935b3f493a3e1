/* Multi-head scaled dot-product attention of the CUDA backend. With the fused kernel selected
 * (gpu_set_attention(ATTN_KERNEL_FUSED), heads up to 128 wide) both entry points hand over to
 * cuda/cuda_flash_attention.cu, which saves only the row logsumexp. Otherwise: per batch
 * element, strided batched GEMMs over the heads (head h of q lives at column h*Dh of rows with
 * stride ldq, so the head stride is Dh and one GEMM call covers all heads), plus warp-per-row
 * softmax kernels. The probabilities [B, H, Tq, Tk] are materialised and saved for backward
 * (8 x 12 x 576^2 floats = 127 MiB per ViT-B block at the paper's batch: the fused kernel's
 * reason to exist). GEMMs go through cuda_gemm, so they follow the backend's math mode
 * (fp32 / TF32 / bf16). Forward only (saved NULL: the EMA target, inference): bf16 operands at
 * head widths 32 and 64 take the register-resident flash forward (cuda/cuda_flash_fwd_mma.cuh)
 * whatever kernel is selected; otherwise the probabilities go to a scratch buffer. */
#include <math.h>
#include <stdint.h>

#include "cuda/cuda_attention_cudnn.h"  /* attention_kernel = cudnn: bf16 entry points */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_ops.h"
#include "cuda/cuda_weight_copy.h"  /* cuda_round_to_bf16 */

constexpr int kRowsPerBlock = kThreads / 32;

/* In place: ds = scale * p * (dp - sum(dp p)) (softmax backward with the logit scale). */
static __global__ void attention_softmax_bwd_kernel(float *ds, const float *p, int rows, int cols,
                                                    float scale)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float *dr = ds + (size_t)row * cols;
    const float *pr = p + (size_t)row * cols;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += dr[c] * pr[c];
    const float dot = warp_sum(s);
    for (int c = lane; c < cols; c += 32) dr[c] = scale * pr[c] * (dr[c] - dot);
}

void cuda_attention_fwd(float *out, float *saved, const float *q, const float *k, const float *v,
                        int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0) return;
    /* Forward only (saved NULL) with bf16 GEMM operands: the register-resident flash kernel,
     * which rounds q, k and P to bf16 as this path's GEMMs do. */
    if (cuda_flash_attention_applies(Dh) ||
        (!saved && cuda_context()->bf16_gemm && cuda_flash_fwd_fast(Dh))) {
        cuda_flash_attention_fwd(out, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
        return;
    }
    const long probs_floats = (long)B * H * Tq * Tk;
    float *probs = saved ? saved
                         : (float *)cuda_scratch(SCRATCH_ATTN_PROBS, probs_floats * sizeof(float));
    const float scale = 1.0f / sqrtf((float)Dh);
    const long per_b = (long)H * Tq * Tk, head_tile = (long)Tq * Tk;
    for (int b = 0; b < B; b++)  /* S = scale q k^T for every head of element b */
        cuda_gemm(0, 1, Tq, Tk, Dh, scale, q + (size_t)b * Tq * ldq, ldq, Dh,
                  k + (size_t)b * Tk * ldkv, ldkv, Dh, 0.0f, probs + (size_t)b * per_b, Tk,
                  head_tile, H);
    cuda_softmax_fwd(probs, probs, B * H * Tq, Tk);
    const int C = H * Dh;
    for (int b = 0; b < B; b++)  /* out = P v, heads interleaved into [Tq, H*Dh] */
        cuda_gemm(0, 0, Tq, Dh, Tk, 1.0f, probs + (size_t)b * per_b, Tk, head_tile,
                  v + (size_t)b * Tk * ldkv, ldkv, Dh, 0.0f, out + (size_t)b * Tq * C, C, Dh, H);
}

void cuda_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                        const float *k, const float *v, const float *out, const float *saved,
                        int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0) return;
    if (cuda_flash_attention_applies(Dh)) {
        cuda_flash_attention_bwd(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh, ldq,
                                 ldkv);
        return;
    }
    const float *probs = saved;  /* the GEMM path needs no out: probs give the row dot */
    const float scale = 1.0f / sqrtf((float)Dh);
    const long per_b = (long)H * Tq * Tk, head_tile = (long)Tq * Tk;
    const int C = H * Dh;
    float *ds = (float *)cuda_scratch(SCRATCH_ATTN_GRAD, (size_t)per_b * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *qb = q + (size_t)b * Tq * ldq, *kb = k + (size_t)b * Tk * ldkv;
        const float *vb = v + (size_t)b * Tk * ldkv, *pb = probs + (size_t)b * per_b;
        const float *dob = dout + (size_t)b * Tq * C;
        if (dv)  /* dv = P^T dout */
            cuda_gemm(1, 0, Tk, Dh, Tq, 1.0f, pb, Tk, head_tile, dob, C, Dh, 0.0f,
                      dv + (size_t)b * Tk * ldkv, ldkv, Dh, H);
        if (!dq && !dk) continue;
        /* dP = dout v^T, then dS = scale * softmax_bwd(dP) */
        cuda_gemm(0, 1, Tq, Tk, Dh, 1.0f, dob, C, Dh, vb, ldkv, Dh, 0.0f, ds, Tk, head_tile, H);
        const int rows = H * Tq;
        attention_softmax_bwd_kernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0,
                                       cuda_stream()>>>(ds, pb, rows, Tk, scale);
        CUDA_CHECK_LAUNCH();
        if (dq)  /* dq = dS k */
            cuda_gemm(0, 0, Tq, Dh, Tk, 1.0f, ds, Tk, head_tile, kb, ldkv, Dh, 0.0f,
                      dq + (size_t)b * Tq * ldq, ldq, Dh, H);
        if (dk)  /* dk = dS^T q */
            cuda_gemm(1, 0, Tk, Dh, Tq, 1.0f, ds, Tk, head_tile, qb, ldq, Dh, 0.0f,
                      dk + (size_t)b * Tk * ldkv, ldkv, Dh, H);
    }
}

/* ---- bf16 activations: bf16 q, k, v, out ----
 * GEMM kernel: QK^T and PV as bf16-operand batched GEMMs straight on the strided bf16 inputs
 * (no rounding pass); scores, softmax and the saved probabilities fp32; P rounded to bf16 (one
 * batch element at a time, SCRATCH_ATTN_BF16) for PV, whose bf16 D rounds out once from the
 * fp32 accumulator. Backward: dout rounded to bf16 once (SCRATCH_BF16_A); dP = dout V^T and the
 * softmax backward in fp32; dS rounded to bf16 (the P slot, free once dV is done) for
 * dQ = dS K and dK = dS^T Q; dV = P^T dout. Gradients fp32 with q's / kv's strides. */

void cuda_attention_fwd_bf16(bf16_t *out, float *saved, const bf16_t *q, const bf16_t *k,
                             const bf16_t *v, int B, int H, int Tq, int Tk, int Dh, int ldq,
                             int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0) return;
    if (cuda_cudnn_attention_takes(q, k, v, out, Dh, ldq, ldkv) &&
        cuda_cudnn_attention_fwd_bf16(out, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv))
        return;
    if (cuda_flash_attention_applies(Dh) || (!saved && cuda_flash_fwd_fast(Dh))) {
        cuda_flash_attention_fwd_bf16(out, saved, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
        return;
    }
    const float scale = 1.0f / sqrtf((float)Dh);
    const long per_b = (long)H * Tq * Tk, head_tile = (long)Tq * Tk;
    const int C = H * Dh;
    float *probs = saved ? saved
                         : (float *)cuda_scratch(SCRATCH_ATTN_PROBS, B * per_b * sizeof(float));
    for (int b = 0; b < B; b++)  /* S = scale q k^T for every head of element b */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, scale, q + (size_t)b * Tq * ldq, ldq, Dh,
                                k + (size_t)b * Tk * ldkv, ldkv, Dh, 0.0f,
                                probs + (size_t)b * per_b, DTYPE_F32, Tk, head_tile, H);
    cuda_softmax_fwd(probs, probs, B * H * Tq, Tk);
    __nv_bfloat16 *p16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, (size_t)per_b * sizeof(__nv_bfloat16));
    for (int b = 0; b < B; b++) {  /* out = P v, heads interleaved into [Tq, H*Dh], in bf16 */
        cuda_round_to_bf16(p16, probs + (size_t)b * per_b, (size_t)per_b);
        cuda_gemm_bf16_operands(0, 0, Tq, Dh, Tk, 1.0f, (const bf16_t *)p16, Tk, head_tile,
                                v + (size_t)b * Tk * ldkv, ldkv, Dh, 0.0f,
                                out + (size_t)b * Tq * C, DTYPE_BF16, C, Dh, H);
    }
}

void cuda_attention_bwd_bf16(float *dq, float *dk, float *dv, const float *dout, const bf16_t *q,
                             const bf16_t *k, const bf16_t *v, const bf16_t *out,
                             const float *saved, int B, int H, int Tq, int Tk, int Dh, int ldq,
                             int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0) return;
    if (cuda_cudnn_attention_takes(q, k, v, out, Dh, ldq, ldkv) &&
        cuda_cudnn_attention_bwd_bf16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh,
                                      ldq, ldkv))
        return;
    if (cuda_flash_attention_applies(Dh)) {
        cuda_flash_attention_bwd_bf16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk, Dh,
                                      ldq, ldkv);
        return;
    }
    if (!dq && !dk && !dv) return;
    const float *probs = saved;  /* the GEMM path needs no out: probs give the row dot */
    const float scale = 1.0f / sqrtf((float)Dh);
    const long per_b = (long)H * Tq * Tk, head_tile = (long)Tq * Tk;
    const int C = H * Dh;
    const size_t n_dout = (size_t)B * Tq * C;
    __nv_bfloat16 *dout16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n_dout * sizeof(__nv_bfloat16));
    cuda_round_to_bf16(dout16, dout, n_dout);
    float *ds = (float *)cuda_scratch(SCRATCH_ATTN_GRAD, (size_t)per_b * sizeof(float));
    __nv_bfloat16 *op16 =  /* P for dV, then dS for dQ and dK */
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, (size_t)per_b * sizeof(__nv_bfloat16));
    const bf16_t *op = (const bf16_t *)op16;
    for (int b = 0; b < B; b++) {
        const bf16_t *qb = q + (size_t)b * Tq * ldq, *kb = k + (size_t)b * Tk * ldkv;
        const bf16_t *vb = v + (size_t)b * Tk * ldkv;
        const bf16_t *dob = (const bf16_t *)(dout16 + (size_t)b * Tq * C);
        const float *pb = probs + (size_t)b * per_b;
        if (dv) {  /* dv = P^T dout */
            cuda_round_to_bf16(op16, pb, (size_t)per_b);
            cuda_gemm_bf16_operands(1, 0, Tk, Dh, Tq, 1.0f, op, Tk, head_tile, dob, C, Dh, 0.0f,
                                    dv + (size_t)b * Tk * ldkv, DTYPE_F32, ldkv, Dh, H);
        }
        if (!dq && !dk) continue;
        /* dP = dout v^T (fp32), then dS = scale * softmax_bwd(dP) in fp32, rounded once */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, 1.0f, dob, C, Dh, vb, ldkv, Dh, 0.0f, ds,
                                DTYPE_F32, Tk, head_tile, H);
        const int rows = H * Tq;
        attention_softmax_bwd_kernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0,
                                       cuda_stream()>>>(ds, pb, rows, Tk, scale);
        CUDA_CHECK_LAUNCH();
        /* the dv GEMM is done with P (stream order): its slot takes dS now */
        cuda_round_to_bf16(op16, ds, (size_t)per_b);
        if (dq)  /* dq = dS k */
            cuda_gemm_bf16_operands(0, 0, Tq, Dh, Tk, 1.0f, op, Tk, head_tile, kb, ldkv, Dh, 0.0f,
                                    dq + (size_t)b * Tq * ldq, DTYPE_F32, ldq, Dh, H);
        if (dk)  /* dk = dS^T q */
            cuda_gemm_bf16_operands(1, 0, Tk, Dh, Tq, 1.0f, op, Tk, head_tile, qb, ldq, Dh, 0.0f,
                                    dk + (size_t)b * Tk * ldkv, DTYPE_F32, ldkv, Dh, H);
    }
}

/* ---- bf16 gradients through fp32 stand-ins (attention_bwd_bf16_grad16 on the GEMM kernel) ----
 * (tests/cuda_emu/test_flash_attention_emulated.sh cuts this section out, up to
 * cuda_attention_bwd_bf16_grad16, and runs it on the host with the flash kernels as bwd32.)
 * The GEMM kernel's gradients come out of cuBLASLt in fp32; a bf16 output would let cuBLASLt
 * pick another kernel (another summation order, other bits), so the gradients are computed in
 * fp32 into stand-ins and rounded afterwards, one launch per gradient. Stand-ins of views whose
 * element ranges overlap or touch (dq, dk, dv in one packed dqkv) share one region at the same
 * element offsets, each region 256-byte aligned like the arena: the GEMMs see the strides and
 * (as far as cuBLASLt's alignment classes, capped at 16 bytes, go) the alignments of an fp32
 * gradient buffer with the bf16 one's layout, so they are the GEMMs, and give the bits, that
 * attention_bwd_bf16 into such a buffer gives. */

enum { kGradViews = 3, kStandInAlign = 256 };

struct GradViews {
    bf16_t *view[kGradViews];    /* dq, dk, dv (NULL: not needed) */
    long rows[kGradViews];
    int ld[kGradViews];
    size_t span[kGradViews];     /* elements from a view's first to its last */
    size_t offset[kGradViews];   /* byte offset of its fp32 stand-in in the scratch */
    size_t bytes;                /* scratch the stand-ins take */
};

/* Sorts the views by address, merges overlapping or touching ones and places each merged
 * range's stand-in. */
static void grad_views_place(GradViews *g)
{
    int order[kGradViews], n = 0;
    for (int i = 0; i < kGradViews; i++)
        if (g->view[i]) order[n++] = i;
    for (int i = 1; i < n; i++)  /* insertion sort: at most three */
        for (int j = i; j > 0 && (uintptr_t)g->view[order[j]] < (uintptr_t)g->view[order[j - 1]];
             j--) {
            const int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    g->bytes = 0;
    for (int first = 0; first < n;) {
        const uintptr_t start = (uintptr_t)g->view[order[first]];
        uintptr_t end = start + g->span[order[first]] * sizeof(bf16_t);
        int last = first + 1;
        for (; last < n && (uintptr_t)g->view[order[last]] <= end; last++) {
            const uintptr_t e = (uintptr_t)g->view[order[last]] + g->span[order[last]] * sizeof(bf16_t);
            end = e > end ? e : end;
        }
        const size_t region = (g->bytes + kStandInAlign - 1) / kStandInAlign * kStandInAlign;
        for (int m = first; m < last; m++)
            g->offset[order[m]] =
                region + ((uintptr_t)g->view[order[m]] - start) / sizeof(bf16_t) * sizeof(float);
        g->bytes = region + (end - start) / sizeof(bf16_t) * sizeof(float);
        first = last;
    }
}

/* dst[r ld + c] = src[r ld + c] rounded to bf16 (nearest even, as cuda_round_to_bf16) for
 * r < rows, c < cols: the view's own elements only, what lies between its rows is left. */
static __global__ void round_rows_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, long rows,
                                                 int cols, int ld)
{
    GRID_STRIDE(i, (size_t)rows * cols) {
        const size_t r = i / (size_t)cols, c = i % (size_t)cols;
        dst[r * (size_t)ld + c] = __float2bfloat16_rn(src[r * (size_t)ld + c]);
    }
}

void cuda_attention_bwd_bf16_rounded_after(CudaAttentionBwdBf16Fn bwd32, bf16_t *dq, bf16_t *dk,
                                           bf16_t *dv, const float *dout, const bf16_t *q,
                                           const bf16_t *k, const bf16_t *v, const bf16_t *out,
                                           const float *saved, int B, int H, int Tq, int Tk,
                                           int Dh, int ldq, int ldkv)
{
    const int C = H * Dh;
    GradViews g = {{dq, dk, dv}, {(long)B * Tq, (long)B * Tk, (long)B * Tk}, {ldq, ldkv, ldkv},
                   {0, 0, 0}, {0, 0, 0}, 0};
    for (int i = 0; i < kGradViews; i++)
        g.span[i] = g.rows[i] > 0 && C > 0 ? (size_t)(g.rows[i] - 1) * g.ld[i] + C : 0;
    grad_views_place(&g);
    unsigned char *scratch = (unsigned char *)cuda_scratch(SCRATCH_ATTN_GRAD_F32, g.bytes + 1);
    float *f32[kGradViews];
    for (int i = 0; i < kGradViews; i++)
        f32[i] = g.view[i] ? (float *)(scratch + g.offset[i]) : NULL;
    bwd32(f32[0], f32[1], f32[2], dout, q, k, v, out, saved, B, H, Tq, Tk, Dh, ldq, ldkv);
    for (int i = 0; i < kGradViews; i++) {
        const size_t n = (size_t)g.rows[i] * C;
        if (!g.view[i] || n == 0) continue;
        round_rows_to_bf16_kernel<<<grid_for(n), kThreads, 0, cuda_stream()>>>(
            as_nv(g.view[i]), f32[i], g.rows[i], C, g.ld[i]);
        CUDA_CHECK_LAUNCH();
    }
}

void cuda_attention_bwd_bf16_grad16(bf16_t *dq, bf16_t *dk, bf16_t *dv, const float *dout,
                                    const bf16_t *q, const bf16_t *k, const bf16_t *v,
                                    const bf16_t *out, const float *saved, int B, int H, int Tq,
                                    int Tk, int Dh, int ldq, int ldkv)
{
    if (B <= 0 || H <= 0 || Tq <= 0) return;
    /* cuDNN stores bf16 gradients itself; what it declines (misaligned destinations, shapes
     * it builds no graph for) takes the flash backward on the same saved logsumexp */
    if (cuda_cudnn_attention_takes(q, k, v, out, Dh, ldq, ldkv) &&
        cuda_cudnn_attention_bwd_bf16_grad16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq,
                                             Tk, Dh, ldq, ldkv))
        return;
    if (cuda_flash_attention_applies(Dh)) {  /* rounded in the kernels' store */
        cuda_flash_attention_bwd_bf16_grad16(dq, dk, dv, dout, q, k, v, out, saved, B, H, Tq, Tk,
                                             Dh, ldq, ldkv);
        return;
    }
    if (!dq && !dk && !dv) return;
    cuda_attention_bwd_bf16_rounded_after(cuda_attention_bwd_bf16, dq, dk, dv, dout, q, k, v, out,
                                          saved, B, H, Tq, Tk, Dh, ldq, ldkv);
}

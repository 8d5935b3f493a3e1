/* Multi-head scaled dot-product attention of the CUDA backend. The bf16 entry points first
 * offer the call to cuDNN's fused attention (cuda_cudnn_attention_takes: attention_kernel =
 * cudnn, or the default auto at head widths 32 and 64; src/ops/attention_choice.h). Where the
 * flash kernels apply (cuda_flash_attention_applies: fused, heads up to 128 wide, or auto's bf16
 * widths 32 and 64) the entry points hand over to cuda/cuda_flash_attention.cu, which saves
 * only the row logsumexp (as cuDNN does). Otherwise: per batch
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

/* ds = scale * p * (dp - sum(dp p)) (softmax backward with the logit scale), one warp per row,
 * dp read from ds. ds16 NULL: written in place in fp32. ds16 given (bf16 GEMMs, whose only
 * consumers of dS are the two bf16-operand GEMMs): the same fp32 value rounded (nearest even, as
 * cuda_round_to_bf16) into ds16 instead, ds left as it was, so no rounding pass over dS follows.
 * (tests/cuda_emu/test_attention_softmax_bwd_emulated.sh cuts this kernel and its launch out.) */
static __global__ void attention_softmax_bwd_kernel(float *ds, __nv_bfloat16 *ds16, const float *p,
                                                    int rows, int cols, float scale)
{
    const int row = blockIdx.x * kRowsPerBlock + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float *dr = ds + (size_t)row * cols;
    const float *pr = p + (size_t)row * cols;
    float s = 0.0f;
    for (int c = lane; c < cols; c += 32) s += dr[c] * pr[c];
    const float dot = warp_sum(s);
    for (int c = lane; c < cols; c += 32) {
        const float g = scale * pr[c] * (dr[c] - dot);
        if (ds16) ds16[(size_t)row * cols + c] = __float2bfloat16_rn(g);
        else dr[c] = g;
    }
}

static void launch_attention_softmax_bwd(float *ds, __nv_bfloat16 *ds16, const float *p, int rows,
                                         int cols, float scale)
{
    attention_softmax_bwd_kernel<<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0,
                                   cuda_stream()>>>(ds, ds16, p, rows, cols, scale);
    CUDA_CHECK_LAUNCH();
}

/* ---- the fp32 entry points under bf16 GEMMs (gpu_set_math(bf16_gemm = 1)) ----
 * cuda_gemm would round each fp32 operand of every per-element GEMM on its own (bf16_operand:
 * 4 rounding launches per batch element forward, 8 backward; CASA's 16 elements made 256 of a
 * paper step's 284). Here each operand is rounded ONCE per call over all B elements: q, k and v
 * over their whole strided spans, P and dout whole, dS in the softmax backward's store. With
 * several heads the GEMMs are the ones cuda_gemm ran (bf16 operands, fp32 output, the same
 * shapes, leading dimensions and batch strides) on the same rounded values; element b's slice
 * starts b * (rows x ld) elements into its copy, which keeps the alignment class (capped at 16
 * bytes) of a fresh scratch slot whenever that offset is a multiple of 8 elements, hence the
 * same cuBLASLt plans and bits. With one head (CASA) the B elements are one batched GEMM
 * (attention_batches below): the same products, possibly in other cuBLASLt kernels, so within
 * the bf16 GEMM path's tolerances of the per-element calls, not bit for bit. Either way the
 * results equal, bit for bit, the bf16 entry points' on the inputs rounded (which batch the
 * same way; test_backend_parity test_attention_rounded_once). */

/* Elements of a strided view from its first to its last: rows of cols at leading dim ld. */
static size_t view_span(long rows, int cols, int ld)
{
    return rows > 0 && cols > 0 ? (size_t)(rows - 1) * (size_t)ld + (size_t)cols : 0;
}

enum { kOperandAlignBytes = 256 };  /* as a fresh scratch slot (cudaMalloc) */
/* The slot of the bf16 q, k, v copies: that of the fp32 stand-ins of the bf16-gradient entry
 * (cuda_attention_bwd_bf16_rounded_after), which never runs inside an fp32-entry call, so the
 * two uses never overlap (a slot of its own would be a cuda_context.h change). */
static const CudaScratchSlot kOperandSlot = SCRATCH_ATTN_GRAD_F32;

static size_t align_operand_bytes(size_t bytes)
{
    return (bytes + kOperandAlignBytes - 1) / kOperandAlignBytes * kOperandAlignBytes;
}

struct AttentionOperands16 {
    const __nv_bfloat16 *q, *k, *v;  /* NULL where the fp32 view was NULL (not needed) */
};

/* bf16 copies of the q, k, v views that are given (B elements, C = H*Dh columns per row), each
 * at its own 256-byte aligned offset of kOperandSlot: one rounding launch each. */
static AttentionOperands16 round_attention_operands(const float *q, const float *k,
                                                    const float *v, int B, int Tq, int Tk, int C,
                                                    int ldq, int ldkv)
{
    const float *src[3] = {q, k, v};
    const size_t n[3] = {q ? view_span((long)B * Tq, C, ldq) : 0,
                         k ? view_span((long)B * Tk, C, ldkv) : 0,
                         v ? view_span((long)B * Tk, C, ldkv) : 0};
    size_t at[3], bytes = 0;
    for (int i = 0; i < 3; i++) {
        at[i] = bytes;
        bytes += align_operand_bytes(n[i] * sizeof(__nv_bfloat16));
    }
    unsigned char *base = (unsigned char *)cuda_scratch(kOperandSlot, bytes + 1);
    const __nv_bfloat16 *dst[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        if (!src[i]) continue;
        __nv_bfloat16 *d = (__nv_bfloat16 *)(base + at[i]);
        cuda_round_to_bf16(d, src[i], n[i]);
        dst[i] = d;
    }
    return AttentionOperands16{dst[0], dst[1], dst[2]};
}

/* How the bf16 GEMM paths issue each per-element product: H heads of one batch element as one
 * strided batch of H GEMMs (head stride Dh), B calls; a single head (CASA) makes the B elements
 * one strided batch instead (element stride rows x ld), one call: its small products (16
 * elements of 144 x 576 at the paper's batch) fill the GPU together, and one launch replaces B.
 * The fp32 mode keeps its per-element calls (its results unchanged bit for bit). */
struct AttentionBatches {
    int calls;     /* GEMM calls per product: B (one per element) or 1 */
    int batch;     /* GEMMs per call: the H heads of one element, or the B elements of one head */
    int elements;  /* batch elements per call: 1, or B (call c starts at element c either way) */
};

static AttentionBatches attention_batches(int B, int H)
{
    return H == 1 ? AttentionBatches{1, B, B} : AttentionBatches{B, H, 1};
}

/* An operand's batch stride: its element stride when a call spans elements, else the head's. */
static long batch_stride(const AttentionBatches &g, long element_stride, long head_stride)
{
    return g.elements > 1 ? element_stride : head_stride;
}

/* The geometry the bf16 GEMM paths share: the logit scale, the probabilities' sizes, how each
 * product is batched and every operand's batch stride under that batching. */
struct AttentionGemmLayout {
    float scale;        /* 1 / sqrt(Dh) */
    long per_b;         /* probabilities (or dS) of one batch element: H x Tq x Tk */
    int C;              /* the out / dout row: H x Dh */
    AttentionBatches g; /* calls x batch of each product */
    long sq, skv;       /* batch strides of q, and of k / v (and their gradients) */
    long sp, so;        /* batch strides of P / dS, and of out / dout */
};

static AttentionGemmLayout attention_gemm_layout(int B, int H, int Tq, int Tk, int Dh, int ldq,
                                                 int ldkv)
{
    AttentionGemmLayout lay;
    lay.scale = 1.0f / sqrtf((float)Dh);
    lay.per_b = (long)H * Tq * Tk;
    const long head_tile = (long)Tq * Tk;
    lay.C = H * Dh;
    lay.g = attention_batches(B, H);
    lay.sq = batch_stride(lay.g, (long)Tq * ldq, Dh);
    lay.skv = batch_stride(lay.g, (long)Tk * ldkv, Dh);
    lay.sp = batch_stride(lay.g, lay.per_b, head_tile);
    lay.so = batch_stride(lay.g, (long)Tq * lay.C, Dh);
    return lay;
}

/* The GEMM-kernel forward with every operand rounded once: S = scale q k^T, softmax, out = P v
 * (probs: B x per_b fp32, saved or scratch). */
static void attention_fwd_rounded_once(float *out, float *probs, const float *q, const float *k,
                                       const float *v, int B, int H, int Tq, int Tk, int Dh,
                                       int ldq, int ldkv)
{
    const AttentionGemmLayout lay = attention_gemm_layout(B, H, Tq, Tk, Dh, ldq, ldkv);
    const AttentionOperands16 in = round_attention_operands(q, k, v, B, Tq, Tk, lay.C, ldq, ldkv);
    const bf16_t *q16 = (const bf16_t *)in.q, *k16 = (const bf16_t *)in.k;
    const bf16_t *v16 = (const bf16_t *)in.v;
    for (int c = 0; c < lay.g.calls; c++)  /* c: the call's first element (0 when one call) */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, lay.scale, q16 + (size_t)c * Tq * ldq, ldq,
                                lay.sq, k16 + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f,
                                probs + (size_t)c * lay.per_b, DTYPE_F32, Tk, lay.sp, lay.g.batch);
    cuda_softmax_fwd(probs, probs, B * H * Tq, Tk);
    const size_t n_probs = (size_t)B * lay.per_b;
    __nv_bfloat16 *p16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, n_probs * sizeof(__nv_bfloat16));
    cuda_round_to_bf16(p16, probs, n_probs);
    for (int c = 0; c < lay.g.calls; c++)
        cuda_gemm_bf16_operands(
            0, 0, Tq, Dh, Tk, 1.0f, (const bf16_t *)(p16 + (size_t)c * lay.per_b), Tk, lay.sp,
            v16 + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f, out + (size_t)c * Tq * lay.C,
            DTYPE_F32, lay.C, lay.so, lay.g.batch);
}

/* The GEMM-kernel backward with every operand rounded once: dout and P whole, the q, k, v a
 * wanted gradient needs, and dS of each call's elements in the softmax backward's store. */
static void attention_bwd_rounded_once(float *dq, float *dk, float *dv, const float *dout,
                                       const float *q, const float *k, const float *v,
                                       const float *probs, int B, int H, int Tq, int Tk, int Dh,
                                       int ldq, int ldkv)
{
    if (!dq && !dk && !dv) return;
    const AttentionGemmLayout lay = attention_gemm_layout(B, H, Tq, Tk, Dh, ldq, ldkv);
    const size_t per_call = (size_t)lay.g.elements * lay.per_b;  /* dS of one call's elements */
    const int want_ds = dq || dk;
    /* dS needs dout and v; dq = dS k, dk = dS^T q; dv = P^T dout */
    const AttentionOperands16 in = round_attention_operands(
        dk ? q : NULL, dq ? k : NULL, want_ds ? v : NULL, B, Tq, Tk, lay.C, ldq, ldkv);
    const bf16_t *q16 = (const bf16_t *)in.q, *k16 = (const bf16_t *)in.k;
    const bf16_t *v16 = (const bf16_t *)in.v;
    const size_t n_dout = (size_t)B * Tq * lay.C;
    __nv_bfloat16 *dout16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n_dout * sizeof(__nv_bfloat16));
    cuda_round_to_bf16(dout16, dout, n_dout);
    __nv_bfloat16 *p16 = NULL;
    if (dv) {
        const size_t n_probs = (size_t)B * lay.per_b;
        p16 = (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, n_probs * sizeof(__nv_bfloat16));
        cuda_round_to_bf16(p16, probs, n_probs);
    }
    float *ds = want_ds ? (float *)cuda_scratch(SCRATCH_ATTN_GRAD, per_call * sizeof(float))
                        : NULL;
    __nv_bfloat16 *ds16 =
        want_ds ? (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_B, per_call * sizeof(__nv_bfloat16))
                : NULL;
    for (int c = 0; c < lay.g.calls; c++) {  /* c: the call's first element (0 when one call) */
        const bf16_t *dob = (const bf16_t *)(dout16 + (size_t)c * Tq * lay.C);
        if (dv)  /* dv = P^T dout */
            cuda_gemm_bf16_operands(1, 0, Tk, Dh, Tq, 1.0f,
                                    (const bf16_t *)(p16 + (size_t)c * lay.per_b), Tk, lay.sp, dob,
                                    lay.C, lay.so, 0.0f, dv + (size_t)c * Tk * ldkv, DTYPE_F32,
                                    ldkv, lay.skv, lay.g.batch);
        if (!want_ds) continue;
        /* dP = dout v^T (fp32), then dS = scale * softmax_bwd(dP), stored rounded in ds16 */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, 1.0f, dob, lay.C, lay.so,
                                v16 + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f, ds, DTYPE_F32, Tk,
                                lay.sp, lay.g.batch);
        launch_attention_softmax_bwd(ds, ds16, probs + (size_t)c * lay.per_b,
                                     lay.g.elements * H * Tq, Tk, lay.scale);
        const bf16_t *ds16c = (const bf16_t *)ds16;
        if (dq)  /* dq = dS k */
            cuda_gemm_bf16_operands(0, 0, Tq, Dh, Tk, 1.0f, ds16c, Tk, lay.sp,
                                    k16 + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f,
                                    dq + (size_t)c * Tq * ldq, DTYPE_F32, ldq, lay.sq, lay.g.batch);
        if (dk)  /* dk = dS^T q */
            cuda_gemm_bf16_operands(
                1, 0, Tk, Dh, Tq, 1.0f, ds16c, Tk, lay.sp, q16 + (size_t)c * Tq * ldq, ldq, lay.sq,
                0.0f, dk + (size_t)c * Tk * ldkv, DTYPE_F32, ldkv, lay.skv, lay.g.batch);
    }
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
    if (cuda_context()->bf16_gemm) {
        attention_fwd_rounded_once(out, probs, q, k, v, B, H, Tq, Tk, Dh, ldq, ldkv);
        return;
    }
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
    if (cuda_context()->bf16_gemm) {
        attention_bwd_rounded_once(dq, dk, dv, dout, q, k, v, probs, B, H, Tq, Tk, Dh, ldq, ldkv);
        return;
    }
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
        launch_attention_softmax_bwd(ds, NULL, pb, H * Tq, Tk, scale);
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
 * (no rounding pass; one batched GEMM over the B elements with a single head, over the H
 * heads of each element otherwise: attention_batches); scores, softmax and the saved
 * probabilities fp32; P rounded to bf16 (one call's elements at a time, SCRATCH_ATTN_BF16) for
 * PV, whose bf16 D rounds out once from the fp32 accumulator. Backward: dout rounded to bf16
 * once (SCRATCH_BF16_A); dP = dout V^T and the softmax backward in fp32; dS rounded to bf16 in
 * that kernel's store (into the P slot, free once dV is done) for dQ = dS K and dK = dS^T Q;
 * dV = P^T dout. Gradients fp32 with q's / kv's strides. */

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
    const AttentionGemmLayout lay = attention_gemm_layout(B, H, Tq, Tk, Dh, ldq, ldkv);
    const size_t per_call = (size_t)lay.g.elements * lay.per_b;
    float *probs = saved ? saved
                         : (float *)cuda_scratch(SCRATCH_ATTN_PROBS, B * lay.per_b * sizeof(float));
    for (int c = 0; c < lay.g.calls; c++)  /* S = scale q k^T; c: the call's first element */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, lay.scale, q + (size_t)c * Tq * ldq, ldq, lay.sq,
                                k + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f,
                                probs + (size_t)c * lay.per_b, DTYPE_F32, Tk, lay.sp, lay.g.batch);
    cuda_softmax_fwd(probs, probs, B * H * Tq, Tk);
    __nv_bfloat16 *p16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, per_call * sizeof(__nv_bfloat16));
    /* out = P v, heads interleaved into [Tq, H*Dh], in bf16 */
    for (int c = 0; c < lay.g.calls; c++) {
        cuda_round_to_bf16(p16, probs + (size_t)c * lay.per_b, per_call);
        cuda_gemm_bf16_operands(0, 0, Tq, Dh, Tk, 1.0f, (const bf16_t *)p16, Tk, lay.sp,
                                v + (size_t)c * Tk * ldkv, ldkv, lay.skv, 0.0f,
                                out + (size_t)c * Tq * lay.C, DTYPE_BF16, lay.C, lay.so,
                                lay.g.batch);
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
    const AttentionGemmLayout lay = attention_gemm_layout(B, H, Tq, Tk, Dh, ldq, ldkv);
    const size_t per_call = (size_t)lay.g.elements * lay.per_b;
    const size_t n_dout = (size_t)B * Tq * lay.C;
    __nv_bfloat16 *dout16 =
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_BF16_A, n_dout * sizeof(__nv_bfloat16));
    cuda_round_to_bf16(dout16, dout, n_dout);
    float *ds = (float *)cuda_scratch(SCRATCH_ATTN_GRAD, per_call * sizeof(float));
    __nv_bfloat16 *op16 =  /* P for dV, then dS for dQ and dK */
        (__nv_bfloat16 *)cuda_scratch(SCRATCH_ATTN_BF16, per_call * sizeof(__nv_bfloat16));
    const bf16_t *op = (const bf16_t *)op16;
    for (int c = 0; c < lay.g.calls; c++) {  /* c: the call's first element (0 when one call) */
        const bf16_t *qc = q + (size_t)c * Tq * ldq, *kc = k + (size_t)c * Tk * ldkv;
        const bf16_t *vc = v + (size_t)c * Tk * ldkv;
        const bf16_t *doc = (const bf16_t *)(dout16 + (size_t)c * Tq * lay.C);
        const float *pc = probs + (size_t)c * lay.per_b;
        if (dv) {  /* dv = P^T dout */
            cuda_round_to_bf16(op16, pc, per_call);
            cuda_gemm_bf16_operands(1, 0, Tk, Dh, Tq, 1.0f, op, Tk, lay.sp, doc, lay.C, lay.so,
                                    0.0f, dv + (size_t)c * Tk * ldkv, DTYPE_F32, ldkv, lay.skv,
                                    lay.g.batch);
        }
        if (!dq && !dk) continue;
        /* dP = dout v^T (fp32), then dS = scale * softmax_bwd(dP) in fp32, rounded once */
        cuda_gemm_bf16_operands(0, 1, Tq, Tk, Dh, 1.0f, doc, lay.C, lay.so, vc, ldkv, lay.skv, 0.0f,
                                ds, DTYPE_F32, Tk, lay.sp, lay.g.batch);
        /* the dv GEMM is done with P (stream order): its slot takes dS now, rounded in the
         * softmax backward's store */
        launch_attention_softmax_bwd(ds, op16, pc, lay.g.elements * H * Tq, Tk, lay.scale);
        if (dq)  /* dq = dS k */
            cuda_gemm_bf16_operands(0, 0, Tq, Dh, Tk, 1.0f, op, Tk, lay.sp, kc, ldkv, lay.skv, 0.0f,
                                    dq + (size_t)c * Tq * ldq, DTYPE_F32, ldq, lay.sq, lay.g.batch);
        if (dk)  /* dk = dS^T q */
            cuda_gemm_bf16_operands(1, 0, Tk, Dh, Tq, 1.0f, op, Tk, lay.sp, qc, ldq, lay.sq, 0.0f,
                                    dk + (size_t)c * Tk * ldkv, DTYPE_F32, ldkv, lay.skv,
                                    lay.g.batch);
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

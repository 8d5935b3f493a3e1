/* CPU backend: multi-head scaled dot-product attention. One (batch, head) pair is one task:
 * two or three single-threaded sgemm calls and a row softmax on a [Tq, Tk] tile that stays
 * in cache; tasks run on the OpenMP threads (B*H is 12 or more for every model here, and one
 * head's GEMMs are too small to split well). */
#include "ops/cpu_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "core/check.h"

/* probs may be NULL (forward only, nothing saved): each thread then keeps its [Tq, Tk] tile
 * in a scratch of its own. The arithmetic is the same either way, so out is bit-identical. */
void cpu_attention_fwd(float *out, float *probs, const float *q, const float *k, const float *v,
                       int B, int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    const float scale = 1.0f / sqrtf((float)Dh);
    const int ldo = H * Dh;
    cpu_blas_single_thread();
    #pragma omp parallel
    {
        float *scratch = probs ? NULL : xmalloc((size_t)Tq * Tk * sizeof(float));
        #pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            const float *Q = q + (long)b * Tq * ldq + h * Dh;
            const float *K = k + (long)b * Tk * ldkv + h * Dh;
            const float *V = v + (long)b * Tk * ldkv + h * Dh;
            float *P = probs ? probs + (long)bh * Tq * Tk : scratch;
            float *O = out + (long)b * Tq * ldo + h * Dh;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, Dh, scale, Q, ldq, K,
                        ldkv, 0.0f, P, Tk);
            for (int i = 0; i < Tq; i++) cpu_softmax_row(P + (long)i * Tk, Tk);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, Dh, Tk, 1.0f, P, Tk, V,
                        ldkv, 0.0f, O, ldo);
        }
        free(scratch);
    }
}

size_t cpu_attention_saved_floats(int B, int H, int Tq, int Tk, int Dh)
{
    (void)Dh;
    return (size_t)B * H * Tq * Tk;
}

/* out is not needed: the saved probabilities give the softmax backward's row dot product. */
void cpu_attention_bwd(float *dq, float *dk, float *dv, const float *dout, const float *q,
                       const float *k, const float *v, const float *out, const float *probs, int B,
                       int H, int Tq, int Tk, int Dh, int ldq, int ldkv)
{
    (void)out;
    const float scale = 1.0f / sqrtf((float)Dh);
    const int ldo = H * Dh;
    cpu_blas_single_thread();
    #pragma omp parallel
    {
        /* dP, then dS in place: this thread's [Tq, Tk] scratch tile. */
        float *dS = xmalloc((size_t)Tq * Tk * sizeof(float));
        #pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            long q_off = (long)b * Tq * ldq + h * Dh, kv_off = (long)b * Tk * ldkv + h * Dh;
            const float *P = probs + (long)bh * Tq * Tk;
            const float *dO = dout + (long)b * Tq * ldo + h * Dh;
            if (dv) /* dV = P^T dO */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, Dh, Tq, 1.0f, P, Tk,
                            dO, ldo, 0.0f, dv + kv_off, ldkv);
            if (!dq && !dk) continue;
            /* dP = dO V^T, then the softmax backward dS = P (dP - <dP, P>) per row */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, Dh, 1.0f, dO, ldo,
                        v + kv_off, ldkv, 0.0f, dS, Tk);
            for (int i = 0; i < Tq; i++) {
                float *row = dS + (long)i * Tk;
                const float *prow = P + (long)i * Tk;
                float dot = 0.0f;
                #pragma omp simd reduction(+ : dot)
                for (int j = 0; j < Tk; j++) dot += row[j] * prow[j];
                #pragma omp simd
                for (int j = 0; j < Tk; j++) row[j] = prow[j] * (row[j] - dot);
            }
            if (dq) /* dQ = scale dS K */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, Dh, Tk, scale, dS,
                            Tk, k + kv_off, ldkv, 0.0f, dq + q_off, ldq);
            if (dk) /* dK = scale dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tk, Dh, Tq, scale, dS, Tk,
                            q + q_off, ldq, 0.0f, dk + kv_off, ldkv);
        }
        free(dS);
    }
}

/* cuBLAS, cuBLASLt and NVRTC loaded on first use instead of at program start.
 *
 * Why: linking them makes every process of a CUDA build load them, GPU or not. cuBLASLt alone
 * costs each process about 94 MB of private memory for its relocations at load (measured on
 * Debian 12 with CUDA 13: an empty program linked with -lcublasLt, /proc/PID/smaps_rollup,
 * Private_Dirty 100 kB -> 93856 kB), so `mpirun -np 64 alice pack` on a CPU node of a cluster
 * with a CUDA build paid gigabytes for a library none of its ranks calls. alice, its tests and
 * benchmarks link none of the three (Makefile); this file defines every function of theirs we
 * call, each resolving the real one with dlopen/dlsym at its first call, so only a run that
 * reaches cuBLAS (device = cuda) maps the libraries.
 *
 * The definitions are made inside extern "C" against the libraries' own headers, so a
 * signature that differs from the header's is a compile error, not a silent C++ overload.
 * Resolution is idempotent (dlopen and dlsym give the same answers to every thread), so two
 * threads racing on a first call at worst both look the symbol up. */
#include <dlfcn.h>
#include <stdio.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nvrtc.h>

#include "cuda/cuda_c_api.h"
#include "cuda/cuda_lazy_libs.h"

/* The libraries in LazyLib order: the name for messages, the file name without its major
 * version, and the major version of the toolkit this file is compiled against (cuBLAS's own;
 * NVRTC's soname carries the CUDA major: libnvrtc.so.13 for CUDA 13). */
static const struct {
    const char *what, *stem;
    int major;
} kLibraries[LAZY_LIB_COUNT] = {
    {"cuBLASLt", "libcublasLt.so", CUBLAS_VER_MAJOR},
    {"cuBLAS", "libcublas.so", CUBLAS_VER_MAJOR},
    {"NVRTC", "libnvrtc.so", CUDART_VERSION / 1000},
};

static void *handles[LAZY_LIB_COUNT];

const char *lazy_library_soname(LazyLib lib, char *buf, size_t size)
{
    snprintf(buf, size, "%s.%d", kLibraries[lib].stem, kLibraries[lib].major);
    return buf;
}

int lazy_library_loaded(LazyLib lib)
{
    return __atomic_load_n(&handles[lib], __ATOMIC_ACQUIRE) != NULL;
}

static void *library_handle(LazyLib lib)
{
    void *h = __atomic_load_n(&handles[lib], __ATOMIC_ACQUIRE);
    if (h) return h;
    char soname[256];
    lazy_library_soname(lib, soname, sizeof soname);
    /* the versioned name first (what the linker would have recorded), then the development
     * link, which toolkits without versioned names still have */
    h = dlopen(soname, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        char first[1024];
        snprintf(first, sizeof first, "%s", dlerror());
        h = dlopen(kLibraries[lib].stem, RTLD_NOW | RTLD_GLOBAL);
        if (!h)
            alice_die("cannot load %s, which device = cuda needs: %s. Put the folder holding %s "
                      "(the CUDA toolkit's lib64, or the pip wheel's lib) on LD_LIBRARY_PATH",
                      kLibraries[lib].what, first, soname);
    }
    __atomic_store_n(&handles[lib], h, __ATOMIC_RELEASE);
    return h;
}

void *lazy_symbol(LazyLib lib, const char *name)
{
    void *h = library_handle(lib);
    dlerror();
    void *f = dlsym(h, name);
    if (!f)
        alice_die("the %s loaded (%s %d) has no function %s: %s. This binary was built against "
                  "a newer one: put a matching %s first on LD_LIBRARY_PATH, or rebuild alice "
                  "against this one (make USE_CUDA=1 CUDA_HOME=...)", kLibraries[lib].what,
                  kLibraries[lib].stem, kLibraries[lib].major, name, dlerror(),
                  kLibraries[lib].what);
    return f;
}

/* Defines `ret name params` forwarding `args` to the library's own function. */
#define LAZY_FORWARD(lib, ret, name, params, args)                                          \
    ret name params                                                                         \
    {                                                                                       \
        typedef ret(*Fn) params;                                                            \
        static Fn fn;                                                                       \
        Fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);                                      \
        if (!f) {                                                                           \
            f = (Fn)lazy_symbol(lib, #name);                                                \
            __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                                     \
        }                                                                                   \
        return f args;                                                                      \
    }

extern "C" {

/* ---- cuBLASLt: every GEMM of the backend (cuda/cuda_blas.cu, cuda_gemm_autotune.cu) ---- */
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtCreate, (cublasLtHandle_t *h), (h))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtGetProperty,
             (libraryPropertyType type, int *value), (type, value))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmul,
             (cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
              cublasLtMatrixLayout_t Adesc, const void *B, cublasLtMatrixLayout_t Bdesc,
              const void *beta, const void *C, cublasLtMatrixLayout_t Cdesc, void *D,
              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t *algo, void *workspace,
              size_t workspace_bytes, cudaStream_t stream),
             (h, desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace,
              workspace_bytes, stream))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulAlgoCapGetAttribute,
             (const cublasLtMatmulAlgo_t *algo, cublasLtMatmulAlgoCapAttributes_t attr, void *buf,
              size_t bytes, size_t *written),
             (algo, attr, buf, bytes, written))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulAlgoGetHeuristic,
             (cublasLtHandle_t h, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Adesc,
              cublasLtMatrixLayout_t Bdesc, cublasLtMatrixLayout_t Cdesc,
              cublasLtMatrixLayout_t Ddesc, cublasLtMatmulPreference_t pref, int requested,
              cublasLtMatmulHeuristicResult_t results[], int *returned),
             (h, desc, Adesc, Bdesc, Cdesc, Ddesc, pref, requested, results, returned))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescCreate,
             (cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale),
             (desc, compute, scale))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescDestroy,
             (cublasLtMatmulDesc_t desc), (desc))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulDescSetAttribute,
             (cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf,
              size_t bytes),
             (desc, attr, buf, bytes))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceCreate,
             (cublasLtMatmulPreference_t *pref), (pref))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceDestroy,
             (cublasLtMatmulPreference_t pref), (pref))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatmulPreferenceSetAttribute,
             (cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
              const void *buf, size_t bytes),
             (pref, attr, buf, bytes))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatrixLayoutCreate,
             (cublasLtMatrixLayout_t *layout, cudaDataType type, uint64_t rows, uint64_t cols,
              int64_t ld),
             (layout, type, rows, cols, ld))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatrixLayoutDestroy,
             (cublasLtMatrixLayout_t layout), (layout))
LAZY_FORWARD(LAZY_LIB_CUBLASLT, cublasStatus_t, cublasLtMatrixLayoutSetAttribute,
             (cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
              const void *buf, size_t bytes),
             (layout, attr, buf, bytes))

/* ---- cuBLAS: the attention GEMM path's batched products, status strings; cublasGemmEx,
 * cublasSgemm and cublasDestroy for bench_cuda_ops's reference products ---- */
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasCreate_v2, (cublasHandle_t *h), (h))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasDestroy_v2, (cublasHandle_t h), (h))
LAZY_FORWARD(LAZY_LIB_CUBLAS, const char *, cublasGetStatusString, (cublasStatus_t status),
             (status))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasSetMathMode,
             (cublasHandle_t h, cublasMath_t mode), (h, mode))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasSetStream_v2,
             (cublasHandle_t h, cudaStream_t stream), (h, stream))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasSetWorkspace_v2,
             (cublasHandle_t h, void *workspace, size_t bytes), (h, workspace, bytes))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasGemmStridedBatchedEx,
             (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
              const void *alpha, const void *A, cudaDataType Atype, int lda, long long int strideA,
              const void *B, cudaDataType Btype, int ldb, long long int strideB, const void *beta,
              void *C, cudaDataType Ctype, int ldc, long long int strideC, int batch,
              cublasComputeType_t compute, cublasGemmAlgo_t algo),
             (h, ta, tb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C,
              Ctype, ldc, strideC, batch, compute, algo))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasGemmEx,
             (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
              const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
              cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
              cublasComputeType_t compute, cublasGemmAlgo_t algo),
             (h, ta, tb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
              compute, algo))
LAZY_FORWARD(LAZY_LIB_CUBLAS, cublasStatus_t, cublasSgemm_v2,
             (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
              const float *alpha, const float *A, int lda, const float *B, int ldb,
              const float *beta, float *C, int ldc),
             (h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))

/* ---- NVRTC: the cuDNN frontend's plan code (cuda_attention_cudnn.cu) references it for its
 * runtime-compiled engines ---- */
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcCreateProgram,
             (nvrtcProgram *prog, const char *src, const char *name, int num_headers,
              const char *const *headers, const char *const *include_names),
             (prog, src, name, num_headers, headers, include_names))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcCompileProgram,
             (nvrtcProgram prog, int num_options, const char *const *options),
             (prog, num_options, options))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcDestroyProgram, (nvrtcProgram *prog), (prog))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcGetCUBINSize, (nvrtcProgram prog, size_t *bytes),
             (prog, bytes))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcGetCUBIN, (nvrtcProgram prog, char *cubin),
             (prog, cubin))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcGetProgramLogSize,
             (nvrtcProgram prog, size_t *bytes), (prog, bytes))
LAZY_FORWARD(LAZY_LIB_NVRTC, nvrtcResult, nvrtcGetProgramLog, (nvrtcProgram prog, char *log),
             (prog, log))

}  // extern "C"

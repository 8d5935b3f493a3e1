/* cuBLAS, cuBLASLt and NVRTC load at their first call, not at program start
 * (cuda/cuda_lazy_libs.cu): a process of the CUDA build that never calls them does not map
 * them (cuBLASLt alone costs ~94 MB of private memory per process), and the forwarding
 * functions reach the real ones: cuBLASLt's version query against the header, a layout
 * descriptor's round trip, a cuBLAS status string, NVRTC compiling a kernel to a cubin (none
 * of which needs a GPU). A function the loaded library lacks ends the job with a message
 * naming it and the fix. Skipped in a build without CUDA. */
#include "test.h"
#include "test_child.h"

#ifdef ALICE_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <nvrtc.h>

#include "cuda/cuda_lazy_libs.h"

/* 1 when a file whose name contains `name` is mapped into this process. */
static int mapped(const char *name)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, name) != NULL;
    fclose(f);
    return found;
}

static int test_nothing_loaded_at_start(void)
{
    for (int lib = 0; lib < LAZY_LIB_COUNT; lib++) {
        char soname[256];
        lazy_library_soname((LazyLib)lib, soname, sizeof soname);
        TEST_CHECK(!lazy_library_loaded((LazyLib)lib), "%s loaded before any call", soname);
        TEST_CHECK(mapped(soname) == 0, "%s mapped at program start", soname);
    }
    return 0;
}

static int test_cublaslt_forwarding(void)
{
    int major = -1, minor = -1;
    TEST_CHECK(cublasLtGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
               cublasLtGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS,
               "cublasLtGetProperty failed");
    TEST_CHECK(major == CUBLAS_VER_MAJOR, "cuBLASLt major %d, the header says %d", major,
               CUBLAS_VER_MAJOR);
    char soname[256];
    lazy_library_soname(LAZY_LIB_CUBLASLT, soname, sizeof soname);
    TEST_CHECK(lazy_library_loaded(LAZY_LIB_CUBLASLT) && mapped("libcublasLt") == 1,
               "%s not loaded after its first call", soname);
    /* a descriptor round trip through create, set, destroy */
    cublasLtMatrixLayout_t layout;
    TEST_CHECK(cublasLtMatrixLayoutCreate(&layout, CUDA_R_32F, 4, 3, 4) == CUBLAS_STATUS_SUCCESS,
               "cublasLtMatrixLayoutCreate failed");
    int32_t batch = 2;
    TEST_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                                sizeof batch) == CUBLAS_STATUS_SUCCESS,
               "cublasLtMatrixLayoutSetAttribute failed");
    TEST_CHECK(cublasLtMatrixLayoutDestroy(layout) == CUBLAS_STATUS_SUCCESS,
               "cublasLtMatrixLayoutDestroy failed");
    TEST_CHECK(!lazy_library_loaded(LAZY_LIB_CUBLAS), "cuBLAS loaded by a cuBLASLt call");
    return 0;
}

static int test_cublas_forwarding(void)
{
    const char *s = cublasGetStatusString(CUBLAS_STATUS_NOT_INITIALIZED);
    TEST_CHECK(s && strstr(s, "not initialized"), "status string '%s'", s ? s : "(null)");
    TEST_CHECK(lazy_library_loaded(LAZY_LIB_CUBLAS), "cuBLAS not loaded after its first call");
    return 0;
}

static int test_nvrtc_forwarding(void)
{
    const char *src = "extern \"C\" __global__ void twice(float *x) { x[threadIdx.x] *= 2.0f; }";
    nvrtcProgram prog;
    TEST_CHECK(nvrtcCreateProgram(&prog, src, "twice.cu", 0, NULL, NULL) == NVRTC_SUCCESS,
               "nvrtcCreateProgram failed");
    const char *opts[] = {"-arch=sm_90"};
    nvrtcResult r = nvrtcCompileProgram(prog, 1, opts);
    size_t log_size = 0;
    nvrtcGetProgramLogSize(prog, &log_size);
    char *log = malloc(log_size + 1);
    log[0] = '\0';
    if (log_size) nvrtcGetProgramLog(prog, log);
    TEST_CHECK(r == NVRTC_SUCCESS, "nvrtcCompileProgram: %d, log: %s", (int)r, log);
    size_t cubin_size = 0;
    TEST_CHECK(nvrtcGetCUBINSize(prog, &cubin_size) == NVRTC_SUCCESS && cubin_size > 4,
               "nvrtcGetCUBINSize: %zu bytes", cubin_size);
    char *cubin = malloc(cubin_size + 1);
    TEST_CHECK(nvrtcGetCUBIN(prog, cubin) == NVRTC_SUCCESS && !memcmp(cubin, "\177ELF", 4),
               "the cubin is not an ELF image");
    TEST_CHECK(nvrtcDestroyProgram(&prog) == NVRTC_SUCCESS, "nvrtcDestroyProgram failed");
    free(cubin);
    free(log);
    return 0;
}

static void call_missing_function(void) { lazy_symbol(LAZY_LIB_CUBLASLT, "cublasLtNoSuchCall"); }

static int test_missing_function_is_a_clear_error(void)
{
    char err[2048];
    int status = test_child_exit(call_missing_function, err, sizeof err);
    TEST_CHECK(status != 0, "a missing function did not end the process");
    TEST_CHECK(strstr(err, "has no function cublasLtNoSuchCall") && strstr(err, "LD_LIBRARY_PATH"),
               "message names neither the function nor the fix: %s", err);
    return 0;
}
#endif

int main(void)
{
#ifdef ALICE_CUDA
    TEST_RUN(test_nothing_loaded_at_start);
    TEST_RUN(test_cublaslt_forwarding);
    TEST_RUN(test_cublas_forwarding);
    TEST_RUN(test_nvrtc_forwarding);
    TEST_RUN(test_missing_function_is_a_clear_error);
#else
    printf("skip: a build without CUDA has no lazily loaded libraries\n");
    return 77;
#endif
    return test_finish();
}

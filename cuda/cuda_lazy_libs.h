/* cuBLAS, cuBLASLt and NVRTC are loaded at their first call, not at program start
 * (cuda/cuda_lazy_libs.cu says why and how). Includable from C and C++. */
#ifndef ALICE_CUDA_LAZY_LIBS_H
#define ALICE_CUDA_LAZY_LIBS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LAZY_LIB_CUBLASLT, LAZY_LIB_CUBLAS, LAZY_LIB_NVRTC, LAZY_LIB_COUNT } LazyLib;

/* The file name tried first ("libcublasLt.so.13"), written into buf. */
const char *lazy_library_soname(LazyLib lib, char *buf, size_t size);
/* 1 once a call through this file has loaded lib. */
int lazy_library_loaded(LazyLib lib);
/* The library's function `name`, loading the library on first use; ends the job with an error
 * naming the library, the reason and the fix when it cannot be loaded or lacks the function. */
void *lazy_symbol(LazyLib lib, const char *name);

#ifdef __cplusplus
}
#endif

#endif

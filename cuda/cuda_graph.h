/* CUDA graphs of the backend's stream (backend.h graph_* entries, cuda/cuda_graph.cu), and
 * the hooks through which the rest of the backend keeps a capture honest.
 *
 * While this thread captures, ops are recorded, not run, and a few things the eager backend
 * does would either break the capture or make the recorded graph wrong on replay:
 *  - host waits (CUDA_WAIT_*; a download reading a result): nothing has run to wait for;
 *  - cudaMalloc / cudaFree (a scratch buffer that grows, a first bf16 weight copy): illegal
 *    under capture, and a buffer freed after recording would dangle in every replay;
 *  - host bookkeeping that assumes the recorded work ran (a weight copy marked current).
 * Each such place asks cuda_graph_capturing() and, instead of failing a CUDA call, SPOILS the
 * capture (cuda_graph_spoil: the first reason is kept), keeps every pointer valid (an
 * allocation goes through cuda_graph_malloc_relaxed, a free waits in
 * cuda_graph_free_after_capture) and goes on recording. graph_capture_end then drops the
 * recording with one log_warn naming the reason, and the caller runs the step eagerly.
 *
 * A graph also records pointers to memory the backend may later replace (scratch buffers that
 * grow, bf16 weight copies dropped by weights_forget): cuda_graph_memory_moved() marks every
 * graph recorded before as stale, and graph_launch refuses a stale graph. */
#ifndef ALICE_CUDA_GRAPH_H
#define ALICE_CUDA_GRAPH_H

#include <stddef.h>

#include "cuda/cuda_ops.h"

/* 1 while THIS thread records the backend's stream (begin .. end). Thread-local: the loader's
 * threads keep running their own uploads and waits eagerly meanwhile. */
int cuda_graph_capturing(void);
/* Records why the current capture cannot be replayed (printf format; the first reason wins). */
void cuda_graph_spoil(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cudaMalloc during a capture: the capture mode forbids it on this thread, so it runs with
 * the thread's mode relaxed for this one call. Fatal on failure, as cuda_alloc. */
void *cuda_graph_malloc_relaxed(size_t bytes);
/* Device memory to cudaFree once the capture has ended (a free now would be illegal, and the
 * recorded work may still name it). */
void cuda_graph_free_after_capture(void *p);
/* A scratch slot reallocated during the capture: zeroed once the capture ends, so state that
 * lives in a slot between ops (the column sums' arrival counters) is as the eager backend
 * leaves a fresh buffer, although the recorded memset never ran. */
void cuda_graph_zero_after_capture(int scratch_slot);
/* A buffer graphs may name was reallocated or freed: every graph recorded so far is stale. */
void cuda_graph_memory_moved(void);

/* The backend table's entries. */
int cuda_graph_capture_begin(void);
BackendGraph *cuda_graph_capture_end(void);
int cuda_graph_launch(BackendGraph *graph);
void cuda_graph_free(BackendGraph *graph);

#endif

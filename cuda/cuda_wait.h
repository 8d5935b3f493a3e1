/* Host waits of the CUDA backend. Every blocking wait on the compute or communication stream
 * goes through these (never cudaStreamSynchronize / cudaEventSynchronize directly), because
 * while an NCCL communicator exists a wait may be waiting on a collective that a dead peer rank
 * or a broken network keeps from ever completing.
 *
 * With a communicator: the wait polls (src/core/watched_wait.c: tight polls first, then short
 * doubling sleeps), checks ncclCommGetAsyncError on every poll and gives up after
 * nccl_timeout_s (gpu_set_collective_timeout); either way it aborts the communicator and ends
 * the job with an error naming this rank, the cause and the fix, reported at the caller's file
 * and line. Without one (a single rank, or ranks sharing a GPU through MPI): plain
 * cudaStreamSynchronize / cudaEventSynchronize. */
#ifndef ALICE_CUDA_WAIT_H
#define ALICE_CUDA_WAIT_H

#include <cuda_runtime.h>

void cuda_wait_stream_at(cudaStream_t stream, const char *file, int line);
void cuda_wait_event_at(cudaEvent_t event, const char *file, int line);
/* Before a cudaMemcpyAsync between device and PAGEABLE host memory: such a copy may itself
 * block the host until the stream reaches it (the driver stages it through pinned memory), an
 * unwatched wait. With a communicator this drains the stream first through the watched wait;
 * without one it does nothing (no overlap is lost on a single rank). */
void cuda_wait_before_pageable_copy_at(cudaStream_t stream, const char *file, int line);
/* Before a call that implicitly synchronises the whole device (cudaFree): with a communicator,
 * drains the compute and the communication stream through the watched wait, so the implicit
 * wait that follows cannot hang on a collective; without one it does nothing. */
void cuda_wait_before_device_sync_at(const char *file, int line);

/* Polls *flag (read atomically; another host thread sets it to 1 when its work is done) with
 * the same policy and time limit (nccl_timeout_s, 0 = forever) as the waits above. Returns 1
 * once the flag is set, 0 when the limit passed first; *waited_s: the time it waited. For
 * NCCL's communicator set-up, which no asynchronous error or abort can reach before it returns
 * a communicator (cuda/nccl_comm.cu). */
int cuda_wait_host_flag(const int *flag, double *waited_s);
/* nccl_timeout_s as set by gpu_set_collective_timeout (0 = no limit). */
double cuda_collective_timeout_s(void);

#define CUDA_WAIT_STREAM(stream) cuda_wait_stream_at((stream), __FILE__, __LINE__)
#define CUDA_WAIT_EVENT(event) cuda_wait_event_at((event), __FILE__, __LINE__)
#define CUDA_WAIT_BEFORE_PAGEABLE_COPY(stream) \
    cuda_wait_before_pageable_copy_at((stream), __FILE__, __LINE__)
#define CUDA_WAIT_BEFORE_DEVICE_SYNC() cuda_wait_before_device_sync_at(__FILE__, __LINE__)

#endif

/* Checks the overlapped GPU all-reduce of src/ops/dist_gpu.h (nccl_allreduce_mean_async +
 * nccl_allreduce_wait) across the ranks of mpirun, the way grad_sync uses it: the compute
 * stream writes bucket k ((rank + 1) + k, after a long kernel so that a reduction not ordered
 * after it would read the stale value), the bucket's reduction is launched, and the compute
 * stream goes on to the next bucket at once. After the wait the compute stream doubles the
 * buffer: a compute stream that did not wait for the communication stream would double values
 * NCCL then overwrites. Expected: 2 ((size + 1) / 2 + k) everywhere.
 * With one rank (a 1-rank NCCL communicator) the asynchronous NCCL path runs on a one-GPU
 * machine; with two ranks on one GPU the MPI-staged transport runs (synchronously).
 * Exit 0 ok, 1 wrong, 77 (message "skip") without a GPU. Usage: mpirun -np N nccl_overlap_check */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/backend.h"
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"
#include "gpu_mpi_tool.h"

enum { BUCKETS = 8 };

int main(int argc, char **argv)
{
    int rank = 0, size = 1;
    const AliceBackend *gpu = gpu_tool_start(&argc, &argv, &rank, &size);
    if (!gpu) return 77;
    const size_t per = 1000003, n = per * BUCKETS;   /* odd sizes: more than one NCCL chunk */
    const size_t busy_n = (size_t)64 << 20;         /* 256 MB: a kernel that takes a while */
    float *d = gpu->alloc(n * sizeof(float));
    float *busy = gpu->alloc(busy_n * sizeof(float));
    gpu->fill(busy, 1.0f, busy_n);
    float *h = malloc(n * sizeof(float));
    int bad = 0;
    for (int rep = 0; rep < 3; rep++) {
        gpu->fill(d, NAN, n);   /* stale contents: what an unordered reduction would see */
        for (int k = 0; k < BUCKETS; k++) {
            for (int s = 0; s < 4; s++) gpu->scale(busy, 1.0f, busy_n);
            gpu->fill(d + (size_t)k * per, (float)(rank + 1 + k), per);
            nccl_allreduce_mean_async(d + (size_t)k * per, per);
        }
        nccl_allreduce_wait();
        gpu->scale(d, 2.0f, n);
        gpu->download(h, d, n * sizeof(float));
        for (int k = 0; k < BUCKETS; k++) {
            const double want = 2.0 * ((size + 1) / 2.0 + k);
            for (size_t i = (size_t)k * per; i < (size_t)(k + 1) * per; i++)
                if (!(fabs(h[i] - want) <= 1e-6 * want)) {
                    if (bad < 5)
                        fprintf(stderr, "rank %d, repeat %d: bucket %d [%zu] = %.9g, expected %.9g\n",
                                rank, rep, k, i, h[i], want);
                    bad++;
                }
        }
    }
    int any_bad = gpu_tool_any_bad(bad);
    if (rank == 0)
        printf("%s: overlapped all-reduce (%s) over %d rank(s), %d buckets of %zu floats, 3 repeats\n",
               any_bad ? "FAIL" : "ok", nccl_allreduce_overlaps() ? "NCCL, communication stream" :
               "MPI-staged, synchronous", size, BUCKETS, per);
    gpu->release(d);
    gpu->release(busy);
    free(h);
    return gpu_tool_finish(any_bad);
}

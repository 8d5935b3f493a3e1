/* Checks the GPU all-reduce of src/ops/dist_gpu.h across the ranks of mpirun: rank r fills a
 * device buffer with (r + 1) + i/n, then mean and sum over ranks are compared with the values
 * computed here. Exit 0 ok, 1 wrong, 77 (message "skip") without a GPU.
 * Usage: mpirun -np N nccl_allreduce_check */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "ops/backend.h"
#include "ops/dist_gpu.h"
#include "ops/gpu_device.h"
#include "gpu_mpi_tool.h"

int main(int argc, char **argv)
{
    int rank = 0, size = 1;
    const AliceBackend *gpu = gpu_tool_start(&argc, &argv, &rank, &size);
    if (!gpu) return 77;
    const size_t n = 1000003; /* odd, a few MB: more than one NCCL chunk */
    float *h = malloc(n * sizeof(float));
    float *d = gpu->alloc(n * sizeof(float));
    int bad = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) h[i] = (float)(rank + 1) + (float)i / (float)n;
        gpu->upload(d, h, n * sizeof(float));
        if (pass == 0) nccl_allreduce_mean(d, n);
        else nccl_allreduce_sum(d, n);
        gpu->download(h, d, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            /* sum over r of (r + 1 + i/n) = size (size + 1) / 2 + size i/n */
            double sum = size * (size + 1) / 2.0 + size * ((double)(float)i / (float)n);
            double want = pass == 0 ? sum / size : sum;
            if (!(fabs(h[i] - want) <= 1e-5 * fabs(want))) {
                if (bad < 5)
                    fprintf(stderr, "rank %d: %s[%zu] = %.9g, expected %.9g\n", rank,
                            pass == 0 ? "mean" : "sum", i, h[i], want);
                bad++;
            }
        }
    }
    int any_bad = gpu_tool_any_bad(bad);
    if (rank == 0) printf("%s: all-reduce mean and sum over %d ranks, %zu floats\n",
                          any_bad ? "FAIL" : "ok", size, n);
    gpu->release(d);
    free(h);
    return gpu_tool_finish(any_bad);
}

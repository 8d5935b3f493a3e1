#include "train/dist.h"

#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "ops/dist_gpu.h"

void dist_init(Dist *d, const AliceBackend *be)
{
    memset(d, 0, sizeof *d);
    CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &d->rank));
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &d->size));
    MPI_Comm node;
    CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node));
    CHECK_MPI(MPI_Comm_rank(node, &d->local_rank));
    CHECK_MPI(MPI_Comm_size(node, &d->local_size));
    CHECK_MPI(MPI_Comm_free(&node));
    d->use_nccl = d->size > 1 && strcmp(be->name, "cuda") == 0;
    if (d->use_nccl) nccl_init_from_mpi();
}

void dist_finalize(Dist *d)
{
    if (d->use_nccl) nccl_shutdown();
    d->use_nccl = 0;
}

void dist_allreduce_mean(const Dist *d, const AliceBackend *be, float *buf, size_t n)
{
    if (d->size == 1) return;
    if (d->use_nccl) {
        nccl_allreduce_mean(buf, n);
        return;
    }
    /* CPU backend: buffers are host memory. MPI counts are int, so go in slices. */
    const size_t slice = (size_t)1 << 30;
    for (size_t at = 0; at < n; at += slice) {
        size_t len = n - at < slice ? n - at : slice;
        CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)len, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
    be->scale(buf, 1.0f / (float)d->size, n);
}

double dist_sum_double(double x)
{
    double out = x;
    CHECK_MPI(MPI_Allreduce(&x, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
    return out;
}

int dist_max_int(int x)
{
    int out = x;
    CHECK_MPI(MPI_Allreduce(&x, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return out;
}

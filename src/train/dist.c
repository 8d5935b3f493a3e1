#include "train/dist.h"

#include <mpi.h>
#include <stdlib.h>
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
    /* The communicator itself is made at the first GPU reduction (nccl_init_from_mpi is
     * collective, and so is every reduction), so commands that never reduce (alice infer on
     * several ranks) do not pay NCCL's start-up and memory. */
    d->use_nccl = d->size > 1 && strcmp(be->name, "cuda") == 0;
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
        nccl_init_from_mpi();
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

void dist_sum_doubles(double *x, int n)
{
    CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
}

int dist_max_int(int x)
{
    int out = x;
    CHECK_MPI(MPI_Allreduce(&x, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    return out;
}

/* ---- non-blocking averaging for grad_sync ---------------------------------------------------- */

/* MPI counts are int: a launch larger than this goes in slices. */
static const size_t kMpiMaxCount = (size_t)1 << 30;

typedef struct {
    const Dist *dist;
    const AliceBackend *be;
    MPI_Request *requests;
    float **bufs;             /* the slice of each request, scaled once it completed */
    size_t *counts;
    int pending, cap;
} HostReduce;

static void host_reduce_launch(void *ctx, float *buf, size_t n)
{
    HostReduce *h = ctx;
    for (size_t at = 0; at < n; at += kMpiMaxCount) {
        size_t len = n - at < kMpiMaxCount ? n - at : kMpiMaxCount;
        if (h->pending == h->cap) {
            h->cap = h->cap ? 2 * h->cap : 64;
            h->requests = xrealloc(h->requests, (size_t)h->cap * sizeof *h->requests);
            h->bufs = xrealloc(h->bufs, (size_t)h->cap * sizeof *h->bufs);
            h->counts = xrealloc(h->counts, (size_t)h->cap * sizeof *h->counts);
        }
        CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf + at, (int)len, MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD, &h->requests[h->pending]));
        h->bufs[h->pending] = buf + at;
        h->counts[h->pending] = len;
        h->pending++;
    }
    /* Open MPI progresses non-blocking collectives only inside MPI calls: a test here moves the
     * earlier ones along while backward goes on. Completed requests become MPI_REQUEST_NULL,
     * which the final MPI_Waitall accepts. */
    int done = 0;
    CHECK_MPI(MPI_Testall(h->pending, h->requests, &done, MPI_STATUSES_IGNORE));
}

static void host_reduce_wait_all(void *ctx)
{
    HostReduce *h = ctx;
    CHECK_MPI(MPI_Waitall(h->pending, h->requests, MPI_STATUSES_IGNORE));
    const float inv = 1.0f / (float)h->dist->size;
    for (int i = 0; i < h->pending; i++) h->be->scale(h->bufs[i], inv, h->counts[i]);
    h->pending = 0;
}

static void host_reduce_destroy(void *ctx)
{
    HostReduce *h = ctx;
    if (!h) return;
    ALICE_ASSERT(h->pending == 0, "gradient all-reduces still pending at shutdown");
    free(h->requests);
    free(h->bufs);
    free(h->counts);
    free(h);
}

static void device_reduce_launch(void *ctx, float *buf, size_t n)
{
    (void)ctx;
    nccl_allreduce_mean_async(buf, n);
}

static void device_reduce_wait_all(void *ctx)
{
    (void)ctx;
    nccl_allreduce_wait();
}

GradTransport dist_grad_transport(const Dist *d, const AliceBackend *be)
{
    GradTransport t = {NULL, NULL, NULL, NULL, 0};
    if (d->size == 1) return t;
    if (d->use_nccl) {
        nccl_init_from_mpi();
        t.launch = device_reduce_launch;
        t.wait_all = device_reduce_wait_all;
        t.can_overlap = nccl_allreduce_overlaps();
        return t;
    }
    HostReduce *h = xcalloc(1, sizeof *h);
    h->dist = d;
    h->be = be;
    t.launch = host_reduce_launch;
    t.wait_all = host_reduce_wait_all;
    t.destroy = host_reduce_destroy;
    t.ctx = h;
    t.can_overlap = 1;
    return t;
}

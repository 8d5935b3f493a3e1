/* The loader's GPU paths on any machine: this test stands in for the GPU by defining the
 * functions of ops/gpu_data.h over host memory (so libalice's stub or CUDA versions are not
 * linked in). The emulated device has two streams, compute and upload, each a FIFO queue of
 * operations (copies, crop kernels, event records, event waits, stream-ordered frees) that run
 * only when the device "progresses": lazily (only when the host forces it: a synchronize, a
 * download, a stream that waits on the other's event) or eagerly (one operation per stream at
 * every call, as a device racing the host). Events are flags with record generations, as
 * cudaEventRecord re-records. That makes the ordering bugs of asynchronous uploads visible:
 *   - a crop kernel that runs before the upload of a volume it reads (the volume's buffer is
 *     marked written only when its copy runs);
 *   - a volume freed while a queued kernel still reads it;
 *   - pinned host memory freed, or changed, while a queued copy still reads it (each copy
 *     hashes its source when queued and again when it runs);
 *   - a batch read (downloaded, as the model's copy) before its upload;
 *   - an asynchronous copy from pageable memory (on a GPU it would not overlap: every volume
 *     and batch must be read or made in pinned memory in the first place).
 * Device buffers are poisoned (NaN / -1), the "kernel" renders each recipe with
 * crop_recipe_render_cpu, the per-voxel code the CUDA kernel runs. Everything else is the real
 * loader: recipes made by the prefetch threads, pinned host volumes, the GPU volume cache with
 * its budget, LRU, prefetch and events, host fallbacks, double-buffered batch uploads,
 * reference counts, jumps. Checked against the loader's host path on the same options:
 * identical bytes, every step, both modes, 0 and 2 threads, lazy, eager and copy-ahead device, budgets
 * that hold every volume, none, or one. (test_gpu_crops compares the real kernel on a GPU.) */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "data/crop_recipe.h"
#include "gpu_volume_cache.h"
#include "loader.h"
#include "ops/gpu_data.h"
#include "synthetic_body.h"
#include "test.h"

/* ---- the emulated device ---------------------------------------------------------------- */

/* Prefetch threads pin and free host volumes while the rendering thread queues work: one lock
 * over the whole emulation. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct { void *p; size_t bytes; int written; } Buffer;
enum { MAX_BUFFERS = 256 };
static Buffer g_volumes[MAX_BUFFERS];   /* volume buffers (gpu_volume_alloc) */
static Buffer g_pinned[MAX_BUFFERS];    /* pinned host memory */
static long g_live_buffers, g_live_volumes, g_rendered;
static size_t g_free_bytes = (size_t)1 << 40;   /* what the emulated device reports free */
/* Volume memory the emulated device holds at most (gpu_volume_alloc then returns NULL, as
 * cudaMallocAsync out of memory), and what it holds now (freed as the free runs). */
static size_t g_volume_capacity = (size_t)1 << 40, g_volume_bytes;
/* How the device moves on by itself at every call: DEVICE_LAZY not at all (only when the host
 * forces it), DEVICE_EAGER one op per stream, DEVICE_COPY_AHEAD the upload stream only (the
 * copy engine idle while a long step computes: uploads run as early as their waits allow). */
enum { DEVICE_LAZY, DEVICE_EAGER, DEVICE_COPY_AHEAD, DEVICE_MODES };
static int g_device;
static const char *const device_names[DEVICE_MODES] = {"lazy", "eager", "copy-ahead"};

/* Ordering errors the emulation saw. */
static long g_early_reads, g_freed_in_use, g_pinned_freed_in_use, g_source_changed, g_stuck;
static long g_pageable_async;

struct GpuEvent { long recorded, completed; };

typedef enum { OP_COPY, OP_RENDER, OP_RECORD, OP_WAIT, OP_FREE } OpKind;
typedef struct {
    OpKind kind;
    void *dst;
    const void *src;
    size_t bytes;
    uint64_t hash;
    CropRecipe *recipes;
    int count;
    GpuEvent *event;
    long generation;
} Op;
typedef struct { Op *ops; int head, tail, cap; } Queue;
static Queue g_queue[2];   /* indexed by GpuStream */

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static Buffer *find_buffer(Buffer *set, const void *p)
{
    for (int i = 0; i < MAX_BUFFERS; i++)
        if (set[i].p && (const char *)p >= (char *)set[i].p &&
            (const char *)p < (char *)set[i].p + (set[i].bytes ? set[i].bytes : 1))
            return &set[i];
    return NULL;
}

static Buffer *add_buffer(Buffer *set, void *p, size_t bytes)
{
    for (int i = 0; i < MAX_BUFFERS; i++)
        if (!set[i].p) {
            set[i] = (Buffer){p, bytes, 0};
            return &set[i];
        }
    fprintf(stderr, "emulated device: more than %d buffers\n", MAX_BUFFERS);
    abort();
}

static void push(GpuStream s, Op op)
{
    Queue *q = &g_queue[s];
    if (q->tail == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->ops = realloc(q->ops, (size_t)q->cap * sizeof *q->ops);
    }
    q->ops[q->tail++] = op;
}

/* 1 when a queued (not yet run) op of stream s reads or writes [p, p + bytes). */
static int pending_touch(GpuStream s, const void *p, size_t bytes)
{
    const char *lo = p, *hi = lo + (bytes ? bytes : 1);
    Queue *q = &g_queue[s];
    for (int i = q->head; i < q->tail; i++) {
        const Op *op = &q->ops[i];
        if (op->kind == OP_COPY && (((const char *)op->src >= lo && (const char *)op->src < hi) ||
                                    ((const char *)op->dst >= lo && (const char *)op->dst < hi)))
            return 1;
        if (op->kind == OP_RENDER)
            for (int r = 0; r < op->count; r++) {
                const char *img = (const char *)op->recipes[r].image, *lab = (const char *)op->recipes[r].label;
                if ((img >= lo && img < hi) || (lab && lab >= lo && lab < hi)) return 1;
            }
    }
    return 0;
}

static int run_one(GpuStream s);

static int event_done(const GpuEvent *e) { return e->completed >= e->recorded; }

/* Runs ops of the stream other than s until e reaches generation g (as the device would). */
static void wait_event_generation(GpuStream s, const GpuEvent *e, long g)
{
    while (e->completed < g)
        if (!run_one(s == GPU_STREAM_COMPUTE ? GPU_STREAM_UPLOAD : GPU_STREAM_COMPUTE)) {
            g_stuck++;   /* an event that nothing queued will ever complete */
            return;
        }
}

static void run_op(GpuStream s, Op *op)
{
    switch (op->kind) {
    case OP_COPY: {
        /* Host sources (pinned) must be as they were when the copy was queued; device sources
         * are produced by earlier queued work, and the bytes the test compares judge them. */
        if (find_buffer(g_pinned, op->src) && fnv1a(op->src, op->bytes) != op->hash) g_source_changed++;
        memcpy(op->dst, op->src, op->bytes);
        Buffer *b = find_buffer(g_volumes, op->dst);
        if (b) b->written = 1;
        break;
    }
    case OP_RENDER:
        for (int r = 0; r < op->count; r++) {
            const CropRecipe *rc = &op->recipes[r];
            Buffer *img = find_buffer(g_volumes, rc->image);
            Buffer *lab = rc->label ? find_buffer(g_volumes, rc->label) : NULL;
            if (!img || !img->written || (rc->label && (!lab || !lab->written))) {
                g_early_reads++;   /* the kernel ran before the volume's upload */
                continue;
            }
            crop_recipe_render_cpu(rc);
        }
        free(op->recipes);
        break;
    case OP_RECORD:
        if (op->generation > op->event->completed) op->event->completed = op->generation;
        break;
    case OP_WAIT:
        wait_event_generation(s, op->event, op->generation);
        break;
    case OP_FREE: {
        Buffer *b = find_buffer(g_volumes, op->dst);
        if (pending_touch(GPU_STREAM_COMPUTE, op->dst, b ? b->bytes : 1)) g_freed_in_use++;
        if (b) g_volume_bytes -= b->bytes;
        if (b) *b = (Buffer){0};
        free(op->dst);
        g_live_volumes--;
        break;
    }
    }
}

static int run_one(GpuStream s)
{
    Queue *q = &g_queue[s];
    if (q->head == q->tail) return 0;
    Op op = q->ops[q->head++];
    run_op(s, &op);
    if (q->head == q->tail) q->head = q->tail = 0;
    return 1;
}

static void drain(GpuStream s) { while (run_one(s)) {} }
static void drain_all(void) { while (run_one(GPU_STREAM_COMPUTE) || run_one(GPU_STREAM_UPLOAD)) {} }

/* Called at every entry: an eager device moves on by itself. */
static void progress(void)
{
    if (g_device == DEVICE_EAGER) {
        run_one(GPU_STREAM_UPLOAD);
        run_one(GPU_STREAM_COMPUTE);
    } else if (g_device == DEVICE_COPY_AHEAD) {
        drain(GPU_STREAM_UPLOAD);
    }
}

#define ENTER() do { pthread_mutex_lock(&g_lock); progress(); } while (0)
#define LEAVE() pthread_mutex_unlock(&g_lock)

void *gpu_pinned_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    pthread_mutex_lock(&g_lock);
    add_buffer(g_pinned, p, bytes);
    LEAVE();
    return p;
}

void gpu_pinned_free(void *ptr)
{
    if (!ptr) return;
    pthread_mutex_lock(&g_lock);
    Buffer *b = find_buffer(g_pinned, ptr);
    size_t bytes = b ? b->bytes : 1;
    if (pending_touch(GPU_STREAM_UPLOAD, ptr, bytes) || pending_touch(GPU_STREAM_COMPUTE, ptr, bytes)) {
        g_pinned_freed_in_use++;
        LEAVE();
        return;   /* counted; kept (leaked) so the queued copy still reads valid memory */
    }
    if (b) *b = (Buffer){0};
    LEAVE();
    free(ptr);
}

void *gpu_data_alloc(size_t bytes)
{
    ENTER();
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes);   /* NaN as float, -1 as int32: unwritten voxels cannot match */
    g_live_buffers++;
    LEAVE();
    return p;
}

void gpu_data_free(void *ptr)
{
    if (!ptr) return;
    ENTER();
    drain_all();   /* cudaFree waits for the device */
    g_live_buffers--;
    free(ptr);
    LEAVE();
}

size_t gpu_data_free_bytes(void) { return g_free_bytes; }

void gpu_data_upload(void *dst, const void *src, size_t bytes)
{
    ENTER();
    drain(GPU_STREAM_COMPUTE);   /* in stream order, and src may be reused on return */
    memcpy(dst, src, bytes);
    LEAVE();
}

void gpu_data_upload_async(void *dst, const void *src, size_t bytes)
{
    ENTER();
    push(GPU_STREAM_COMPUTE, (Op){OP_COPY, dst, src, bytes, fnv1a(src, bytes), NULL, 0, NULL, 0});
    LEAVE();
}

void gpu_data_upload_on(GpuStream s, void *dst, const void *src, size_t bytes)
{
    ENTER();
    const Buffer *pinned = find_buffer(g_pinned, src);
    if (!pinned || (const char *)src + bytes > (const char *)pinned->p + pinned->bytes)
        g_pageable_async++;
    push(s, (Op){OP_COPY, dst, src, bytes, fnv1a(src, bytes), NULL, 0, NULL, 0});
    LEAVE();
}

void gpu_data_synchronize(void)
{
    ENTER();
    drain(GPU_STREAM_COMPUTE);
    LEAVE();
}

void gpu_data_download(void *dst, const void *src, size_t bytes)
{
    ENTER();
    drain(GPU_STREAM_COMPUTE);
    memcpy(dst, src, bytes);
    LEAVE();
}

void gpu_crops_render(const struct CropRecipe *recipes, int count)
{
    ENTER();
    CropRecipe *copy = malloc((size_t)(count > 0 ? count : 1) * sizeof *copy);   /* reusable at once */
    memcpy(copy, recipes, (size_t)count * sizeof *copy);
    push(GPU_STREAM_COMPUTE, (Op){OP_RENDER, NULL, NULL, 0, 0, copy, count, NULL, 0});
    g_rendered += count;
    LEAVE();
}

GpuEvent *gpu_event_create(void) { return calloc(1, sizeof(GpuEvent)); }

void gpu_event_destroy(GpuEvent *e)
{
    if (!e) return;
    ENTER();
    drain_all();   /* queued records of e finish before it goes (CUDA defers the release) */
    LEAVE();
    free(e);
}

void gpu_event_record(GpuEvent *e, GpuStream s)
{
    ENTER();
    e->recorded++;
    push(s, (Op){OP_RECORD, NULL, NULL, 0, 0, NULL, 0, e, e->recorded});
    LEAVE();
}

int gpu_event_done(GpuEvent *e)
{
    ENTER();
    int done = event_done(e);
    LEAVE();
    return done;
}

void gpu_event_synchronize(GpuEvent *e)
{
    ENTER();
    while (!event_done(e))
        if (!run_one(GPU_STREAM_UPLOAD) && !run_one(GPU_STREAM_COMPUTE)) {
            g_stuck++;
            break;
        }
    LEAVE();
}

void gpu_stream_wait(GpuStream s, GpuEvent *e)
{
    ENTER();
    if (e->recorded > 0) push(s, (Op){OP_WAIT, NULL, NULL, 0, 0, NULL, 0, e, e->recorded});
    LEAVE();
}

void *gpu_volume_alloc(size_t bytes)
{
    ENTER();
    if (g_volume_bytes + bytes > g_volume_capacity) {
        LEAVE();
        return NULL;
    }
    g_volume_bytes += bytes;
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xff, bytes);
    add_buffer(g_volumes, p, bytes);
    g_live_volumes++;
    LEAVE();
    return p;
}

void gpu_volume_free(void *ptr, size_t bytes)
{
    (void)bytes;
    if (!ptr) return;
    ENTER();
    push(GPU_STREAM_UPLOAD, (Op){OP_FREE, ptr, NULL, 0, 0, NULL, 0, NULL, 0});
    LEAVE();
}

static long ordering_errors(void)
{
    return g_early_reads + g_freed_in_use + g_pinned_freed_in_use + g_source_changed + g_stuck +
           g_pageable_async;
}

static void report_ordering_errors(const char *what)
{
    TEST_CHECK(ordering_errors() == 0, "%s: %ld crops read a volume before its upload, %ld volumes "
               "freed under a queued kernel, %ld pinned buffers freed under a queued copy, %ld "
               "copy sources changed before the copy ran, %ld waits on events nothing completes, "
               "%ld asynchronous copies from pageable memory", what, g_early_reads, g_freed_in_use,
               g_pinned_freed_in_use, g_source_changed, g_stuck, g_pageable_async);
    g_early_reads = g_freed_in_use = g_pinned_freed_in_use = g_source_changed = g_stuck = 0;
    g_pageable_async = 0;
}

/* ---- the test ------------------------------------------------------------------------------ */

enum { B = 3, CASES = 3 };
static const int kCrop[3] = {32, 32, 16};
static Volume g_vol[CASES];

static LoaderOptions options(LoaderMode mode, int threads, int batch)
{
    Config cfg;
    config_defaults(&cfg);
    memcpy(cfg.crop, kCrop, sizeof cfg.crop);
    cfg.batch = batch;
    cfg.prefetch = threads;
    LoaderOptions o = loader_options_from_config(&cfg, mode, 0, 1, 1);
    o.validation_fold = -1;
    o.aug_masked = augment_params_intact();   /* every augmentation on, noise and gamma often */
    o.aug_masked.p_noise = o.aug_masked.p_gamma = 0.5f;
    o.aug_intact = o.aug_masked;
    o.aug_finetune = o.aug_masked;
    return o;
}

typedef enum { PATH_VOLUMES_ON_GPU, PATH_BATCH_UPLOADS } GpuPath;

typedef struct {
    GpuPath path;
    int threads;
    long budget;         /* PATH_VOLUMES_ON_GPU: gpu_cache_bytes */
    int read_every;      /* 0: the "model" skips reading every other batch (host runs ahead) */
    int settle_ms;       /* pause before each call, so the threads have the next steps ready */
    int batch;           /* 0: B */
    int no_host_cache;   /* host volume cache of 0 bytes: volumes are dropped once unreferenced */
} Run;

typedef struct { long host_crops, uploads, prefetched, evict_waits, batches_ahead; } RunCounts;

/* The "model": it reads a batch's device buffers with copies queued on the compute stream (as
 * its input copies are), and the host asks the loader for the next batch before the device has
 * run them -- the overlap the uploads are for. The bytes are compared only after that next
 * call; a copy whose source buffer was overwritten first shows up as a changed source. */
enum { MAX_READS = 4 };   /* four pre-training views, or image and label */
typedef struct {
    int count;
    long step;
    void *expected[MAX_READS], *got[MAX_READS];
    size_t bytes[MAX_READS];
} PendingReads;

static void queue_model_read(PendingReads *p, const void *host_expected, const void *dev, size_t bytes)
{
    int i = p->count++;
    p->expected[i] = malloc(bytes);
    p->got[i] = malloc(bytes);
    p->bytes[i] = bytes;
    memcpy(p->expected[i], host_expected, bytes);   /* the host loader's buffers change next call */
    pthread_mutex_lock(&g_lock);
    push(GPU_STREAM_COMPUTE, (Op){OP_COPY, p->got[i], dev, bytes, 0, NULL, 0, NULL, 0});
    pthread_mutex_unlock(&g_lock);
}

static void check_model_reads(PendingReads *p, const Run *run, LoaderMode mode)
{
    if (!p->count) return;
    gpu_data_synchronize();
    for (int i = 0; i < p->count; i++) {
        TEST_CHECK(!memcmp(p->expected[i], p->got[i], p->bytes[i]), "%s step %ld buffer %d (path %d, "
                   "threads %d, budget %ld, device %d) differs from the host loader",
                   mode == LOADER_PRETRAIN ? "pre-training" : "fine-tuning", p->step, i, run->path,
                   run->threads, run->budget, g_device);
        free(p->expected[i]);
        free(p->got[i]);
    }
    p->count = 0;
}

/* Steps 0..3, then a jump back to step 1: the emulated-GPU loader against the host one. */
static RunCounts compare(LoaderMode mode, Run run)
{
    const int batch = run.batch ? run.batch : B;
    LoaderOptions host = options(mode, run.threads, batch), gpu = options(mode, run.threads, batch);
    if (run.path == PATH_VOLUMES_ON_GPU) {
        gpu.data_on_gpu = 1;
        gpu.gpu_cache_bytes = run.budget;
    } else {
        gpu.upload_batches = 1;
    }
    if (run.no_host_cache) host.cache_bytes = gpu.cache_bytes = 0;   /* pinned volumes go at once */
    Loader *a = loader_create(&host, loader_source_memory(g_vol, CASES, NULL));
    Loader *b = loader_create(&gpu, loader_source_memory(g_vol, CASES, NULL));
    const size_t n = (size_t)batch * kCrop[0] * kCrop[1] * kCrop[2];
    PendingReads pending = {0};
    const long steps[] = {0, 1, 2, 3, 1};
    const int count = (int)(sizeof steps / sizeof steps[0]);
    for (int k = 0; k < count; k++) {
        long step = steps[k];
        const int read = run.read_every || k % 2 == 1 || k == count - 1;
        if (run.settle_ms) usleep((useconds_t)run.settle_ms * 1000);
        if (mode == LOADER_PRETRAIN) {
            PretrainBatch x, y;
            loader_next_pretrain_batch(a, step, &x);
            loader_next_pretrain_batch(b, step, &y);
            check_model_reads(&pending, &run, mode);
            TEST_CHECK(!x.on_device && y.on_device, "on_device %d %d", x.on_device, y.on_device);
            const float *hv[4] = {x.query, x.key, x.query_intact, x.key_intact};
            const float *dv[4] = {y.query, y.key, y.query_intact, y.key_intact};
            for (int v = 0; v < 4 && read; v++) queue_model_read(&pending, hv[v], dv[v], n * sizeof(float));
            TEST_CHECK(!memcmp(x.query_case, y.query_case, batch * sizeof(int)) &&
                       !memcmp(x.key_center, y.key_center, batch * sizeof *x.key_center) &&
                       !memcmp(x.query_aug, y.query_aug, batch * sizeof *x.query_aug), "metadata differ");
        } else {
            FinetuneBatch x, y;
            loader_next_finetune_batch(a, step, &x);
            loader_next_finetune_batch(b, step, &y);
            check_model_reads(&pending, &run, mode);
            TEST_CHECK(!x.on_device && y.on_device, "on_device %d %d", x.on_device, y.on_device);
            if (read) {
                queue_model_read(&pending, x.image, y.image, n * sizeof(float));
                queue_model_read(&pending, x.label, y.label, n * sizeof(int32_t));
            }
            TEST_CHECK(!memcmp(x.case_index, y.case_index, batch * sizeof(int)), "cases differ");
        }
        pending.step = step;
    }
    check_model_reads(&pending, &run, mode);
    LoaderCacheStats s = loader_cache_stats(b);
    RunCounts c = {s.host_crops, s.gpu_uploads, s.gpu_prefetched, s.gpu_evict_waits, s.batches_ahead};
    loader_destroy(a);
    loader_destroy(b);
    pthread_mutex_lock(&g_lock);
    drain_all();   /* the stream-ordered frees of loader_destroy */
    pthread_mutex_unlock(&g_lock);
    TEST_CHECK(g_live_buffers == 0 && g_live_volumes == 0, "%ld device buffers and %ld volumes "
               "left after loader_destroy", g_live_buffers, g_live_volumes);
    report_ordering_errors("loader");
    return c;
}

static int test_gpu_path_equals_host(void)
{
    const long all = 1L << 30, none = 64;
    for (g_device = DEVICE_LAZY; g_device < DEVICE_MODES; g_device++)
        for (int threads = 0; threads <= 2; threads += 2)
            for (int m = 0; m < 2; m++) {
                LoaderMode mode = m ? LOADER_PRETRAIN : LOADER_FINETUNE;
                const int views = mode == LOADER_PRETRAIN ? 4 : 1;
                long before = g_rendered;
                RunCounts c = compare(mode, (Run){PATH_VOLUMES_ON_GPU, threads, all, 1, 0, 0, 0});
                TEST_CHECK(c.host_crops == 0, "%ld host crops with room for every volume", c.host_crops);
                TEST_CHECK(c.uploads >= 1 && c.uploads <= CASES, "%ld volume uploads for %d cases "
                           "(each goes up once)", c.uploads, CASES);
                TEST_CHECK(c.evict_waits == 0, "%ld evictions with room for every volume", c.evict_waits);
                TEST_CHECK(g_rendered - before == 5L * B * views, "%ld crops rendered, expected %d",
                           g_rendered - before, 5 * B * views);
                c = compare(mode, (Run){PATH_VOLUMES_ON_GPU, threads, none, 1, 0, 0, 0});
                TEST_CHECK(c.host_crops == 5L * B * views && c.uploads == 0,
                           "no volume fits: %ld host crops (expected %d), %ld uploads", c.host_crops,
                           5 * B * views, c.uploads);
            }
    g_device = DEVICE_LAZY;
    return 0;
}

static size_t largest_volume_bytes(int with_label)
{
    size_t largest = 0;
    for (int i = 0; i < CASES; i++) {
        size_t b = gpu_volume_bytes(&g_vol[i], with_label);
        largest = b > largest ? b : largest;
    }
    return largest;
}

static int test_budget_of_one_volume(void)
{
    /* Room for the largest volume only: the first volume a batch claims stays for the batch,
     * the batch's other volumes are cut on the host. (Evictions: test_churn_waits_for_last_use.) */
    const size_t largest = largest_volume_bytes(0);
    RunCounts c = compare(LOADER_PRETRAIN, (Run){PATH_VOLUMES_ON_GPU, 0, (long)largest + 1, 1, 0, 0, 0});
    TEST_CHECK(c.host_crops > 0 && c.host_crops < 5L * B * 4, "%ld host crops", c.host_crops);
    TEST_CHECK(c.uploads >= 1, "%ld uploads", c.uploads);
    /* The same budget reached the other way: gpu_cache_mb asks for plenty, but the device has
     * only the 1 GiB reserve plus one volume free, so the loader lowers the budget. */
    g_free_bytes = ((size_t)1 << 30) + largest + 1;
    RunCounts d = compare(LOADER_PRETRAIN, (Run){PATH_VOLUMES_ON_GPU, 0, 1L << 40, 1, 0, 0, 0});
    g_free_bytes = (size_t)1 << 40;
    TEST_CHECK(d.host_crops == c.host_crops && d.uploads == c.uploads, "free-memory limit: %ld host "
               "crops and %ld uploads, expected %ld and %ld as with the same budget set directly",
               d.host_crops, d.uploads, c.host_crops, c.uploads);
    /* And reached late: budget and free memory say plenty, but the device's allocations fail
     * past one volume (the step's buffers grew after the budget was set): the cache evicts,
     * then keeps to what it holds and crops the rest on the host, the same bytes throughout
     * (compare checks them), instead of ending the run. */
    g_volume_capacity = largest + 1;
    RunCounts e = compare(LOADER_PRETRAIN, (Run){PATH_VOLUMES_ON_GPU, 0, 1L << 40, 1, 0, 0, 0});
    g_volume_capacity = (size_t)1 << 40;
    TEST_CHECK(e.host_crops > 0 && e.uploads >= 1, "device out of memory: %ld host crops, %ld "
               "uploads", e.host_crops, e.uploads);
    return 0;
}

/* Churn: batch 1 and room for one volume, so (almost) every step evicts the volume of the step
 * before; prefetch threads; and a host that runs ahead of the device (it skips reading every
 * other batch, so with a lazy device the previous batch's crop kernel is still queued when the
 * next batch needs its room): evictions must wait for those kernels, never free under them. */
static int test_churn_waits_for_last_use(void)
{
    for (g_device = DEVICE_LAZY; g_device < DEVICE_MODES; g_device++)
        for (int m = 0; m < 2; m++) {
            const long one = (long)largest_volume_bytes(!m) + 1;   /* fine-tuning: with labels */
            RunCounts c = compare(m ? LOADER_PRETRAIN : LOADER_FINETUNE,
                                  (Run){PATH_VOLUMES_ON_GPU, 2, one, 0, 5, 1, 1});
            TEST_CHECK(c.uploads > 1, "%ld uploads: expected evictions and new uploads", c.uploads);
            if (!m && g_device == DEVICE_LAZY)
                TEST_CHECK(c.evict_waits > 0, "fine-tuning, lazy device: no eviction waited for the "
                           "queued kernel of the step before");
            printf("    churn (%s, %s device): %ld uploads, %ld evictions waited for a queued kernel\n",
                   m ? "pre-training" : "fine-tuning", device_names[g_device], c.uploads, c.evict_waits);
        }
    g_device = DEVICE_LAZY;
    return 0;
}

/* Uploads ahead: fine-tuning with batch 1 meets one new case per step (epoch permutation of 3
 * cases); with the threads a step ahead, each new case is uploaded while the step before it
 * "computes", i.e. before its batch is asked for, and its crop still waits for the upload. */
static int test_volume_prefetch(void)
{
    LoaderOptions o = options(LOADER_FINETUNE, 2, 1);
    o.data_on_gpu = 1;
    o.gpu_cache_bytes = 1L << 30;
    Loader *L = loader_create(&o, loader_source_memory(g_vol, CASES, NULL));
    for (long step = 0; step < CASES; step++) {
        usleep(100 * 1000);   /* the threads prepare steps step .. step + 2 meanwhile */
        FinetuneBatch b;
        loader_next_finetune_batch(L, step, &b);
        gpu_data_synchronize();
    }
    LoaderCacheStats s = loader_cache_stats(L);
    loader_destroy(L);
    pthread_mutex_lock(&g_lock);
    drain_all();
    pthread_mutex_unlock(&g_lock);
    TEST_CHECK(s.gpu_uploads == CASES && s.gpu_prefetched >= 1, "%ld uploads (expected %d), %ld "
               "of them ahead of their step (expected the cases first met at steps 1 and 2)",
               s.gpu_uploads, CASES, s.gpu_prefetched);
    printf("    prefetch: %ld of %ld volume uploads issued a step ahead\n", s.gpu_prefetched, s.gpu_uploads);
    report_ordering_errors("prefetch");
    return 0;
}

/* device = cuda, data_device = cpu: batches come back in device memory through two buffers,
 * the next step's upload queued a step ahead; bytes as the host loader, the pinned host slots
 * never refilled (or freed) under a queued upload, and no batch read before its upload. */
static int test_double_buffered_batch_uploads(void)
{
    long ahead = 0;
    for (g_device = DEVICE_LAZY; g_device < DEVICE_MODES; g_device++)
        for (int threads = 0; threads <= 2; threads += 2)
            for (int m = 0; m < 2; m++) {
                RunCounts c = compare(m ? LOADER_PRETRAIN : LOADER_FINETUNE,
                                      (Run){PATH_BATCH_UPLOADS, threads, 0, 1, threads ? 50 : 0, 0, 0});
                TEST_CHECK(threads || c.batches_ahead == 0, "%ld uploads ahead without threads",
                           c.batches_ahead);
                if (threads) ahead += c.batches_ahead;
            }
    g_device = DEVICE_LAZY;
    TEST_CHECK(ahead >= 1, "no batch upload was issued ahead of its step");
    printf("    batches uploaded a step ahead: %ld (of 5 calls x 6 runs with threads)\n", ahead);
    return 0;
}

int main(void)
{
    for (int i = 0; i < CASES; i++) {
        BodyCase bc = {1.0 + 0.1 * i, 1.0, 25.0 * i, 25.0 * i + 400, {6.0f, 6.0f, 9.0f}, 48};
        body_make(&bc, &g_vol[i]);
    }
    TEST_RUN(test_gpu_path_equals_host);
    TEST_RUN(test_budget_of_one_volume);
    TEST_RUN(test_churn_waits_for_last_use);
    TEST_RUN(test_volume_prefetch);
    TEST_RUN(test_double_buffered_batch_uploads);
    for (int i = 0; i < CASES; i++) volume_free(&g_vol[i]);
    return test_finish();
}

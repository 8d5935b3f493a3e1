/* The prefetching crop loader: turns cases (from dataset.h5 or from memory) into batches of
 * windowed, cropped, augmented float crops for pre-training and fine-tuning.
 *
 * Reproducibility contract. With accum micro-batches per optimiser step (gradient
 * accumulation, accum_steps; 1 without), the loader's steps are micro-steps u = s accum + m,
 * and sample j of rank r in micro-batch m of step s has the global index
 *     g = s * global_batch + (m * size + r) * batch + j,   global_batch = batch * size * accum,
 * and every random decision for it (which case, which key volume, where to crop, which
 * augmentation, the noise) is a Philox stream keyed by (seed, s, g, purpose). So the samples
 * of a step are the same bytes whatever the rank count, micro-batch count, thread count or
 * timing: 1 rank with batch 2 sees exactly the samples that 2 ranks with batch 1 see, or 1
 * rank with batch 1 and accum 2, in the same order. The loader's only position is the
 * (micro-)step number, so resuming a run needs nothing else.
 *
 * Sharding. Each rank reads only the cases its own samples name (cases are drawn from an
 * epoch permutation, sample g taking perm_e[g mod n] with e = g / n), so over an epoch a rank
 * reads about 1/size of the cases; a pre-training key volume may be any case.
 *
 * Memory. A case read once stays in memory (int16 HU + uint8 label, plus its foreground
 * index and matcher summary) until the cache exceeds its limit; then the least recently used
 * unreferenced cases go. Batches are prepared by `prefetch` threads into a ring of
 * prefetch + 1 batch buffers allocated through a host allocator the caller may replace (e.g.
 * by cudaHostAlloc for pinned memory). Training asks for step s; the threads are already
 * working on s + 1 ... s + prefetch. Asking for any other step than the next one (a resume,
 * a jump) is fine: the ring restarts there.
 *
 * With data_on_gpu (config data_device = gpu) the threads prepare crop recipes instead of
 * voxels (data/crop_recipe.h) and the thread that asks for a batch renders it with a CUDA
 * kernel from volumes kept in GPU memory (io/gpu_volume_cache.h): same decisions, same bytes.
 *
 * Threads never call MPI or HDF5 concurrently: source reads are serialised by a lock.
 * Crops are float [B, 1, X, Y, Z], Z fastest, intensities windowed to [0, 1] (then
 * augmented), zero where a crop leaves its volume; labels int32 [B, 1, X, Y, Z]. */
#ifndef ALICE_LOADER_H
#define ALICE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "data/augment.h"
#include "data/crop.h"
#include "data/crop_sampler.h"
#include "data/matcher.h"
#include "volume.h"

/* Where cases come from. read_case fills *out with buffers the loader then owns, allocated by
 * alloc (NULL: xmalloc; io/volume.h). */
typedef struct {
    void *ctx;
    int num_cases;
    const char *(*case_name)(void *ctx, int i);
    int (*case_fold)(void *ctx, int i);     /* fold assigned at pack time */
    int (*case_has_label)(void *ctx, int i);
    void (*read_case)(void *ctx, int i, Volume *out, VolumeAllocFn alloc);
    void (*close)(void *ctx);
} LoaderSource;

/* Cases held by the caller (copied on read; the array must outlive the loader). folds may be
 * NULL (all fold 0). */
LoaderSource loader_source_memory(const Volume *volumes, int count, const int *folds);

typedef enum { LOADER_PRETRAIN, LOADER_FINETUNE } LoaderMode;

typedef struct {
    LoaderMode mode;
    uint64_t seed;
    int rank, size;            /* this rank and the rank count (not read from MPI) */
    int batch;                 /* samples per rank per (micro-)step */
    int accum;                 /* micro-steps per optimiser step (>= 1; accum_steps) */
    int crop[3];
    HuWindow window;
    int prefetch;              /* threads; 0 = prepare each batch in the caller */
    long first_step;           /* the micro-step the threads read ahead from (a resumed run's
                                * start x accum) */
    long cache_bytes;          /* volume cache limit; 0 = none, < 0 = unlimited */
    /* pre-training */
    int inter_volume;          /* key from another case (1) or the query's own (0) */
    float key_jitter;          /* key centre moved by U(-j, j) * crop per axis after matching */
    /* K's crop: 0 = moved inside the volume (crop_start_for_center), 1 = centred on the
     * matched point whatever the edge, zero-padded outside (key_crop = pad) */
    int key_crop_pad;
    /* a query crop whose matched point lies outside the key volume is drawn again, at most this
     * many times (pair_redraws; 0 = every first draw kept) */
    int pair_redraws;
    const Matcher *matcher;
    AugmentParams aug_masked;  /* the masked views' augmentation (default none) */
    AugmentParams aug_intact;  /* the intact views' strong augmentation */
    /* fine-tuning */
    int validation_fold;       /* cases of this fold are held out (-1 = none) */
    CropSampler sampler;       /* crop centres: posneg (pos_fraction) or classes (class_ratios) */
    /* Consecutive samples j of a rank's batch share one case draw: sample g (global) takes
     * the case of draw g / crops_per_case from the epoch's shuffle; its crop centre and
     * augmentation stay its own (streams keyed by g). batch must be a multiple, so a case's
     * crops never straddle two ranks. */
    int crops_per_case;
    AugmentParams aug_finetune;
    /* batch buffers: e.g. cudaHostAlloc/cudaFreeHost for pinned memory; NULL = malloc/free */
    void *(*host_alloc)(size_t bytes);
    void (*host_free)(void *ptr);
    /* data_device = gpu: the threads make every random decision as always, but emit crop
     * recipes instead of voxels; the batch is rendered by a CUDA kernel on the backend stream
     * (in the thread that asks for it) from volumes kept in GPU memory, straight into device
     * batch buffers (PretrainBatch/FinetuneBatch.on_device), bit for bit the CPU crops except
     * gamma (device powf, within 2 ulp). A case larger than gpu_cache_bytes is cropped on the
     * host and uploaded. Host batch buffers default to pinned memory then, and so do the
     * cached host volumes (read straight into pinned memory by the thread that reads them), so volume
     * uploads are DMAs on an upload stream: the volumes of the prepared steps s+1 ...
     * s+prefetch are uploaded while step s computes (io/gpu_volume_cache.h). */
    int data_on_gpu;
    long gpu_cache_bytes;
    int num_classes;           /* fine-tuning: every label must lie in 0..num_classes-1 (0 = unchecked) */
    /* device = cuda with data_device = cpu: batches come back in GPU memory (on_device), through
     * two device batch buffers: the batch of step s + 1 is uploaded from its pinned host buffers
     * on the upload stream while step s computes, ordered by events (ready: the compute stream
     * waits for it; consumed: recorded at the next call, the upload into that buffer waits for
     * it). Needs pinned host_alloc. */
    int upload_batches;
} LoaderOptions;

/* The volume cache's budget for cache_mb: its MiB, or for cache_mb = -1 (the default)
 * LOADER_AUTO_CACHE_SHARE of the host memory this process may use now (core/sysmem.h: the
 * node's available memory or the job's cgroup room, the lower) shared by the node's
 * local_size ranks. Every rank of a pre-training run ends up reading every case (the epoch's
 * shuffle and inter-volume pairs are global), so an unlimited cache would hold the whole data
 * set once per rank. */
#define LOADER_AUTO_CACHE_SHARE 0.4
long loader_cache_budget(int cache_mb, int local_size);
/* Options from the configuration: seed, batch, crop, window_lo/hi, prefetch, cache_mb (through
 * loader_cache_budget with local_size, the ranks on this node),
 * data_device, gpu_cache_mb (data_device = gpu needs device = cuda: a clear error otherwise;
 * device = cuda makes the batch buffers pinned and, with data_device = cpu, sets
 * upload_batches),
 * inter_volume, matcher, fold, crop_sampler, pos_fraction, class_ratios, num_classes. The
 * window comes from the config as it stands: the fine-tuning command should default
 * window_lo/hi to WINDOW_FINETUNE_LO/HI ([-175, 250], MONAI's UNETR recipe) before applying
 * the job file. */
LoaderOptions loader_options_from_config(const Config *cfg, LoaderMode mode, int rank, int size,
                                         int local_size);

/* One pre-training batch: Alice's crops Q (from the query volume) and K (the same anatomy in
 * the key volume, found by the matcher). query/key are the inputs of the masked views (the
 * model draws the masks); query_intact/key_intact are the strongly augmented copies for the
 * target encoder, whose geometric transform is in query_aug/key_aug (flips then quarter
 * turns, see data/augment.h). Centres are voxel indices in each case. */
typedef struct {
    int batch;
    int crop[3];
    int on_device;                         /* 1: the four view buffers are GPU memory */
    float *query, *key;                    /* [B, 1, X, Y, Z] */
    float *query_intact, *key_intact;      /* [B, 1, X, Y, Z] */
    int *query_case, *key_case;            /* [B] */
    int (*query_center)[3], (*key_center)[3];
    AugmentDraw *query_aug, *key_aug;      /* [B] */
    /* [B]: the query crops drawn again (pair_redraws) before the one kept, and whether the
     * kept one's matched point lies outside the key volume (its centre then clamped into K) */
    int *pair_redrawn, *key_outside;
} PretrainBatch;

typedef struct {
    int batch;
    int crop[3];
    int on_device;                         /* 1: image and label are GPU memory */
    float *image;                          /* [B, 1, X, Y, Z] */
    int32_t *label;                        /* [B, 1, X, Y, Z] */
    int *case_index;                       /* [B] */
    int *positive;                         /* [B] 1 when centred on foreground */
} FinetuneBatch;

/* A whole case, windowed (for validation and sliding-window inference). */
typedef struct {
    int dim[3];
    float spacing[3];
    double affine[4][4];
    float *image;                          /* [X, Y, Z] windowed */
    int32_t *label;                        /* [X, Y, Z], NULL without a label */
} WindowedCase;

typedef struct Loader Loader;

/* Takes ownership of source. Dies with a clear message when no case qualifies (no cases;
 * fine-tuning without labelled training cases). Starts the prefetch threads. */
Loader *loader_create(const LoaderOptions *opt, LoaderSource source);
void loader_destroy(Loader *L);

/* The batch of `step`. Its buffers belong to the loader and stay valid until the next call
 * on this loader (or loader_destroy). The mode must match the loader's. Device buffers
 * (on_device) are ready for work queued on the backend (compute) stream; whatever reads them
 * must be queued there before the next call, which may start overwriting them in stream order. */
void loader_next_pretrain_batch(Loader *L, long step, PretrainBatch *out);
void loader_next_finetune_batch(Loader *L, long step, FinetuneBatch *out);

/* Whole case i (all cases are addressable, training or not). Free with windowed_case_free. */
void loader_read_full_case(Loader *L, int case_index, WindowedCase *out);
void windowed_case_free(WindowedCase *c);

int loader_num_cases(const Loader *L);
/* The global index of sample j of this rank at micro-step u (the contract above): what the
 * models key their own draws (masks, drop-path) by. */
long loader_global_sample(const Loader *L, long u, int j);
const char *loader_case_name(const Loader *L, int case_index);
/* Cases samples are drawn from (all for pre-training; labelled, not held out, for
 * fine-tuning), and the held-out labelled cases of the validation fold. */
int loader_training_cases(const Loader *L, const int **cases);
int loader_validation_cases(const Loader *L, const int **cases);

/* Cache statistics (for tests and the log). */
typedef struct {
    long reads;           /* source reads so far */
    long hits;            /* acquisitions served from memory */
    size_t bytes;         /* held now */
    long gpu_uploads;     /* data_device = gpu: volumes copied to GPU memory */
    long gpu_hits;        /* ... and fetches served from it */
    long host_crops;      /* ... and crops made on the host (volume beyond the GPU budget) */
    long gpu_prefetched;  /* ... volume uploads started for a step before it was asked for */
    long gpu_evict_waits; /* ... evictions that waited for a pending use or upload */
    long batches_ahead;   /* upload_batches: batch uploads started before the step was asked for */
} LoaderCacheStats;
LoaderCacheStats loader_cache_stats(Loader *L);

#endif

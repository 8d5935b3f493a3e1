/* Where the GPU time of a run goes: the aggregation behind the CUPTI kernel profiler
 * (cuda/profiler/kernel_profile.cpp). Pure C with libc only, so the injection library links
 * it without the rest of libalice and the CPU tests exercise exactly the code the profiler
 * runs: records of kernels, memcpys and memsets go into a collector (kernel names interned),
 * a window excludes the warm-up, and the summary gives the totals (kernel time, busy time as
 * the union of the intervals, span, memcpys by kind), a table of kernels grouped by name, and
 * where the idle time is: the gaps between busy intervals by length and the longest ones with
 * the activities on either side (many short launch gaps, or a few long host synchronisations). */
#ifndef ALICE_KERNEL_SUMMARY_H
#define ALICE_KERNEL_SUMMARY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { KS_KIND_KERNEL, KS_KIND_MEMCPY, KS_KIND_MEMSET } KsActivityKind;

/* Direction of a memcpy (CUPTI's kinds folded: every copy touching a CUDA array is ARRAY). */
typedef enum {
    KS_COPY_UNKNOWN,
    KS_COPY_HTOD,
    KS_COPY_DTOH,
    KS_COPY_DTOD,
    KS_COPY_HTOH,
    KS_COPY_PTOP,
    KS_COPY_ARRAY,
    KS_COPY_KIND_COUNT
} KsCopyKind;

const char *ks_copy_kind_name(KsCopyKind kind);

typedef struct {
    uint64_t start_ns, end_ns;
    uint64_t bytes;            /* memcpy/memset only */
    uint32_t correlation_id;   /* orders launches that start at the same time stamp */
    uint32_t name_id;          /* kernels only: index into the collector's names */
    uint8_t kind;              /* KsActivityKind */
    uint8_t copy_kind;         /* KsCopyKind, memcpy only */
} KsRecord;

typedef struct KsCollector KsCollector;

KsCollector *ks_collector_new(void);   /* NULL when out of memory */
void ks_collector_free(KsCollector *c);
/* Each returns 0, or -1 when out of memory (the record is counted as lost). */
int ks_collector_add_kernel(KsCollector *c, const char *name, uint64_t start_ns, uint64_t end_ns,
                            uint32_t correlation_id);
int ks_collector_add_copy(KsCollector *c, KsCopyKind kind, uint64_t start_ns, uint64_t end_ns,
                          uint64_t bytes, uint32_t correlation_id);
int ks_collector_add_memset(KsCollector *c, uint64_t start_ns, uint64_t end_ns, uint64_t bytes,
                            uint32_t correlation_id);
size_t ks_collector_name_count(const KsCollector *c);
const char *ks_collector_name(const KsCollector *c, size_t name_id);
size_t ks_collector_record_count(const KsCollector *c);
size_t ks_collector_lost(const KsCollector *c);

/* Which kernels count: the first skip_kernels launches (in start order) are left out, or,
 * with last_repeats > 0, everything before the last last_repeats repeats of the launch
 * sequence (a benchmark runs identical steps: the tail of the name sequence is periodic).
 * Memcpys and memsets count when they start at or after the first kernel kept. last:R takes
 * the longest period, so with 2R or more identical steps at the end it would take two steps
 * for one: give R as the number of timed steps (--bench-steps R runs R + 1). */
typedef struct {
    size_t skip_kernels;
    int last_repeats;
} KsWindow;

/* Parses ALICE_KERNEL_PROFILE_SKIP: empty or NULL (0), a count "N", or "last:R". Returns 0,
 * or -1 with a message in err naming the problem and the accepted forms. */
int ks_parse_window(const char *text, KsWindow *out, char *err, size_t err_size);

/* The largest period p with repeats * p <= n such that seq[j] == seq[j - p] for every j in
 * the last (repeats - 1) * p entries: the length of one step's launch sequence. 0 when none.
 * The largest, not the smallest: a step's tail (the optimizer over many tensors) repeats one
 * kernel, which a smallest-period search would take for the step. */
size_t ks_find_period(const uint32_t *seq, size_t n, int repeats);

/* The window of a last:R profile: the R repeats of the launch sequence that end at most
 * KS_TAIL_SLACK launches before the end (a program may launch a few kernels after its timed
 * steps, while freeing or finishing). A period shorter than n / (4 (R + 1)) is not taken: the
 * steps are most of a benchmark's launches, and a run of one repeated kernel (the optimizer
 * over many tensors) would otherwise pass for R steps; nor is a period of one kernel name. Returns the number of launches before
 * the window (0 when none is found), with *period (0: none) and *tail (launches after it). */
enum { KS_TAIL_SLACK = 256 };
size_t ks_find_window(const uint32_t *seq, size_t n, int repeats, size_t *period, size_t *tail);

typedef struct {
    uint32_t name_id;
    size_t calls;
    uint64_t total_ns;
} KsGroup;

/* Idle gaps by length. The boundaries tell launch overhead (a few us between back-to-back
 * launches) from host work and synchronisations (a read-back, a host-side decision: 100 us
 * and up). A gap of exactly a boundary's length falls in the bucket that starts there. */
typedef enum {
    KS_GAP_UNDER_5US,       /* [0, 5 us) */
    KS_GAP_5_TO_20US,       /* [5 us, 20 us) */
    KS_GAP_20_TO_100US,     /* [20 us, 100 us) */
    KS_GAP_100US_TO_1MS,    /* [100 us, 1 ms) */
    KS_GAP_1MS_AND_UP,      /* [1 ms, ...) */
    KS_GAP_BUCKET_COUNT
} KsGapBucket;

/* "Long" gaps (the machine line's gaps_over_20us_ms): this bucket and the ones after it. */
#define KS_GAP_LONG_FROM KS_GAP_20_TO_100US

KsGapBucket ks_gap_bucket(uint64_t gap_ns);
const char *ks_gap_bucket_name(KsGapBucket bucket);   /* "< 5 us", "5-20 us", ... */

/* One side of a gap: which activity it was (memcpys by direction, kernels by name). */
typedef struct {
    uint8_t kind;              /* KsActivityKind */
    uint8_t copy_kind;         /* KsCopyKind, memcpy only */
    uint32_t name_id;          /* kernels only */
} KsActivityRef;

/* An idle interval between two consecutive busy intervals (of the union). */
typedef struct {
    uint64_t start_ns, end_ns;
    KsActivityRef ended;       /* ended last before it (the latest end of the busy interval;
                                  among equal ends, the later start) */
    KsActivityRef started;     /* started the next busy interval (first in start order) */
} KsGap;

enum { KS_TOP_GAPS = 12 };

typedef struct {
    size_t kernels_seen;       /* every kernel record */
    size_t kernels_skipped;    /* left out by the window */
    size_t kernels;            /* in the window */
    size_t period;             /* last:R windows: the launch sequence found (0: none) */
    size_t tail;               /* last:R windows: launches after the R repeats (kept) */
    int repeats;
    uint64_t first_start_ns, last_end_ns;   /* span of the window's activities */
    uint64_t kernel_ns;        /* sum of kernel durations */
    uint64_t busy_ns;          /* union of kernel, memcpy and memset intervals */
    uint64_t idle_ns;          /* the gaps between its intervals: span - busy */
    size_t gaps;
    size_t gap_bucket_count[KS_GAP_BUCKET_COUNT];
    uint64_t gap_bucket_ns[KS_GAP_BUCKET_COUNT];
    uint64_t long_gap_ns;      /* idle in gaps of the buckets from KS_GAP_LONG_FROM on */
    KsGap top_gaps[KS_TOP_GAPS];   /* the longest, longest first (earlier first among equal) */
    size_t top_gap_count;
    size_t copies[KS_COPY_KIND_COUNT];
    uint64_t copy_ns[KS_COPY_KIND_COUNT], copy_bytes[KS_COPY_KIND_COUNT];
    size_t memsets;
    uint64_t memset_ns, memset_bytes;
    size_t invalid;            /* records ending before they start (not counted) */
    size_t lost;               /* records the collector could not store */
    uint64_t dropped;          /* records CUPTI dropped (set by the profiler) */
    KsGroup *groups;           /* by total time, longest first */
    size_t group_count;
    char window_note[200];     /* how the window was chosen, for the report */
} KsSummary;

/* Returns 0, or -1 when out of memory. */
int ks_summarize(const KsCollector *c, const KsWindow *window, KsSummary *out);
void ks_summary_free(KsSummary *s);

/* A demangled kernel name made readable: the return type and the parameter list dropped,
 * the qualified base name and the template arguments kept, cut to max_chars (ending in
 * "..." when cut). Writes at most out_size - 1 characters; returns the length written. */
size_t ks_short_name(const char *name, char *out, size_t out_size, size_t max_chars);

enum { KS_NAME_CHARS = 70, KS_TOP_ROWS = 40 };

/* The report: totals, then the top_rows kernel groups (calls, total ms, mean us, % of kernel
 * time, cumulative %), the rest summed in one "other" row, then the idle time (total, by gap
 * length, the KS_TOP_GAPS longest gaps with the activity before and after each), then one
 * machine-readable line "kernel_profile kernels=... busy_pct=... idle_ms=...
 * gaps_over_20us_ms=...". Only the kernel table's rows begin with a rank (tests/gpu/run.sh
 * reads its first 3 rows by that). display_names[name_id] (demangled names) may be NULL: the
 * collector's names are shown. */
void ks_write_report(const KsSummary *s, const KsCollector *c, const char *const *display_names,
                     size_t top_rows, FILE *out);

#ifdef __cplusplus
}
#endif

#endif

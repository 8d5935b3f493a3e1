/* Aggregation of GPU activity records for the kernel profiler (see kernel_summary.h). libc
 * only: the CUPTI injection library links this file alone, outside libalice. */
#include "perf/kernel_summary.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- the collector: records in arrival order, kernel names interned ---- */

struct KsCollector {
    KsRecord *records;
    size_t count, capacity;
    char **names;              /* by name id */
    size_t name_count, name_capacity;
    uint32_t *slots;           /* open addressing: name id + 1, 0 = empty */
    size_t slot_count;         /* a power of two, kept at least twice name_count */
    size_t lost;
};

KsCollector *ks_collector_new(void)
{
    return calloc(1, sizeof(KsCollector));
}

void ks_collector_free(KsCollector *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->name_count; i++) free(c->names[i]);
    free(c->names);
    free(c->slots);
    free(c->records);
    free(c);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int grow_slots(KsCollector *c)
{
    size_t n = c->slot_count ? 2 * c->slot_count : 256;
    uint32_t *slots = calloc(n, sizeof(uint32_t));
    if (!slots) return -1;
    for (size_t id = 0; id < c->name_count; id++) {
        size_t i = hash_name(c->names[id]) & (n - 1);
        while (slots[i]) i = (i + 1) & (n - 1);
        slots[i] = (uint32_t)id + 1;
    }
    free(c->slots);
    c->slots = slots;
    c->slot_count = n;
    return 0;
}

/* The id of name, added when new; -1 when out of memory. */
static long intern_name(KsCollector *c, const char *name)
{
    if (2 * (c->name_count + 1) > c->slot_count && grow_slots(c) != 0) return -1;
    size_t i = hash_name(name) & (c->slot_count - 1);
    for (; c->slots[i]; i = (i + 1) & (c->slot_count - 1))
        if (strcmp(c->names[c->slots[i] - 1], name) == 0) return (long)c->slots[i] - 1;
    if (c->name_count == c->name_capacity) {
        size_t cap = c->name_capacity ? 2 * c->name_capacity : 64;
        char **names = realloc(c->names, cap * sizeof(char *));
        if (!names) return -1;
        c->names = names;
        c->name_capacity = cap;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    c->names[c->name_count] = copy;
    c->slots[i] = (uint32_t)c->name_count + 1;
    return (long)c->name_count++;
}

static int push_record(KsCollector *c, const KsRecord *r)
{
    if (c->count == c->capacity) {
        size_t cap = c->capacity ? 2 * c->capacity : 4096;
        KsRecord *records = realloc(c->records, cap * sizeof(KsRecord));
        if (!records) { c->lost++; return -1; }
        c->records = records;
        c->capacity = cap;
    }
    c->records[c->count++] = *r;
    return 0;
}

int ks_collector_add_kernel(KsCollector *c, const char *name, uint64_t start_ns, uint64_t end_ns,
                            uint32_t correlation_id)
{
    long id = intern_name(c, name && *name ? name : "(unnamed kernel)");
    if (id < 0) { c->lost++; return -1; }
    KsRecord r = {.start_ns = start_ns, .end_ns = end_ns, .correlation_id = correlation_id,
                  .name_id = (uint32_t)id, .kind = KS_KIND_KERNEL};
    return push_record(c, &r);
}

int ks_collector_add_copy(KsCollector *c, KsCopyKind kind, uint64_t start_ns, uint64_t end_ns,
                          uint64_t bytes, uint32_t correlation_id)
{
    KsRecord r = {.start_ns = start_ns, .end_ns = end_ns, .bytes = bytes,
                  .correlation_id = correlation_id, .kind = KS_KIND_MEMCPY,
                  .copy_kind = (uint8_t)(kind < KS_COPY_KIND_COUNT ? kind : KS_COPY_UNKNOWN)};
    return push_record(c, &r);
}

int ks_collector_add_memset(KsCollector *c, uint64_t start_ns, uint64_t end_ns, uint64_t bytes,
                            uint32_t correlation_id)
{
    KsRecord r = {.start_ns = start_ns, .end_ns = end_ns, .bytes = bytes,
                  .correlation_id = correlation_id, .kind = KS_KIND_MEMSET};
    return push_record(c, &r);
}

size_t ks_collector_name_count(const KsCollector *c) { return c->name_count; }
const char *ks_collector_name(const KsCollector *c, size_t id) { return id < c->name_count ? c->names[id] : "?"; }
size_t ks_collector_record_count(const KsCollector *c) { return c->count; }
size_t ks_collector_lost(const KsCollector *c) { return c->lost; }

const char *ks_copy_kind_name(KsCopyKind kind)
{
    static const char *const names[KS_COPY_KIND_COUNT] = {
        [KS_COPY_UNKNOWN] = "unknown", [KS_COPY_HTOD] = "HtoD", [KS_COPY_DTOH] = "DtoH",
        [KS_COPY_DTOD] = "DtoD", [KS_COPY_HTOH] = "HtoH", [KS_COPY_PTOP] = "PtoP",
        [KS_COPY_ARRAY] = "array"};
    return kind < KS_COPY_KIND_COUNT ? names[kind] : "unknown";
}

/* ---- the window ---- */

int ks_parse_window(const char *text, KsWindow *out, char *err, size_t err_size)
{
    *out = (KsWindow){0, 0};
    if (!text || !*text) return 0;
    const char *digits = text;
    int repeats = strncmp(text, "last:", 5) == 0;
    if (repeats) digits = text + 5;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(digits, &end, 10);
    if (*digits < '0' || *digits > '9' || *end != '\0' || errno != 0 || (repeats && (v < 2 || v > 1000))) {
        snprintf(err, err_size, "ALICE_KERNEL_PROFILE_SKIP=%s is not understood: give a kernel count "
                 "(e.g. 2000) or last:R, R from 2 to 1000 (keep the last R repeats of the launch "
                 "sequence, e.g. last:5 for the 5 timed steps of --bench-steps 5)", text);
        return -1;
    }
    if (repeats) out->last_repeats = (int)v;
    else out->skip_kernels = (size_t)v;
    return 0;
}

size_t ks_find_period(const uint32_t *seq, size_t n, int repeats)
{
    if (repeats < 2) return 0;
    for (size_t p = n / (size_t)repeats; p >= 1; p--) {
        size_t from = n - (size_t)(repeats - 1) * p, j = n;
        while (j > from && seq[j - 1] == seq[j - 1 - p]) j--;   /* from the end: mismatches show early */
        if (j == from) return p;
    }
    return 0;
}

size_t ks_find_window(const uint32_t *seq, size_t n, int repeats, size_t *period, size_t *tail)
{
    *period = *tail = 0;
    if (repeats < 2) return 0;
    size_t min_period = n / (4 * ((size_t)repeats + 1));
    if (min_period < 1) min_period = 1;
    for (size_t t = 0; t <= KS_TAIL_SLACK && t < n; t++) {
        size_t p = ks_find_period(seq, n - t, repeats);
        int varied = 0;   /* one kernel over and over is a loop inside a step, not a step */
        for (size_t i = n - t - p; p && i < n - t && !varied; i++) varied = seq[i] != seq[n - t - 1];
        if (p >= min_period && varied) {
            *period = p;
            *tail = t;
            return n - t - (size_t)repeats * p;
        }
    }
    return 0;
}

/* ---- idle gaps ---- */

/* Where each bucket starts (it ends where the next starts). */
static const struct { uint64_t from_ns; const char *name; } gap_buckets[KS_GAP_BUCKET_COUNT] = {
    [KS_GAP_UNDER_5US] = {0, "< 5 us"},
    [KS_GAP_5_TO_20US] = {5000, "5-20 us"},
    [KS_GAP_20_TO_100US] = {20000, "20-100 us"},
    [KS_GAP_100US_TO_1MS] = {100000, "100 us-1 ms"},
    [KS_GAP_1MS_AND_UP] = {1000000, ">= 1 ms"},
};

KsGapBucket ks_gap_bucket(uint64_t gap_ns)
{
    int b = KS_GAP_BUCKET_COUNT - 1;
    while (b > 0 && gap_ns < gap_buckets[b].from_ns) b--;
    return (KsGapBucket)b;
}

const char *ks_gap_bucket_name(KsGapBucket bucket)
{
    return bucket < KS_GAP_BUCKET_COUNT ? gap_buckets[bucket].name : "?";
}

static KsActivityRef activity_ref(const KsRecord *r)
{
    return (KsActivityRef){.kind = r->kind, .copy_kind = r->copy_kind, .name_id = r->name_id};
}

static uint64_t gap_length(const KsGap *g) { return g->end_ns - g->start_ns; }

/* Counts the idle interval [start_ns, end_ns) and keeps it when among the KS_TOP_GAPS longest
 * so far. Gaps come in time order, so keeping an equal length behind the ones already held
 * lists equal gaps earliest first. */
static void add_gap(KsSummary *s, uint64_t start_ns, uint64_t end_ns, const KsRecord *ended,
                    const KsRecord *started)
{
    uint64_t len = end_ns - start_ns;
    KsGapBucket b = ks_gap_bucket(len);
    s->gaps++;
    s->idle_ns += len;
    s->gap_bucket_count[b]++;
    s->gap_bucket_ns[b] += len;
    if (b >= KS_GAP_LONG_FROM) s->long_gap_ns += len;

    size_t n = s->top_gap_count;
    if (n == KS_TOP_GAPS && len <= gap_length(&s->top_gaps[n - 1])) return;
    size_t i = n < KS_TOP_GAPS ? n : KS_TOP_GAPS - 1;   /* full: the shortest drops out */
    for (; i > 0 && gap_length(&s->top_gaps[i - 1]) < len; i--) s->top_gaps[i] = s->top_gaps[i - 1];
    s->top_gaps[i] = (KsGap){.start_ns = start_ns, .end_ns = end_ns, .ended = activity_ref(ended),
                             .started = activity_ref(started)};
    if (n < KS_TOP_GAPS) s->top_gap_count++;
}

/* ---- the summary ---- */

static int by_start(const void *a, const void *b)
{
    const KsRecord *x = *(const KsRecord *const *)a, *y = *(const KsRecord *const *)b;
    if (x->start_ns != y->start_ns) return x->start_ns < y->start_ns ? -1 : 1;
    if (x->correlation_id != y->correlation_id) return x->correlation_id < y->correlation_id ? -1 : 1;
    return 0;
}

static int by_total(const void *a, const void *b)
{
    const KsGroup *x = a, *y = b;
    if (x->total_ns != y->total_ns) return x->total_ns > y->total_ns ? -1 : 1;
    if (x->calls != y->calls) return x->calls > y->calls ? -1 : 1;
    return x->name_id < y->name_id ? -1 : x->name_id > y->name_id;
}

/* Decides how many kernels (in start order) the window leaves out. */
static int window_skip(const KsRecord *const *kernels, size_t n, const KsWindow *w, KsSummary *s,
                       size_t *skip)
{
    *skip = w->skip_kernels < n ? w->skip_kernels : n;
    if (w->last_repeats <= 0) {
        snprintf(s->window_note, sizeof s->window_note, "%s", *skip ? "first kernels skipped (ALICE_KERNEL_PROFILE_SKIP)" : "every kernel");
        return 0;
    }
    uint32_t *seq = malloc((n ? n : 1) * sizeof(uint32_t));
    if (!seq) return -1;
    for (size_t i = 0; i < n; i++) seq[i] = kernels[i]->name_id;
    size_t p, tail;
    *skip = ks_find_window(seq, n, w->last_repeats, &p, &tail);
    free(seq);
    s->period = p;
    s->tail = tail;
    s->repeats = w->last_repeats;
    if (p) {
        int n_note = snprintf(s->window_note, sizeof s->window_note,
                              "the last %d repeats of a %zu-kernel launch sequence", w->last_repeats, p);
        if (tail && n_note > 0 && (size_t)n_note < sizeof s->window_note)
            snprintf(s->window_note + n_note, sizeof s->window_note - (size_t)n_note,
                     " and the %zu launches after them", tail);
    } else {
        *skip = 0;
        snprintf(s->window_note, sizeof s->window_note,
                 "every kernel (no %d repeats of a launch sequence found at the end)", w->last_repeats);
    }
    return 0;
}

int ks_summarize(const KsCollector *c, const KsWindow *window, KsSummary *s)
{
    memset(s, 0, sizeof *s);
    s->lost = c->lost;
    const KsRecord **kernels = malloc((c->count ? c->count : 1) * sizeof(KsRecord *));
    const KsRecord **spans = malloc((c->count ? c->count : 1) * sizeof(KsRecord *));
    s->groups = calloc(c->name_count ? c->name_count : 1, sizeof(KsGroup));
    if (!kernels || !spans || !s->groups) goto oom;

    size_t nk = 0;
    for (size_t i = 0; i < c->count; i++) {
        const KsRecord *r = &c->records[i];
        if (r->end_ns < r->start_ns) { s->invalid++; continue; }
        if (r->kind == KS_KIND_KERNEL) kernels[nk++] = r;
    }
    qsort(kernels, nk, sizeof *kernels, by_start);
    s->kernels_seen = nk;
    size_t skip;
    if (window_skip(kernels, nk, window, s, &skip) != 0) goto oom;
    s->kernels_skipped = skip;
    /* Copies and memsets count from the first kernel kept on (all of them with no skip). */
    uint64_t from_ns = skip == 0 ? 0 : skip < nk ? kernels[skip]->start_ns : UINT64_MAX;

    size_t ns = 0;
    for (size_t i = skip; i < nk; i++) {
        const KsRecord *r = kernels[i];
        uint64_t d = r->end_ns - r->start_ns;
        s->kernels++;
        s->kernel_ns += d;
        s->groups[r->name_id].name_id = r->name_id;
        s->groups[r->name_id].calls++;
        s->groups[r->name_id].total_ns += d;
        spans[ns++] = r;
    }
    for (size_t i = 0; i < c->count; i++) {
        const KsRecord *r = &c->records[i];
        if (r->kind == KS_KIND_KERNEL || r->end_ns < r->start_ns || r->start_ns < from_ns) continue;
        uint64_t d = r->end_ns - r->start_ns;
        if (r->kind == KS_KIND_MEMCPY) {
            s->copies[r->copy_kind]++;
            s->copy_ns[r->copy_kind] += d;
            s->copy_bytes[r->copy_kind] += r->bytes;
        } else {
            s->memsets++;
            s->memset_ns += d;
            s->memset_bytes += r->bytes;
        }
        spans[ns++] = r;
    }
    /* Busy time: the union of the intervals (kernels on several streams overlap); idle time:
     * the gaps between its intervals. run_last is the activity that ends the current busy
     * interval (an earlier, longer one may outlast those started after it). */
    qsort(spans, ns, sizeof *spans, by_start);
    uint64_t run_start = 0, run_end = 0;
    const KsRecord *run_last = NULL;
    for (size_t i = 0; i < ns; i++) {
        const KsRecord *r = spans[i];
        if (i == 0) {
            s->first_start_ns = r->start_ns;
            run_start = r->start_ns;
            run_end = r->end_ns;
            run_last = r;
        } else if (r->start_ns > run_end) {
            s->busy_ns += run_end - run_start;
            add_gap(s, run_end, r->start_ns, run_last, r);
            run_start = r->start_ns;
            run_end = r->end_ns;
            run_last = r;
        } else if (r->end_ns >= run_end) {
            run_end = r->end_ns;
            run_last = r;
        }
        if (r->end_ns > s->last_end_ns) s->last_end_ns = r->end_ns;
    }
    if (ns) s->busy_ns += run_end - run_start;

    /* Groups: only names with calls in the window, longest total first. */
    size_t ng = 0;
    for (size_t id = 0; id < c->name_count; id++)
        if (s->groups[id].calls) s->groups[ng++] = s->groups[id];
    s->group_count = ng;
    qsort(s->groups, ng, sizeof *s->groups, by_total);
    free(kernels);
    free(spans);
    return 0;
oom:
    free(kernels);
    free(spans);
    ks_summary_free(s);
    return -1;
}

void ks_summary_free(KsSummary *s)
{
    free(s->groups);
    s->groups = NULL;
    s->group_count = 0;
}

/* ---- names ---- */

/* The '(' matching the ')' at close, or -1. */
static long matching_open(const char *name, long close)
{
    int depth = 0;
    for (long i = close; i >= 0; i--) {
        if (name[i] == ')') depth++;
        else if (name[i] == '(' && --depth == 0) return i;
    }
    return -1;
}

size_t ks_short_name(const char *name, char *out, size_t out_size, size_t max_chars)
{
    if (out_size == 0) return 0;
    long begin = 0, end = (long)strlen(name);
    while (end > 0 && name[end - 1] == ' ') end--;
    /* The parameter list: a demangled function name ends with it (template arguments may
     * hold parentheses too, e.g. lambdas' enclosing functions, so match them). */
    if (end > 0 && name[end - 1] == ')') {
        long open = matching_open(name, end - 1);
        if (open > 0) end = open;
    }
    /* The return type: everything up to the first space outside <>, () and {} (kernels
     * return void; "(anonymous namespace)" has its space inside parentheses). */
    int depth = 0;
    for (long i = 0; i < end; i++) {
        char ch = name[i];
        if (ch == '<' || ch == '(' || ch == '{') depth++;
        else if ((ch == '>' || ch == ')' || ch == '}') && depth > 0) depth--;
        else if (ch == ' ' && depth == 0) { begin = i + 1; break; }
    }
    size_t len = (size_t)(end - begin), room = out_size - 1;
    size_t limit = max_chars < room ? max_chars : room, n;
    if (len <= limit) {
        memcpy(out, name + begin, len);
        n = len;
    } else if (limit >= 3) {   /* cut: the base name and the first template arguments stay */
        memcpy(out, name + begin, limit - 3);
        memcpy(out + limit - 3, "...", 3);
        n = limit;
    } else {
        memcpy(out, name + begin, limit);
        n = limit;
    }
    out[n] = '\0';
    return n;
}

/* ---- the report ---- */

static double ms(uint64_t ns) { return (double)ns / 1e6; }
static double pct(uint64_t part, uint64_t whole) { return whole ? 100.0 * (double)part / (double)whole : 0.0; }

/* A kernel's name as the table shows it (demangled when given, shortened). */
static void kernel_name(const KsCollector *c, const char *const *display_names, uint32_t name_id,
                        char *out, size_t out_size)
{
    const char *full = display_names && display_names[name_id] ? display_names[name_id]
                                                               : ks_collector_name(c, name_id);
    ks_short_name(full, out, out_size, KS_NAME_CHARS);
}

/* A kernel by its name; a memcpy or memset in brackets (a kernel's name never starts with one). */
static void activity_name(const KsActivityRef *a, const KsCollector *c, const char *const *display_names,
                          char *out, size_t out_size)
{
    if (a->kind == KS_KIND_MEMCPY) snprintf(out, out_size, "[memcpy %s]", ks_copy_kind_name((KsCopyKind)a->copy_kind));
    else if (a->kind == KS_KIND_MEMSET) snprintf(out, out_size, "[memset]");
    else kernel_name(c, display_names, a->name_id, out, out_size);
}

/* Where the idle time is: total, by gap length, the longest gaps. No line begins with a rank
 * number (tests/gpu/run.sh takes the kernel table's first rows by that). */
static void write_idle(const KsSummary *s, const KsCollector *c, const char *const *display_names, FILE *out)
{
    fprintf(out, "\nidle              %.3f ms in %zu gaps between busy intervals", ms(s->idle_ns), s->gaps);
    if (s->period && s->repeats > 0) fprintf(out, ", %.3f ms per repeat", ms(s->idle_ns) / s->repeats);
    fprintf(out, "; %.3f ms in gaps of %.0f us and more\n", ms(s->long_gap_ns),
            (double)gap_buckets[KS_GAP_LONG_FROM].from_ns / 1e3);
    fprintf(out, "\n%-12s %8s %11s %7s\n", "gap length", "gaps", "idle ms", "% idle");
    for (int b = 0; b < KS_GAP_BUCKET_COUNT; b++)
        fprintf(out, "%-12s %8zu %11.3f %7.1f\n", ks_gap_bucket_name((KsGapBucket)b), s->gap_bucket_count[b],
                ms(s->gap_bucket_ns[b]), pct(s->gap_bucket_ns[b], s->idle_ns));
    if (!s->top_gap_count) return;
    fprintf(out, "\nlongest gaps (at: ms from the window's start; [memcpy ...], [memset]: not kernels)\n");
    fprintf(out, "%10s %10s  %s\n", "gap us", "at ms", "ended before the gap -> started after it");
    char ended[KS_NAME_CHARS + 8], started[KS_NAME_CHARS + 8];
    for (size_t i = 0; i < s->top_gap_count; i++) {
        const KsGap *g = &s->top_gaps[i];
        activity_name(&g->ended, c, display_names, ended, sizeof ended);
        activity_name(&g->started, c, display_names, started, sizeof started);
        fprintf(out, "%10.1f %10.3f  %s -> %s\n", (double)gap_length(g) / 1e3, ms(g->start_ns - s->first_start_ns),
                ended, started);
    }
}

void ks_write_report(const KsSummary *s, const KsCollector *c, const char *const *display_names,
                     size_t top_rows, FILE *out)
{
    uint64_t span = s->last_end_ns > s->first_start_ns ? s->last_end_ns - s->first_start_ns : 0;
    fprintf(out, "== alice kernel profile (CUPTI)\n");
    fprintf(out, "window            %s\n", s->window_note);
    fprintf(out, "kernels           %zu in the window (%zu recorded, first %zu skipped)\n",
            s->kernels, s->kernels_seen, s->kernels_skipped);
    fprintf(out, "GPU kernel time   %.3f ms (sum of kernel durations)\n", ms(s->kernel_ns));
    fprintf(out, "GPU busy time     %.3f ms (union of kernel, memcpy and memset intervals)\n", ms(s->busy_ns));
    fprintf(out, "span              %.3f ms (first start to last end)\n", ms(span));
    fprintf(out, "busy of span      %.1f %%\n", pct(s->busy_ns, span));
    for (int k = 0; k < KS_COPY_KIND_COUNT; k++)
        if (s->copies[k])
            fprintf(out, "memcpy %-10s %zu, %.3f ms, %.1f MB\n", ks_copy_kind_name((KsCopyKind)k),
                    s->copies[k], ms(s->copy_ns[k]), (double)s->copy_bytes[k] / 1e6);
    fprintf(out, "memset            %zu, %.3f ms, %.1f MB\n", s->memsets, ms(s->memset_ns), (double)s->memset_bytes / 1e6);
    if (s->invalid || s->lost || s->dropped)
        fprintf(out, "records missing   %zu ending before their start, %zu lost (no memory), %llu dropped by CUPTI\n",
                s->invalid, s->lost, (unsigned long long)s->dropped);
    fprintf(out, "\n%4s %8s %11s %10s %6s %6s  %s\n", "rank", "calls", "total ms", "mean us", "% kern", "cum %", "kernel");
    double cumulative = 0.0;
    size_t rows = s->group_count < top_rows ? s->group_count : top_rows;
    char name[KS_NAME_CHARS + 8];
    for (size_t i = 0; i < rows; i++) {
        const KsGroup *g = &s->groups[i];
        kernel_name(c, display_names, g->name_id, name, sizeof name);
        double share = pct(g->total_ns, s->kernel_ns);
        cumulative += share;
        fprintf(out, "%4zu %8zu %11.3f %10.2f %6.1f %6.1f  %s\n", i + 1, g->calls, ms(g->total_ns),
                (double)g->total_ns / 1e3 / (double)g->calls, share, cumulative, name);
    }
    if (s->group_count > rows) {
        size_t calls = 0;
        uint64_t total = 0;
        for (size_t i = rows; i < s->group_count; i++) { calls += s->groups[i].calls; total += s->groups[i].total_ns; }
        fprintf(out, "%4s %8zu %11.3f %10.2f %6.1f %6.1f  other (%zu kernel names)\n", "-", calls, ms(total),
                (double)total / 1e3 / (double)calls, pct(total, s->kernel_ns), 100.0, s->group_count - rows);
    }
    write_idle(s, c, display_names, out);
    fprintf(out, "\nkernel_profile kernels=%zu kernel_ms=%.3f busy_ms=%.3f span_ms=%.3f busy_pct=%.1f names=%zu skipped=%zu"
            " idle_ms=%.3f gaps_over_20us_ms=%.3f\n",
            s->kernels, ms(s->kernel_ns), ms(s->busy_ns), ms(span), pct(s->busy_ns, span), s->group_count,
            s->kernels_skipped, ms(s->idle_ns), ms(s->long_gap_ns));
}

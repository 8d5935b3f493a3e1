/* The kernel profiler's aggregation (src/perf/kernel_summary.c) on hand-made records with
 * hand-computed answers: grouping by name, busy time as the union of overlapping intervals,
 * the skip window (count, start/correlation order, last:R by the launch sequence's period),
 * the demangled-name shortening on c++filt output of real mangled names, the idle gaps
 * between busy intervals (merged intervals, the activity on either side, every histogram
 * boundary, the longest 12 kept in order), and the report. */
#include <stdio.h>
#include <string.h>

#include "perf/kernel_summary.h"
#include "test.h"

enum { US = 1000 };   /* records in microseconds, CUPTI time stamps in ns */

/* Kernels A [0,10] and B [5,20] overlap, A again [30,40], a memcpy HtoD [25,28] in the gap,
 * a memset [38,45] overlapping the second A, C [50,51].
 * Kernel time 10+15+10+1 = 36; busy [0,20]+[25,28]+[30,45]+[50,51] = 20+3+15+1 = 39;
 * span 0..51. */
static KsCollector *example(void)
{
    KsCollector *c = ks_collector_new();
    ks_collector_add_kernel(c, "A", 0 * US, 10 * US, 1);
    ks_collector_add_kernel(c, "B", 5 * US, 20 * US, 2);
    ks_collector_add_copy(c, KS_COPY_HTOD, 25 * US, 28 * US, 100, 3);
    ks_collector_add_kernel(c, "A", 30 * US, 40 * US, 4);
    ks_collector_add_memset(c, 38 * US, 45 * US, 8, 5);
    ks_collector_add_kernel(c, "C", 50 * US, 51 * US, 6);
    return c;
}

static int test_totals_and_groups(void)
{
    KsCollector *c = example();
    TEST_CHECK(ks_collector_name_count(c) == 3, "equal names interned once: %zu names", ks_collector_name_count(c));
    KsWindow w = {0, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.kernels == 4 && s.kernels_seen == 4 && s.kernels_skipped == 0, "kernels %zu", s.kernels);
    TEST_CHECK(s.kernel_ns == 36 * US, "kernel time %llu", (unsigned long long)s.kernel_ns);
    TEST_CHECK(s.busy_ns == 39 * US, "busy (union) %llu", (unsigned long long)s.busy_ns);
    TEST_CHECK(s.first_start_ns == 0 && s.last_end_ns == 51 * US, "span");
    TEST_CHECK(s.copies[KS_COPY_HTOD] == 1 && s.copy_ns[KS_COPY_HTOD] == 3 * US && s.copy_bytes[KS_COPY_HTOD] == 100, "memcpy HtoD");
    TEST_CHECK(s.copies[KS_COPY_DTOH] == 0, "no DtoH");
    TEST_CHECK(s.memsets == 1 && s.memset_ns == 7 * US && s.memset_bytes == 8, "memset");
    TEST_CHECK(s.group_count == 3, "groups %zu", s.group_count);
    const char *want[3] = {"A", "B", "C"};
    size_t calls[3] = {2, 1, 1};
    uint64_t total[3] = {20 * US, 15 * US, 1 * US};
    for (int i = 0; i < 3 && i < (int)s.group_count; i++) {
        TEST_CHECK(strcmp(ks_collector_name(c, s.groups[i].name_id), want[i]) == 0, "group %d is %s", i, want[i]);
        TEST_CHECK(s.groups[i].calls == calls[i] && s.groups[i].total_ns == total[i], "group %d: %zu calls", i, s.groups[i].calls);
    }
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

/* Skipping the first 2 kernels (A at 0, B at 5) keeps A [30,40] and C [50,51], and of the
 * others only what starts at or after 30: the memset [38,45]. Kernel time 11, busy
 * [30,45]+[50,51] = 16, span 30..51 = 21. */
static int test_skip_window(void)
{
    KsCollector *c = example();
    KsWindow w = {2, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.kernels == 2 && s.kernels_skipped == 2, "kernels %zu skipped %zu", s.kernels, s.kernels_skipped);
    TEST_CHECK(s.kernel_ns == 11 * US, "kernel time %llu", (unsigned long long)s.kernel_ns);
    TEST_CHECK(s.busy_ns == 16 * US, "busy %llu", (unsigned long long)s.busy_ns);
    TEST_CHECK(s.first_start_ns == 30 * US && s.last_end_ns == 51 * US, "span");
    TEST_CHECK(s.copies[KS_COPY_HTOD] == 0 && s.memsets == 1, "the memcpy before the window is out, the memset in");
    TEST_CHECK(s.group_count == 2 && s.groups[0].calls == 1 && s.groups[0].total_ns == 10 * US, "A once");
    ks_summary_free(&s);
    /* A skip past every kernel leaves nothing. */
    w.skip_kernels = 99;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.kernels == 0 && s.kernels_skipped == 4 && s.busy_ns == 0 && s.group_count == 0, "empty window");
    ks_summary_free(&s);
    ks_collector_free(c);

    /* Equal start stamps: the launch order (correlation id) decides which is skipped. */
    c = ks_collector_new();
    ks_collector_add_kernel(c, "late", 100, 150, 7);
    ks_collector_add_kernel(c, "early", 100, 120, 6);
    w = (KsWindow){1, 0};
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.group_count == 1 && strcmp(ks_collector_name(c, s.groups[0].name_id), "late") == 0,
               "the lower correlation id is the first launch");
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

/* A benchmark: 3 set-up launches, a warm-up step unlike the others, then 5 identical steps of
 * 8 launches ending with the optimizer's 5 identical kernels. n = 3 + 9 + 40 = 52. */
static size_t bench_sequence(uint32_t *seq)
{
    static const uint32_t setup[] = {7, 7, 5}, warm[] = {1, 2, 9, 3, 4, 4, 4, 4, 4},
                          step[] = {1, 2, 3, 4, 4, 4, 4, 4};
    size_t n = 0;
    for (size_t i = 0; i < 3; i++) seq[n++] = setup[i];
    for (size_t i = 0; i < 9; i++) seq[n++] = warm[i];
    for (int r = 0; r < 5; r++)
        for (size_t i = 0; i < 8; i++) seq[n++] = step[i];
    return n;
}

static int test_period_window(void)
{
    uint32_t seq[64];
    size_t n = bench_sequence(seq);
    TEST_CHECK(n == 52, "n %zu", n);
    TEST_CHECK(ks_find_period(seq, n, 5) == 8, "period of 5 repeats: %zu", ks_find_period(seq, n, 5));
    TEST_CHECK(ks_find_period(seq, n, 3) == 8, "period of 3 repeats: %zu", ks_find_period(seq, n, 3));
    TEST_CHECK(ks_find_period(seq, n, 6) == 0, "no 6 repeats: %zu", ks_find_period(seq, n, 6));
    TEST_CHECK(ks_find_period(seq, 3, 5) == 0, "too short");
    size_t period, tail;
    TEST_CHECK(ks_find_window(seq, n, 5, &period, &tail) == 12 && period == 8 && tail == 0, "window: period %zu tail %zu", period, tail);
    /* Launches after the steps (teardown): 3 of them, one repeated; the window ends before. */
    uint32_t more[64];
    memcpy(more, seq, n * sizeof *seq);
    more[n] = 6; more[n + 1] = 6; more[n + 2] = 5;
    TEST_CHECK(ks_find_period(more, n + 3, 5) == 0, "no period with the teardown");
    TEST_CHECK(ks_find_window(more, n + 3, 5, &period, &tail) == 12 && period == 8 && tail == 3,
               "window with a tail: period %zu tail %zu", period, tail);
    /* Only one kernel repeated at the end (no steps): no window, not a 1-kernel "step". */
    uint32_t flat[480];
    for (uint32_t i = 0; i < 480; i++) flat[i] = i < 300 ? 100 + i : 4;
    TEST_CHECK(ks_find_period(flat, 480, 5) == 36, "a repeated kernel is periodic: %zu", ks_find_period(flat, 480, 5));
    TEST_CHECK(ks_find_window(flat, 480, 5, &period, &tail) == 0 && period == 0, "but not a step: %zu", period);

    /* The same sequence as kernels 10 us apart, 2 us each: last:5 keeps the 40 of the steps. */
    KsCollector *c = ks_collector_new();
    char name[16];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "k%u", seq[i]);
        ks_collector_add_kernel(c, name, i * 10 * US, (i * 10 + 2) * US, (uint32_t)i);
    }
    KsWindow w;
    char err[256];
    TEST_CHECK(ks_parse_window("last:5", &w, err, sizeof err) == 0 && w.last_repeats == 5, "parse last:5");
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.period == 8 && s.kernels_skipped == 12 && s.kernels == 40, "period %zu skipped %zu", s.period, s.kernels_skipped);
    TEST_CHECK(s.first_start_ns == 120 * US && s.last_end_ns == 512 * US, "window from kernel 12 to the end");
    TEST_CHECK(s.busy_ns == 80 * US, "busy %llu", (unsigned long long)s.busy_ns);
    TEST_CHECK(strstr(s.window_note, "8-kernel launch sequence") != NULL, "note: %s", s.window_note);
    /* 40 kernels 10 us apart, 2 us each: 39 gaps of 8 us, 312 us = span 392 - busy 80. */
    TEST_CHECK(s.gaps == 39 && s.idle_ns == 312 * US && s.gap_bucket_count[KS_GAP_5_TO_20US] == 39 &&
               s.long_gap_ns == 0, "gaps %zu idle %llu", s.gaps, (unsigned long long)s.idle_ns);
    {   /* per repeat: 312 / 5 = 62.4 us */
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        ks_write_report(&s, c, NULL, 2, f);
        fclose(f);
        TEST_CHECK(strstr(text, "\nidle              0.312 ms in 39 gaps between busy intervals, 0.062 ms per repeat;") != NULL,
                   "idle per repeat:\n%s", text);
        free(text);
    }
    /* k4 runs 5 times a step: 25 calls, 50 us, the top row. */
    TEST_CHECK(s.group_count == 4 && strcmp(ks_collector_name(c, s.groups[0].name_id), "k4") == 0 &&
               s.groups[0].calls == 25, "k4 first");
    ks_summary_free(&s);
    /* No 40 repeats: every kernel, and the note says why. */
    w.last_repeats = 40;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.kernels_skipped == 0 && s.kernels == 52 && strstr(s.window_note, "no 40 repeats"), "fallback: %s", s.window_note);
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

static int test_parse_window(void)
{
    KsWindow w;
    char err[256];
    TEST_CHECK(ks_parse_window(NULL, &w, err, sizeof err) == 0 && w.skip_kernels == 0 && w.last_repeats == 0, "unset");
    TEST_CHECK(ks_parse_window("", &w, err, sizeof err) == 0 && w.skip_kernels == 0, "empty");
    TEST_CHECK(ks_parse_window("2500", &w, err, sizeof err) == 0 && w.skip_kernels == 2500 && w.last_repeats == 0, "count");
    const char *bad[] = {"abc", "12x", "-3", "last:1", "last:", "last:x", " 5"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = '\0';
        TEST_CHECK(ks_parse_window(bad[i], &w, err, sizeof err) == -1, "'%s' refused", bad[i]);
        TEST_CHECK(strstr(err, "ALICE_KERNEL_PROFILE_SKIP") && strstr(err, "last:R"), "'%s': message names the variable and the forms: %s", bad[i], err);
    }
    return 0;
}

/* Demangled names from c++filt of real mangled names (shown beside each). */
static int test_short_names(void)
{
    static const struct { const char *mangled, *demangled, *shown; } cases[] = {
        {"_ZN5alice11gemm_kernelILi128ELi64EfEEvPKT1_PS1_i",
         "void alice::gemm_kernel<128, 64, float>(float const*, float*, int)",
         "alice::gemm_kernel<128, 64, float>"},
        {"_ZN2at6native29vectorized_elementwise_kernelILi4ENS0_11FillFunctorIfEESt5arrayIPcLm1EEEEviT0_T1_",
         "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)",
         "at::native::vectorized_elementwise_kernel<4, at::native::FillFuncto..."},
        {"_Z17layer_norm_kernelP6__halfPKS_i",
         "layer_norm_kernel(__half*, __half const*, int)",
         "layer_norm_kernel"},
        {"_Z18elementwise_kernelILi128EZN3ops4fillEPfiEUliE_EviT0_",
         "void elementwise_kernel<128, ops::fill(float*, int)::{lambda(int)#1}>(int, ops::fill(float*, int)::{lambda(int)#1})",
         "elementwise_kernel<128, ops::fill(float*, int)::{lambda(int)#1}>"},
        {"(extern C, not mangled)",
         "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
         "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgro..."},
        {"_ZN12_GLOBAL__N_114softmax_kernelIfEEvPT_i",
         "void (anonymous namespace)::softmax_kernel<float>(float*, int)",
         "(anonymous namespace)::softmax_kernel<float>"},
    };
    char out[KS_NAME_CHARS + 8];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = ks_short_name(cases[i].demangled, out, sizeof out, KS_NAME_CHARS);
        TEST_CHECK(strcmp(out, cases[i].shown) == 0, "%s: got '%s', want '%s'", cases[i].mangled, out, cases[i].shown);
        TEST_CHECK(n == strlen(out) && n <= KS_NAME_CHARS, "length %zu", n);
    }
    /* A small output buffer cuts without overflowing. */
    char small[8];
    ks_short_name(cases[0].demangled, small, sizeof small, KS_NAME_CHARS);
    TEST_CHECK(strcmp(small, "alic...") == 0, "small buffer: '%s'", small);
    return 0;
}

/* The buckets' boundaries: a gap of exactly a boundary's length starts the next bucket. */
static int test_gap_buckets(void)
{
    static const struct { uint64_t ns; KsGapBucket bucket; } cases[] = {
        {1, KS_GAP_UNDER_5US}, {4999, KS_GAP_UNDER_5US}, {5000, KS_GAP_5_TO_20US},
        {19999, KS_GAP_5_TO_20US}, {20000, KS_GAP_20_TO_100US}, {99999, KS_GAP_20_TO_100US},
        {100000, KS_GAP_100US_TO_1MS}, {999999, KS_GAP_100US_TO_1MS}, {1000000, KS_GAP_1MS_AND_UP},
        {5000000000ull, KS_GAP_1MS_AND_UP}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        TEST_CHECK(ks_gap_bucket(cases[i].ns) == cases[i].bucket, "%llu ns in bucket %d, not %d",
                   (unsigned long long)cases[i].ns, (int)ks_gap_bucket(cases[i].ns), (int)cases[i].bucket);
    TEST_CHECK(strcmp(ks_gap_bucket_name(KS_GAP_UNDER_5US), "< 5 us") == 0 &&
               strcmp(ks_gap_bucket_name(KS_GAP_100US_TO_1MS), "100 us-1 ms") == 0 &&
               strcmp(ks_gap_bucket_name(KS_GAP_1MS_AND_UP), ">= 1 ms") == 0, "bucket names");

    /* The same lengths as gaps between 1 us kernels "k": 4999 | 5000 19999 | 20000 99999 |
     * 100000 999999 | 1000000 ns. Per bucket: 1 gap 4999; 2 gaps 24999; 2 gaps 119999;
     * 2 gaps 1099999; 1 gap 1000000. Idle 2249996 ns, of it 2219998 in gaps of 20 us and up. */
    static const uint64_t gap_ns[] = {4999, 5000, 19999, 20000, 99999, 100000, 999999, 1000000};
    enum { NG = sizeof gap_ns / sizeof *gap_ns };
    KsCollector *c = ks_collector_new();
    uint64_t t = 0;
    for (int i = 0; i <= NG; i++) {
        ks_collector_add_kernel(c, "k", t, t + US, (uint32_t)i);
        t += US + (i < NG ? gap_ns[i] : 0);
    }
    KsWindow w = {0, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    static const size_t want_count[KS_GAP_BUCKET_COUNT] = {1, 2, 2, 2, 1};
    static const uint64_t want_ns[KS_GAP_BUCKET_COUNT] = {4999, 24999, 119999, 1099999, 1000000};
    for (int b = 0; b < KS_GAP_BUCKET_COUNT; b++)
        TEST_CHECK(s.gap_bucket_count[b] == want_count[b] && s.gap_bucket_ns[b] == want_ns[b],
                   "bucket %s: %zu gaps, %llu ns", ks_gap_bucket_name((KsGapBucket)b), s.gap_bucket_count[b],
                   (unsigned long long)s.gap_bucket_ns[b]);
    TEST_CHECK(s.gaps == NG && s.idle_ns == 2249996 && s.long_gap_ns == 2219998, "gaps %zu idle %llu long %llu",
               s.gaps, (unsigned long long)s.idle_ns, (unsigned long long)s.long_gap_ns);
    TEST_CHECK(s.idle_ns == s.last_end_ns - s.first_start_ns - s.busy_ns, "idle = span - busy");
    /* All 8 listed, longest first: 1000000 (the last gap, from the 8th kernel's end: 8 us of
     * kernels + the 7 gaps before it, 1249996 ns), then 999999, 100000, ... */
    TEST_CHECK(s.top_gap_count == NG, "top gaps %zu", s.top_gap_count);
    for (int i = 0; i < NG && i < (int)s.top_gap_count; i++)
        TEST_CHECK(s.top_gaps[i].end_ns - s.top_gaps[i].start_ns == gap_ns[NG - 1 - i], "top gap %d", i);
    TEST_CHECK(s.top_gaps[0].start_ns == 8 * US + 1249996, "longest gap at %llu", (unsigned long long)s.top_gaps[0].start_ns);
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

/* Intervals merge before gaps are taken, and each gap names what ended before it and what
 * started after it: X [0,100] holds Y [10,20] (Y starts last but X ends the busy interval);
 * Z [100,130] touches X (no gap); a DtoH memcpy [150,152] between Z and W [160,170]; a memset
 * [170,175] touching W, then V [200,201] on another stream with U [200,210] launched before it
 * (same start: the lower correlation id starts the interval).
 * Busy [0,130] [150,152] [160,175] [200,210]; gaps: 20 (Z -> memcpy), 8 (memcpy -> W),
 * 25 (memset -> U). Idle 53 = span 210 - busy 157. */
static int test_gaps_between_activities(void)
{
    KsCollector *c = ks_collector_new();
    ks_collector_add_kernel(c, "X", 0 * US, 100 * US, 1);
    ks_collector_add_kernel(c, "Y", 10 * US, 20 * US, 2);
    ks_collector_add_kernel(c, "Z", 100 * US, 130 * US, 3);
    ks_collector_add_copy(c, KS_COPY_DTOH, 150 * US, 152 * US, 4, 4);
    ks_collector_add_kernel(c, "W", 160 * US, 170 * US, 5);
    ks_collector_add_memset(c, 170 * US, 175 * US, 64, 6);
    ks_collector_add_kernel(c, "V", 200 * US, 201 * US, 8);
    ks_collector_add_kernel(c, "U", 200 * US, 210 * US, 7);
    KsWindow w = {0, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.busy_ns == 157 * US && s.idle_ns == 53 * US && s.gaps == 3, "busy %llu idle %llu gaps %zu",
               (unsigned long long)s.busy_ns, (unsigned long long)s.idle_ns, s.gaps);
    TEST_CHECK(s.gap_bucket_count[KS_GAP_5_TO_20US] == 1 && s.gap_bucket_ns[KS_GAP_5_TO_20US] == 8 * US &&
               s.gap_bucket_count[KS_GAP_20_TO_100US] == 2 && s.gap_bucket_ns[KS_GAP_20_TO_100US] == 45 * US,
               "buckets");
    TEST_CHECK(s.long_gap_ns == 45 * US, "20 us and up: %llu", (unsigned long long)s.long_gap_ns);
    TEST_CHECK(s.top_gap_count == 3, "top gaps %zu", s.top_gap_count);
    if (s.top_gap_count == 3) {
        const KsGap *g = s.top_gaps;   /* 25 (memset -> U), 20 (Z -> memcpy), 8 (memcpy -> W) */
        TEST_CHECK(g[0].start_ns == 175 * US && g[0].end_ns == 200 * US, "longest: memset to U");
        TEST_CHECK(g[0].ended.kind == KS_KIND_MEMSET, "ended by the memset");
        TEST_CHECK(g[0].started.kind == KS_KIND_KERNEL && strcmp(ks_collector_name(c, g[0].started.name_id), "U") == 0,
                   "started by U (launched before V)");
        TEST_CHECK(g[1].start_ns == 130 * US && g[1].end_ns == 150 * US, "second: Z to the memcpy");
        TEST_CHECK(g[1].ended.kind == KS_KIND_KERNEL && strcmp(ks_collector_name(c, g[1].ended.name_id), "Z") == 0,
                   "ended by Z (X and Z merged)");
        TEST_CHECK(g[1].started.kind == KS_KIND_MEMCPY && g[1].started.copy_kind == KS_COPY_DTOH, "started by the DtoH copy");
        TEST_CHECK(g[2].start_ns == 152 * US && g[2].end_ns == 160 * US && g[2].ended.kind == KS_KIND_MEMCPY &&
                   strcmp(ks_collector_name(c, g[2].started.name_id), "W") == 0, "third: memcpy to W");
    }
    ks_summary_free(&s);
    ks_collector_free(c);

    /* Two kernels ending together: the later start (the later launch) is named. */
    c = ks_collector_new();
    ks_collector_add_kernel(c, "P", 0 * US, 10 * US, 1);
    ks_collector_add_kernel(c, "Q", 5 * US, 10 * US, 2);
    ks_collector_add_kernel(c, "R", 12 * US, 13 * US, 3);
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.top_gap_count == 1 && strcmp(ks_collector_name(c, s.top_gaps[0].ended.name_id), "Q") == 0,
               "equal ends: the later start ended the interval");
    ks_summary_free(&s);
    ks_collector_free(c);

    /* Without Z, X still ends the first interval though Y started after it: the gap
     * [100,150] is X -> memcpy. */
    c = ks_collector_new();
    ks_collector_add_kernel(c, "X", 0 * US, 100 * US, 1);
    ks_collector_add_kernel(c, "Y", 10 * US, 20 * US, 2);
    ks_collector_add_copy(c, KS_COPY_DTOH, 150 * US, 152 * US, 4, 3);
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.top_gap_count == 1 && s.top_gaps[0].start_ns == 100 * US &&
               strcmp(ks_collector_name(c, s.top_gaps[0].ended.name_id), "X") == 0, "the longer kernel ends the interval");
    ks_summary_free(&s);
    ks_collector_free(c);

    /* One kernel, or none: no gaps. */
    c = ks_collector_new();
    TEST_CHECK(ks_summarize(c, &w, &s) == 0 && s.gaps == 0 && s.idle_ns == 0 && s.top_gap_count == 0, "no records");
    ks_summary_free(&s);
    ks_collector_add_kernel(c, "only", 5, 9, 1);
    TEST_CHECK(ks_summarize(c, &w, &s) == 0 && s.gaps == 0 && s.idle_ns == 0 && s.top_gap_count == 0, "one kernel");
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

/* 20 gaps of lengths 7 i mod 20 + 1 us (i = 0..19: each of 1..20 once, out of order): the 12
 * kept are 20 down to 9 us. Equal lengths: the earlier gap first, and a later equal one does
 * not displace it. */
static int test_longest_gaps(void)
{
    KsCollector *c = ks_collector_new();
    uint64_t t = 0, start_of[21] = {0};
    for (uint32_t i = 0; i <= 20; i++) {
        ks_collector_add_kernel(c, "k", t, t + US, i);
        t += US;
        if (i < 20) {
            uint64_t len = (7 * i % 20 + 1) * US;
            start_of[len / US] = t;
            t += len;
        }
    }
    KsWindow w = {0, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    TEST_CHECK(s.gaps == 20 && s.idle_ns == 210 * US && s.top_gap_count == KS_TOP_GAPS, "gaps %zu idle %llu top %zu",
               s.gaps, (unsigned long long)s.idle_ns, s.top_gap_count);
    for (int i = 0; i < KS_TOP_GAPS && i < (int)s.top_gap_count; i++) {
        uint64_t len = (uint64_t)(20 - i) * US;
        TEST_CHECK(s.top_gaps[i].end_ns - s.top_gaps[i].start_ns == len && s.top_gaps[i].start_ns == start_of[20 - i],
                   "gap %d: %llu ns at %llu", i, (unsigned long long)(s.top_gaps[i].end_ns - s.top_gaps[i].start_ns),
                   (unsigned long long)s.top_gaps[i].start_ns);
    }
    ks_summary_free(&s);
    ks_collector_free(c);

    /* 14 equal gaps of 3 us: the first 12 are kept, in time order. */
    c = ks_collector_new();
    for (uint32_t i = 0; i < 15; i++) ks_collector_add_kernel(c, "k", i * 4 * US, (i * 4 + 1) * US, i);
    TEST_CHECK(ks_summarize(c, &w, &s) == 0 && s.gaps == 14 && s.top_gap_count == KS_TOP_GAPS, "equal gaps");
    for (int i = 0; i < KS_TOP_GAPS && i < (int)s.top_gap_count; i++)
        TEST_CHECK(s.top_gaps[i].start_ns == (uint64_t)(i * 4 + 1) * US, "equal gap %d at %llu", i,
                   (unsigned long long)s.top_gaps[i].start_ns);
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

/* The rows tests/gpu/run.sh takes for the top 3 kernels: awk '$1 ~ /^[1-3]$/ && NF >= 7'. */
static int count_rank_rows(const char *text)
{
    int rows = 0;
    for (const char *line = text; line && *line;) {
        const char *next = strchr(line, '\n');
        size_t len = next ? (size_t)(next - line) : strlen(line);
        char buf[512], *save = NULL;
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        int fields = 0, rank = 0;
        for (char *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save), fields++)
            if (fields == 0) rank = strlen(tok) == 1 && tok[0] >= '1' && tok[0] <= '3';
        rows += rank && fields >= 7;
        line = next ? next + 1 : NULL;
    }
    return rows;
}

/* The report of the example with 2 table rows: A (20 of 36 us: 55.6 %), B (15: 41.7 %,
 * cumulative 97.2 %), then C in the "other" row (1 us: 2.8 %). */
static int test_report(void)
{
    KsCollector *c = example();
    KsWindow w = {0, 0};
    KsSummary s;
    TEST_CHECK(ks_summarize(c, &w, &s) == 0, "summarize");
    const char *shown[3] = {"void alpha<1>(int)", NULL, NULL};
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    ks_write_report(&s, c, shown, 2, f);
    fclose(f);
    TEST_CHECK(strstr(text, "busy of span      76.5 %\n") != NULL, "busy %% (39/51)");
    TEST_CHECK(strstr(text, "memcpy HtoD       1, 0.003 ms, 0.0 MB\n") != NULL, "memcpy line");
    TEST_CHECK(strstr(text, "   1        2       0.020      10.00   55.6   55.6  alpha<1>\n") != NULL, "row A (display name shortened)");
    TEST_CHECK(strstr(text, "   2        1       0.015      15.00   41.7   97.2  B\n") != NULL, "row B");
    TEST_CHECK(strstr(text, "   -        1       0.001       1.00    2.8  100.0  other (1 kernel names)\n") != NULL, "other row");
    /* Idle: gaps [20,25] B -> memcpy, [28,30] memcpy -> A, [45,50] memset -> C: 12 us of
     * which 2 under 5 us (16.7 %) and 10 in 5-20 us (83.3 %); none of 20 us or more. */
    const char *idle =
        "\nidle              0.012 ms in 3 gaps between busy intervals; 0.000 ms in gaps of 20 us and more\n"
        "\ngap length       gaps     idle ms  % idle\n"
        "< 5 us              1       0.002    16.7\n"
        "5-20 us             2       0.010    83.3\n"
        "20-100 us           0       0.000     0.0\n"
        "100 us-1 ms         0       0.000     0.0\n"
        ">= 1 ms             0       0.000     0.0\n"
        "\nlongest gaps (at: ms from the window's start; [memcpy ...], [memset]: not kernels)\n"
        "    gap us      at ms  ended before the gap -> started after it\n"
        "       5.0      0.020  B -> [memcpy HtoD]\n"
        "       5.0      0.045  [memset] -> C\n"
        "       2.0      0.028  [memcpy HtoD] -> alpha<1>\n";
    TEST_CHECK(strstr(text, idle) != NULL, "idle section");
    TEST_CHECK(strstr(text, "\nkernel_profile kernels=4 kernel_ms=0.036 busy_ms=0.039 span_ms=0.051 busy_pct=76.5 names=3 skipped=0"
                            " idle_ms=0.012 gaps_over_20us_ms=0.000\n") != NULL, "machine line");
    const char *last = strrchr(text, '\n');
    while (last && last > text && last[-1] != '\n') last--;   /* the machine line is the last one */
    TEST_CHECK(last && strncmp(last, "kernel_profile ", 15) == 0, "machine line last");
    TEST_CHECK(count_rank_rows(text) == 2, "only the 2 table rows look like ranked rows to run.sh: %d", count_rank_rows(text));
    const char *busy = strstr(text, "busy_pct=");
    TEST_CHECK(busy && !strstr(busy + 1, "busy_pct="), "busy_pct= once (run.sh greps it)");
    if (test_case_failed) fprintf(stderr, "%s", text);
    free(text);
    ks_summary_free(&s);
    ks_collector_free(c);
    return 0;
}

int main(void)
{
    TEST_RUN(test_totals_and_groups);
    TEST_RUN(test_skip_window);
    TEST_RUN(test_period_window);
    TEST_RUN(test_parse_window);
    TEST_RUN(test_short_names);
    TEST_RUN(test_gap_buckets);
    TEST_RUN(test_gaps_between_activities);
    TEST_RUN(test_longest_gaps);
    TEST_RUN(test_report);
    return test_finish();
}

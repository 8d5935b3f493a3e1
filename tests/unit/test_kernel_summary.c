/* The kernel profiler's aggregation (src/perf/kernel_summary.c) on hand-made records with
 * hand-computed answers: grouping by name, busy time as the union of overlapping intervals,
 * the skip window (count, start/correlation order, last:R by the launch sequence's period),
 * the demangled-name shortening on c++filt output of real mangled names, and the report. */
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
    TEST_CHECK(strstr(text, "kernel_profile kernels=4 kernel_ms=0.036 busy_ms=0.039 span_ms=0.051 busy_pct=76.5 names=3 skipped=0\n") != NULL,
               "machine line");
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
    TEST_RUN(test_report);
    return test_finish();
}

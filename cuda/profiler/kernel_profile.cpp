// Kernel-level profile of any CUDA program, without nsys: a CUPTI injection library.
//
//   CUDA_INJECTION64_PATH=/abs/build/lib/libalice_kernel_profile.so  PROGRAM ARGS...
//   (or scripts/kernel_profile.sh OUT.txt PROGRAM ARGS...)
//
// The CUDA driver loads this library at cuInit and calls InitializeInjection, so the program
// itself gains no dependency. Kernel, memcpy and memset activity records are collected in
// CUPTI's buffers; at process exit the buffers are flushed and a summary (totals, busy time as
// the union of the intervals, kernels grouped by demangled name, the idle gaps between busy
// intervals by length and the longest ones with the activity on either side) goes to stderr
// and to the file ALICE_KERNEL_PROFILE_OUT (written to a temporary name, then renamed).
// ALICE_KERNEL_PROFILE_SKIP: N leaves out the first N kernel launches; last:R keeps only the
// last R repeats of the launch sequence (the timed steps of a benchmark).
//
// Nothing here may end or disturb the profiled program: a CUPTI call that fails is reported
// with its file, line and CUPTI's message, and the program runs on unprofiled.
// The aggregation is plain C (src/perf/kernel_summary.c), tested on the CPU.
#include <cupti.h>
#include <cxxabi.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "perf/kernel_summary.h"

namespace {

constexpr const char *kTag = "alice kernel profile";
constexpr size_t kBufferBytes = 8u << 20;   // per CUPTI buffer: ~100k kernel records
constexpr size_t kBufferAlign = 8;          // CUPTI requires 8-byte aligned buffers

bool cupti_ok(CUptiResult r, const char *call, const char *file, int line)
{
    if (r == CUPTI_SUCCESS) return true;
    const char *msg = nullptr;
    if (cuptiGetResultString(r, &msg) != CUPTI_SUCCESS || !msg) msg = "unknown CUPTI error";
    std::fprintf(stderr, "%s: %s:%d: %s failed: %s (%d)\n", kTag, file, line, call, msg, static_cast<int>(r));
    return false;
}
#define CUPTI_OK(call) cupti_ok((call), #call, __FILE__, __LINE__)

// Shared between CUPTI's worker thread (buffer completion) and the exit handler.
std::mutex g_lock;
KsCollector *g_collector = nullptr;
KsWindow g_window = {0, 0};
uint64_t g_dropped = 0;
bool g_reported = false;

KsCopyKind copy_kind(uint8_t cupti_kind)
{
    switch (cupti_kind) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return KS_COPY_HTOD;
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return KS_COPY_DTOH;
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return KS_COPY_DTOD;
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return KS_COPY_HTOH;
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return KS_COPY_PTOP;
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOA:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOH:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOA:
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOD:
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOA: return KS_COPY_ARRAY;
    default: return KS_COPY_UNKNOWN;
    }
}

// Called with g_lock held.
void add_record(const CUpti_Activity *rec)
{
    switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto *k = reinterpret_cast<const CUpti_ActivityKernel10 *>(rec);
        ks_collector_add_kernel(g_collector, k->name, k->start, k->end, k->correlationId);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto *m = reinterpret_cast<const CUpti_ActivityMemcpy6 *>(rec);
        ks_collector_add_copy(g_collector, copy_kind(m->copyKind), m->start, m->end, m->bytes, m->correlationId);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto *m = reinterpret_cast<const CUpti_ActivityMemset4 *>(rec);
        ks_collector_add_memset(g_collector, m->start, m->end, m->bytes, m->correlationId);
        break;
    }
    default: break;   // kinds not enabled by us (another tool's): ignored
    }
}

void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    *buffer = static_cast<uint8_t *>(std::aligned_alloc(kBufferAlign, kBufferBytes));
    *size = *buffer ? kBufferBytes : 0;   // no buffer: CUPTI drops the records and counts them
    *max_records = 0;                     // as many as fit
}

void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream, uint8_t *buffer, size_t, size_t valid)
{
    if (!buffer) return;
    {
        std::lock_guard<std::mutex> hold(g_lock);
        CUpti_Activity *rec = nullptr;
        for (;;) {
            CUptiResult r = cuptiActivityGetNextRecord(buffer, valid, &rec);
            if (r == CUPTI_ERROR_MAX_LIMIT_REACHED) break;   // the end of the buffer
            if (!CUPTI_OK(r)) break;
            if (!g_reported) add_record(rec);
        }
        size_t dropped = 0;
        if (CUPTI_OK(cuptiActivityGetNumDroppedRecords(context, stream, &dropped))) g_dropped += dropped;
    }
    std::free(buffer);
}

std::string demangle(const char *name)
{
    int status = 0;
    char *d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
    if (status != 0 || !d) return name;   // extern "C" kernels (cuBLAS, cuDNN): already plain
    std::string s(d);
    std::free(d);
    return s;
}

// The summary to out; the file via a temporary name, so nothing half-written is left.
bool write_file(const char *path, const KsSummary &s, const char *const *names)
{
    std::string tmp = std::string(path) + ".tmp." + std::to_string(static_cast<long>(getpid()));
    FILE *f = std::fopen(tmp.c_str(), "w");
    if (!f) {
        std::fprintf(stderr, "%s: cannot write %s: %s (check ALICE_KERNEL_PROFILE_OUT's folder)\n", kTag,
                     tmp.c_str(), std::strerror(errno));
        return false;
    }
    ks_write_report(&s, g_collector, names, KS_TOP_ROWS, f);
    bool ok = std::fflush(f) == 0 && !std::ferror(f);
    ok = (std::fclose(f) == 0) && ok;
    if (ok && std::rename(tmp.c_str(), path) != 0) ok = false;
    if (!ok) {
        std::fprintf(stderr, "%s: writing %s failed: %s\n", kTag, path, std::strerror(errno));
        std::remove(tmp.c_str());
    }
    return ok;
}

void report_at_exit()
{
    // Delivers every record still in CUPTI's buffers (buffer_completed runs on this thread,
    // so the lock is not held here).
    CUPTI_OK(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
    std::lock_guard<std::mutex> hold(g_lock);
    if (g_reported) return;
    g_reported = true;
    std::vector<std::string> demangled;
    std::vector<const char *> names;
    size_t n = ks_collector_name_count(g_collector);
    demangled.reserve(n);
    for (size_t i = 0; i < n; i++) demangled.push_back(demangle(ks_collector_name(g_collector, i)));
    for (const std::string &s : demangled) names.push_back(s.c_str());
    KsSummary s;
    if (ks_summarize(g_collector, &g_window, &s) != 0) {
        std::fprintf(stderr, "%s: out of memory summarizing %zu records: no profile\n", kTag,
                     ks_collector_record_count(g_collector));
        return;
    }
    s.dropped = g_dropped;
    std::fflush(stdout);
    ks_write_report(&s, g_collector, names.data(), KS_TOP_ROWS, stderr);
    const char *out = std::getenv("ALICE_KERNEL_PROFILE_OUT");
    if (out && *out && write_file(out, s, names.data()))
        std::fprintf(stderr, "%s: summary written to %s\n", kTag, out);
    ks_summary_free(&s);
}

}  // namespace

// The driver's entry point (CUDA_INJECTION64_PATH), called once from cuInit. Returns 1 in every
// case: the profile is optional, the program is not.
extern "C" __attribute__((visibility("default"))) int InitializeInjection(void)
{
    static bool initialised = false;
    if (initialised) return 1;
    initialised = true;

    char err[512];
    if (ks_parse_window(std::getenv("ALICE_KERNEL_PROFILE_SKIP"), &g_window, err, sizeof err) != 0) {
        std::fprintf(stderr, "%s: %s; counting every kernel\n", kTag, err);
        g_window = KsWindow{0, 0};
    }
    g_collector = ks_collector_new();
    if (!g_collector) {
        std::fprintf(stderr, "%s: out of memory: the program runs unprofiled\n", kTag);
        return 1;
    }
    if (!CUPTI_OK(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed))) {
        std::fprintf(stderr, "%s: CUPTI could not be initialised (see above): the program runs unprofiled\n", kTag);
        return 1;
    }
    static const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL,
                                               CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET};
    size_t enabled = 0;
    for (; enabled < sizeof kinds / sizeof *kinds; enabled++)
        if (!CUPTI_OK(cuptiActivityEnable(kinds[enabled]))) break;
    if (enabled < sizeof kinds / sizeof *kinds) {
        for (size_t i = 0; i < enabled; i++) CUPTI_OK(cuptiActivityDisable(kinds[i]));
        std::fprintf(stderr, "%s: CUPTI activity recording could not be enabled (see above): the program runs unprofiled\n", kTag);
        return 1;
    }
    if (std::atexit(report_at_exit) != 0) {
        for (CUpti_ActivityKind k : kinds) CUPTI_OK(cuptiActivityDisable(k));
        std::fprintf(stderr, "%s: atexit refused the report handler: the program runs unprofiled\n", kTag);
        return 1;
    }
    if (g_window.last_repeats > 0)
        std::fprintf(stderr, "%s: recording kernels, memcpys and memsets (window: the last %d repeats of the launch sequence)\n",
                     kTag, g_window.last_repeats);
    else
        std::fprintf(stderr, "%s: recording kernels, memcpys and memsets (first %zu kernels skipped)\n", kTag,
                     g_window.skip_kernels);
    return 1;
}

#include "core/check.h"

#include <mpi.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static AliceFatalCleanup g_cleanups[ALICE_FATAL_CLEANUPS];
static int g_cleanup_count;

void alice_on_fatal(AliceFatalCleanup fn)
{
    if (g_cleanup_count < ALICE_FATAL_CLEANUPS) g_cleanups[g_cleanup_count++] = fn;
}

/* The thread ending the process (0: none yet). Errors can arise on the loader's read-ahead
 * threads as well as on the main thread, two of them at once. */
static pthread_mutex_t g_ending_lock = PTHREAD_MUTEX_INITIALIZER;
static long g_ending_thread;

/* Called first by every error path: 1 for the thread that ends the process, 0 when that thread
 * fails again inside a cleanup (the cleanups are not run twice). Any other thread waits here
 * for the end instead of printing a second message and running the cleanups concurrently. */
static int begin_ending(void)
{
    const long self = (long)syscall(SYS_gettid);
    if (pthread_mutex_trylock(&g_ending_lock) == 0) {
        __atomic_store_n(&g_ending_thread, self, __ATOMIC_SEQ_CST);
        return 1;
    }
    if (__atomic_load_n(&g_ending_thread, __ATOMIC_SEQ_CST) == self) return 0;
    for (;;) pause();
}

static _Noreturn void abort_all(int status, int first)
{
    int quick_exit_wanted = 0;
    if (first)
        for (int i = 0; i < g_cleanup_count; i++) quick_exit_wanted |= g_cleanups[i]();
    /* exit() runs the atexit handlers (HDF5's library shutdown among them), which must not
     * race a main thread still using those libraries: from another thread, _exit. */
    const int main_thread = (long)syscall(SYS_gettid) == (long)getpid();
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    int size = 1;
    if (up && !down) MPI_Comm_size(MPI_COMM_WORLD, &size);
    fflush(stdout);
    fflush(stderr);
    /* One rank failing must end the whole job: without MPI_Abort the others wait forever
     * in the next collective. From a read-ahead thread too: MPI implementations end the job
     * from any thread, and nothing else tells the other ranks. */
    if (up && !down && size > 1) MPI_Abort(MPI_COMM_WORLD, status);
    if (quick_exit_wanted || !main_thread) _exit(status);
    exit(status);
}

static _Noreturn void report_and_end(int status, const char *file, int line, const char *fmt,
                                     va_list ap)
{
    const int first = begin_ending();
    if (file) fprintf(stderr, "alice: error: %s:%d: ", file, line);
    else fprintf(stderr, "alice: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    abort_all(status, first);
}

void alice_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report_and_end(1, file, line, fmt, ap);
}

void alice_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report_and_end(2, NULL, 0, fmt, ap);
}

void alice_mpi_init(int *argc, char ***argv)
{
    int provided = 0;
    /* Prefetch threads never call MPI; only the main thread does. */
    CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    /* MPI's default handler aborts inside the failing call, before CHECK_MPI can name the call
     * and its file and line or run the cleanups (a half-written .tmp removed): return codes. */
    CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    if (provided < MPI_THREAD_FUNNELED)
        alice_die("this MPI library gives thread level %d, below MPI_THREAD_FUNNELED (%d) that "
                  "alice needs (its loader threads run beside MPI calls): use an MPI built with "
                  "thread support", provided, MPI_THREAD_FUNNELED);
}

void alice_check_mpi_failed(int rc, const char *what, const char *file, int line)
{
    char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    alice_fatal_at(file, line, "MPI call failed (%s): %s", msg, what);
}

static void (*g_h5_stack_printer)(void);

void alice_set_h5_stack_printer(void (*print)(void)) { g_h5_stack_printer = print; }

void alice_check_h5_failed(int err, const char *what, const char *file, int line)
{
    if (err == ENOSPC || err == EDQUOT || err == EFBIG)
        alice_die("an HDF5 write failed: %s (%s:%d: %s); free space on that file system (or "
                  "raise the quota or the file size limit), or write elsewhere; the files from "
                  "before are intact", strerror(err), file, line, what);
    if (g_h5_stack_printer) g_h5_stack_printer();   /* HDF5's own account, for a bug report */
    alice_fatal_at(file, line, "HDF5 call failed: %s", what);
}

void *alice_malloc_at(size_t bytes, const char *file, int line)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) alice_fatal_at(file, line, "out of host memory allocating %zu bytes", bytes);
    return p;
}

void *alice_calloc_at(size_t count, size_t size, const char *file, int line)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) alice_fatal_at(file, line, "out of host memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *alice_realloc_at(void *p, size_t bytes, const char *file, int line)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) alice_fatal_at(file, line, "out of host memory growing a buffer to %zu bytes", bytes);
    return q;
}

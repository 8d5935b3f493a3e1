#include "core/check.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static AliceFatalCleanup g_cleanups[ALICE_FATAL_CLEANUPS];
static int g_cleanup_count;

void alice_on_fatal(AliceFatalCleanup fn)
{
    if (g_cleanup_count < ALICE_FATAL_CLEANUPS) g_cleanups[g_cleanup_count++] = fn;
}

static _Noreturn void abort_all(int status)
{
    /* a cleanup that ends on an error itself must not run the cleanups again */
    static int ending;
    int quick_exit_wanted = 0;
    if (!ending) {
        ending = 1;
        for (int i = 0; i < g_cleanup_count; i++) quick_exit_wanted |= g_cleanups[i]();
    }
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    int size = 1;
    if (up && !down) MPI_Comm_size(MPI_COMM_WORLD, &size);
    fflush(stdout);
    fflush(stderr);
    /* One rank failing must end the whole job: without MPI_Abort the others wait forever
     * in the next collective. */
    if (up && !down && size > 1) MPI_Abort(MPI_COMM_WORLD, status);
    if (quick_exit_wanted) _exit(status);
    exit(status);
}

void alice_fatal_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "alice: error: %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort_all(1);
}

void alice_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "alice: error: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort_all(2);
}

void alice_check_mpi_failed(int rc, const char *what, const char *file, int line)
{
    char msg[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    alice_fatal_at(file, line, "MPI call failed (%s): %s", msg, what);
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

#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

static int g_rank = 0, g_size = 1;

void log_set_rank(int rank, int size) { g_rank = rank; g_size = size; }
int log_rank(void) { return g_rank; }

void log_info(const char *fmt, ...)
{
    if (g_rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g_size > 1) fprintf(stderr, "alice: warning [rank %d]: ", g_rank);
    else fprintf(stderr, "alice: warning: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

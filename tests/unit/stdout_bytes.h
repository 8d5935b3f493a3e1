/* How many bytes a function writes to stdout (log_info's stream): stdout is pointed at a
 * temporary file for the call, then restored. For tests that a quiet path prints nothing. */
#ifndef ALICE_TEST_STDOUT_BYTES_H
#define ALICE_TEST_STDOUT_BYTES_H

#include <stdio.h>
#include <unistd.h>

/* -1 when no temporary file could be made. */
static inline long stdout_bytes_of(void (*fn)(void))
{
    fflush(stdout);
    FILE *tmp = tmpfile();
    if (!tmp) return -1;
    const int keep = dup(1);
    dup2(fileno(tmp), 1);
    fn();
    fflush(stdout);
    dup2(keep, 1);
    close(keep);
    fseek(tmp, 0, SEEK_END);  /* the descriptor's offset, shared with the dup'ed stdout */
    const long bytes = ftell(tmp);
    fclose(tmp);
    return bytes;
}

#endif

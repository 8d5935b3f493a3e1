/* Small string tests shared by the commands (file-name suffixes). */
#ifndef ALICE_STRUTIL_H
#define ALICE_STRUTIL_H

#include <string.h>

/* 1 when s ends with suffix (the empty suffix included). */
static inline int str_ends_with(const char *s, const char *suffix)
{
    const size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

#endif

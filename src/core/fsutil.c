#include "core/fsutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/check.h"

static void make_one(const char *dir, const char *fix)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        alice_die("cannot create directory %s: %s; %s", dir, strerror(errno), fix);
}

void make_dirs(const char *path, const char *fix)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        alice_die("directory path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        make_one(buf, fix);
        *p = '/';
    }
    make_one(buf, fix);
}

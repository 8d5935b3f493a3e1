#include "core/sysmem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* v1 reports "no limit" as a huge page-rounded number rather than "max" */
static const double kNoLimit = 1152921504606846976.0; /* 2^60 bytes */

/* The first number of a file ("max" and unreadable files: INFINITY). */
static double read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return INFINITY;
    double v = INFINITY;
    char word[64];
    if (fscanf(f, "%63s", word) == 1 && strcmp(word, "max") != 0) {
        char *end;
        double x = strtod(word, &end);
        if (end != word && x >= 0 && x < kNoLimit) v = x;
    }
    fclose(f);
    return v;
}

static double meminfo_available(const char *meminfo)
{
    FILE *f = fopen(meminfo, "r");
    if (!f) return INFINITY;
    char line[256];
    double kb = INFINITY;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return isfinite(kb) ? kb * 1024.0 : INFINITY;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* min over dir and its parents down to (and including) top of limit - usage. */
static double room_along(char *dir, const char *top, const char *limit_file,
                         const char *usage_file)
{
    double room = INFINITY;
    const size_t top_len = strlen(top);
    for (;;) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, limit_file);
        double limit = read_number(path);
        if (isfinite(limit)) {
            snprintf(path, sizeof path, "%s/%s", dir, usage_file);
            double used = read_number(path);
            double r = limit - (isfinite(used) ? used : 0.0);
            if (r < room) room = r < 0 ? 0 : r;
        }
        if (strlen(dir) <= top_len) break;
        char *slash = strrchr(dir, '/');
        if (!slash || (size_t)(slash - dir) < top_len) break;
        *slash = '\0';
    }
    return room;
}

/* The room under this process's cgroup limits (INFINITY: none found). A container often mounts
 * its own cgroup as the root while /proc/self/cgroup names the host's path: then the mount
 * point itself is the process's cgroup. */
static double cgroup_room(const char *self_cgroup, const char *root)
{
    FILE *f = fopen(self_cgroup, "r");
    if (!f) return INFINITY;
    double room = INFINITY;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = '\0';
        *c2 = '\0';
        const char *controllers = c1 + 1, *path = c2 + 1;
        char top[4096], dir[8400];
        int v2 = !strcmp(line, "0") && controllers[0] == '\0';
        int v1_memory = 0;
        for (const char *p = controllers; *p && !v2;) {
            size_t n = strcspn(p, ",");
            if (n == 6 && !strncmp(p, "memory", 6)) v1_memory = 1;
            p += n + (p[n] == ',');
        }
        if (!v2 && !v1_memory) continue;
        snprintf(top, sizeof top, v2 ? "%s" : "%s/memory", root);
        snprintf(dir, sizeof dir, "%s%s", top, strcmp(path, "/") ? path : "");
        if (!is_dir(dir)) snprintf(dir, sizeof dir, "%s", top);
        double r = v2 ? room_along(dir, top, "memory.max", "memory.current")
                      : room_along(dir, top, "memory.limit_in_bytes", "memory.usage_in_bytes");
        if (r < room) room = r;
    }
    fclose(f);
    return room;
}

double host_memory_room(const char *meminfo, const char *self_cgroup, const char *cgroup_root)
{
    double room = meminfo_available(meminfo);
    if (!isfinite(room)) room = (double)sysconf(_SC_AVPHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    double limit = cgroup_room(self_cgroup, cgroup_root);
    return limit < room ? limit : room;
}

/* The address space left under RLIMIT_AS (ulimit -v; Slurm passes a submit shell's limits on
 * to the job by default): the limit less this process's virtual size (/proc/self/statm's first
 * field). INFINITY without a limit, or when the size cannot be read. */
static double address_space_room(void)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return INFINITY;
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    const int got = f ? fscanf(f, "%lu", &pages) : 0;
    if (f) fclose(f);
    if (got != 1) return INFINITY;
    const double used = (double)pages * (double)sysconf(_SC_PAGESIZE);
    const double room = (double)lim.rlim_cur - used;
    return room > 0 ? room : 0;
}

double host_available_bytes(void)
{
    const double room = host_memory_room("/proc/meminfo", "/proc/self/cgroup", "/sys/fs/cgroup");
    const double as_room = address_space_room();
    return as_room < room ? as_room : room;
}

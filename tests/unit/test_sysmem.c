/* Host memory room (src/core/sysmem.h) from fake /proc and cgroup trees, against values worked
 * out by hand:
 *  - MemAvailable alone (no cgroup file): 1000 kB -> 1024000 bytes;
 *  - cgroup v2 "0::/job/step": the job's memory.max 800000 with 100000 used leaves 700000, the
 *    step's "max" adds no limit -> min(1024000, 700000) = 700000; a tighter step
 *    (300000 - 250000 = 50000) wins;
 *  - cgroup v1 "4:memory:/job": limit_in_bytes 600000, usage 200000 -> 400000; v1's "no limit"
 *    (9223372036854771712) is none;
 *  - a container whose /proc/self/cgroup names a host path absent from its mount: the mount
 *    point's own files count (500000 - 0);
 *  - usage above the limit gives 0, not a negative room;
 *  - RLIMIT_AS (ulimit -v) bounds the room by the address space left under it. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/resource.h>

#include "core/sysmem.h"
#include "test.h"
#include "test_child.h"

static char root[256];

static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    fputs(text, f);
    fclose(f);
}

static void dir(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    mkdir(path, 0700);
}

static double room(void)
{
    char meminfo[512], self[512], cg[512];
    snprintf(meminfo, sizeof meminfo, "%s/meminfo", root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    return host_memory_room(meminfo, self, cg);
}

static int test_room(void)
{
    put("meminfo", "MemTotal:       4000 kB\nMemFree:         10 kB\nMemAvailable:   1000 kB\n");
    TEST_CLOSE(room(), 1024000.0, 0, 0, "MemAvailable alone");

    dir("cg");
    dir("cg/job");
    dir("cg/job/step");
    put("self_cgroup", "0::/job/step\n");
    put("cg/job/memory.max", "800000\n");
    put("cg/job/memory.current", "100000\n");
    put("cg/job/step/memory.max", "max\n");
    put("cg/job/step/memory.current", "90000\n");
    TEST_CLOSE(room(), 700000.0, 0, 0, "cgroup v2: the job's limit");
    put("cg/job/step/memory.max", "300000\n");
    put("cg/job/step/memory.current", "250000\n");
    TEST_CLOSE(room(), 50000.0, 0, 0, "cgroup v2: the tighter step");
    put("cg/job/step/memory.current", "350000\n");
    TEST_CLOSE(room(), 0.0, 0, 0, "cgroup v2: usage over the limit");

    dir("cg/memory");
    dir("cg/memory/job");
    put("self_cgroup", "5:cpu,cpuacct:/job\n4:memory:/job\n");
    put("cg/memory/job/memory.limit_in_bytes", "600000\n");
    put("cg/memory/job/memory.usage_in_bytes", "200000\n");
    put("cg/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("cg/memory/memory.usage_in_bytes", "5000000\n");
    TEST_CLOSE(room(), 400000.0, 0, 0, "cgroup v1: the job's limit, the root unlimited");

    put("self_cgroup", "4:memory:/host/container/path\n");
    put("cg/memory/memory.limit_in_bytes", "500000\n");
    put("cg/memory/memory.usage_in_bytes", "0\n");
    TEST_CLOSE(room(), 500000.0, 0, 0, "cgroup v1 in a container: the mount point's limit");
    return 0;
}

/* In a child: RLIMIT_AS set 64 MiB above this process's virtual size leaves host_available_bytes
 * at most those 64 MiB (plus what the size grew by meanwhile, nothing here), and more than 32;
 * a limit already passed leaves 0. ulimit -v had been ignored: pack's memory check let a case
 * through that then failed an allocation naming no case. */
static void address_space_child(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (!f || fscanf(f, "%lu", &pages) != 1) _exit(3);
    fclose(f);
    const double used = (double)pages * (double)sysconf(_SC_PAGESIZE), slack = 64.0 * 1048576;
    struct rlimit lim = {(rlim_t)(used + slack), RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(4);
    const double room = host_available_bytes();
    if (!(room <= slack && room > slack / 2)) {
        fprintf(stderr, "room %.0f under a limit %.0f above the size\n", room, slack);
        _exit(1);
    }
    lim.rlim_cur = (rlim_t)(used / 2);
    if (setrlimit(RLIMIT_AS, &lim) != 0) _exit(4);
    if (host_available_bytes() != 0) _exit(2);
    _exit(0);
}

static int test_address_space_limit(void)
{
    char err[512];
    const int rc = test_child_exit(address_space_child, err, sizeof err);
    TEST_CHECK(rc == 0, "RLIMIT_AS: child status %d (1: room not the limit's, 2: not 0 past the "
               "limit): %s", rc, err);
    return 0;
}

int main(void)
{
    snprintf(root, sizeof root, "%s/alice_sysmem_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    TEST_RUN(test_room);
    TEST_RUN(test_address_space_limit);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return test_finish();
}

/* Host memory this process may still use, for checks made before allocating and for budgets
 * (the loader's volume cache). Not sysconf's free pages: on a compute node the page cache
 * holds most of the "used" memory and gives it back on demand (MemAvailable counts it), and a
 * Slurm job runs under a cgroup memory limit far below the node's memory (exceed it and the
 * job is killed, whatever the node has free). */
#ifndef ALICE_SYSMEM_H
#define ALICE_SYSMEM_H

/* min(MemAvailable, the room left under each memory limit of this process's cgroup and its
 * ancestors, the address space left under RLIMIT_AS), in bytes; cgroup v2 (memory.max -
 * memory.current) and v1 (memory.limit_in_bytes - memory.usage_in_bytes). */
double host_available_bytes(void);

/* The same from the given files: meminfo (as /proc/meminfo), self_cgroup (as /proc/self/cgroup)
 * and the cgroup file system's mount point (as /sys/fs/cgroup; v1 controllers below it as
 * memory/). Files that are missing or unreadable impose no limit; with no MemAvailable either,
 * the result is sysconf's free pages. */
double host_memory_room(const char *meminfo, const char *self_cgroup, const char *cgroup_root);

#endif

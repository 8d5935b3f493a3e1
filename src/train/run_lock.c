#include "train/run_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "core/check.h"
#include "core/fsutil.h"
#include "core/log.h"

static int g_lock_fd = -1;   /* held until the process ends */

void run_dir_lock(const char *run_dir)
{
    if (g_lock_fd >= 0) return;
    make_dirs(run_dir, "set run_dir to a writable path");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", run_dir, RUN_LOCK_FILE);
    const int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        alice_die("cannot open %s: %s (set run_dir to a writable path)", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int err = errno;
        if (err != EWOULDBLOCK) {
            log_warn("cannot lock %s (%s: the file system has no flock): nothing stops a second "
                     "job from writing %s at the same time; run one job per run_dir", path,
                     strerror(err), run_dir);
            close(fd);
            return;
        }
        char holder[512] = "";
        const ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
        holder[got > 0 ? got : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        close(fd);
        alice_die("run_dir %s is in use by another alice job (%s): two jobs in one run_dir "
                  "would prune and overwrite each other's checkpoints; wait for it to end, or "
                  "give this run another run_dir", run_dir,
                  holder[0] ? holder : "its holder is not recorded");
    }
    char host[256] = "?", line[640];
    gethostname(host, sizeof host - 1);
    const char *job = getenv("SLURM_JOB_ID");
    const time_t now = time(NULL);
    struct tm tm;
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
    const int len = snprintf(line, sizeof line, "pid %ld on host %s%s%s, since %s\n",
                             (long)getpid(), host, job ? ", Slurm job " : "", job ? job : "",
                             when);
    /* the holder's description: informative only, so a failed write changes nothing */
    if (ftruncate(fd, 0) != 0 || pwrite(fd, line, (size_t)len, 0) != len)
        log_warn("cannot record this job in %s: %s", path, strerror(errno));
    g_lock_fd = fd;
}

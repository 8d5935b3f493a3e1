#include "core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"

static void make_one(const char *dir, const char *fix)
{
    if (mkdir(dir, 0755) == 0) return;
    if (errno != EEXIST) alice_die("cannot create directory %s: %s; %s", dir, strerror(errno), fix);
    struct stat st;   /* EEXIST: a directory is fine, a file of that name is not */
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        alice_die("cannot create directory %s: a file of that name exists; %s", dir, fix);
}

void make_dirs(const char *path, const char *fix)
{
    char buf[4096];
    if (!path[0]) alice_die("an empty directory path (an unset variable?): %s", fix);
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

/* Forces a file's (or a folder's) data to the disk: a rename is only as durable as what it
 * points at. Best effort: some file systems refuse fsync on folders. */
static void sync_path(const char *path, int directory)
{
    int fd = open(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

void durable_replace(const char *tmp, const char *path)
{
    sync_path(tmp, 0);
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        alice_die("cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    sync_path(slash ? (dir[0] ? dir : "/") : ".", 1);
}

void commit_stream(FILE *f, const char *tmp, const char *path)
{
    if (fclose(f) != 0) {
        const int e = errno;
        unlink(tmp);
        alice_die("cannot finish writing %s: %s (disk full or quota exceeded?); %s is unchanged",
                  tmp, strerror(e), path);
    }
    durable_replace(tmp, path);
}

FolderState folder_state(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) return FOLDER_MISSING;
    if (!S_ISDIR(st.st_mode)) return FOLDER_NOT_DIR;
    if (access(dir, W_OK | X_OK) != 0) return FOLDER_NOT_WRITABLE;
    return FOLDER_OK;
}

void describe_create_failure(const char *path, char *why, size_t size)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    const char *dir = dirname(buf);
    struct stat st;
    const FolderState folder = folder_state(dir);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(why, size, "%s is a directory; name a file", path);
    else if (folder == FOLDER_MISSING)
        snprintf(why, size, "its folder %s: %s; create it first", dir, strerror(errno));
    else if (folder == FOLDER_NOT_DIR)
        snprintf(why, size, "%s is not a folder", dir);
    else if (folder == FOLDER_NOT_WRITABLE)
        snprintf(why, size, "its folder %s is not writable: %s", dir, strerror(errno));
    else
        snprintf(why, size, "its folder %s is writable: the file system refused the file (full, a "
                 "quota, or HDF5 file locking unsupported there: export "
                 "HDF5_USE_FILE_LOCKING=FALSE)", dir);
}

int output_link_target(const char *path, char *out, size_t n)
{
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISLNK(st.st_mode)) {
        snprintf(out, n, "%s", path);
        return 0;
    }
    char *target = realpath(path, NULL);
    if (!target)
        alice_die("%s is a symbolic link to nothing (%s); point it at the file to write, or "
                  "remove it", path, strerror(errno));
    if (strlen(target) >= n)
        alice_die("%s is a symbolic link to %s, a path longer than %zu characters; write to a "
                  "shorter path", path, target, n - 1);
    snprintf(out, n, "%s", target);
    free(target);
    return 1;
}

void absolute_path(const char *path, char *out, size_t n)
{
    char *resolved = path[0] ? realpath(path, NULL) : NULL;
    const char *use = resolved && strlen(resolved) < n ? resolved : path;
    snprintf(out, n, "%s", use);
    free(resolved);
}

int file_starts_with(const char *path, const char *prefix)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    const size_t n = strlen(prefix);
    char head[256];
    const int same = n <= sizeof head && fread(head, 1, n, f) == n && !memcmp(head, prefix, n);
    fclose(f);
    return same;
}

int output_replaceable(const char *path, const char *prefix)
{
    struct stat st;
    if (stat(path, &st) != 0) return errno == ENOENT;
    return (S_ISREG(st.st_mode) && st.st_size == 0) || (prefix && file_starts_with(path, prefix));
}

/* File-system helpers shared by the commands. */
#ifndef ALICE_FSUTIL_H
#define ALICE_FSUTIL_H

/* mkdir -p: creates path and its parents; an existing directory is fine. On failure the job
 * ends with a message naming the directory, the reason and `fix` (e.g. "choose a writable
 * --out"). */
void make_dirs(const char *path, const char *fix);

#endif

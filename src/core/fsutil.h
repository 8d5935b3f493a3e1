/* File-system helpers shared by the commands. */
#ifndef ALICE_FSUTIL_H
#define ALICE_FSUTIL_H

#include <stddef.h>
#include <stdio.h>

/* mkdir -p: creates path and its parents; an existing directory is fine. On failure the job
 * ends with a message naming the directory, the reason and `fix` (e.g. "choose a writable
 * --out"). */
void make_dirs(const char *path, const char *fix);

/* Puts the finished temporary file `tmp` in place of `path`: forces tmp's data to the disk,
 * renames it over path, then forces the folder, so a crash (of the process or the node) at any
 * point leaves either the old file or the complete new one, never an empty or partial one.
 * On failure tmp is removed and the job ends naming both. */
void durable_replace(const char *tmp, const char *path);
/* Closes `f`, a temporary file written in full, then durable_replace(tmp, path); a failed
 * close (a full disk shows there) removes tmp and ends the job naming it. */
void commit_stream(FILE *f, const char *tmp, const char *path);
/* Whether a file can be created in folder `dir` as far as the folder goes: FOLDER_MISSING
 * (errno says why), FOLDER_NOT_DIR, FOLDER_NOT_WRITABLE (errno says why) or FOLDER_OK. */
typedef enum { FOLDER_OK, FOLDER_MISSING, FOLDER_NOT_DIR, FOLDER_NOT_WRITABLE } FolderState;
FolderState folder_state(const char *dir);
/* Why creating `path` failed, where the creating call gives no reason (HDF5's H5Fcreate):
 * `path` a directory, its folder missing, not a folder or not writable, or else the file
 * system's refusal. */
void describe_create_failure(const char *path, char *why, size_t size);
/* path made absolute (realpath: symbolic links resolved) into out (n bytes), so it still names
 * the file when read from another working directory; "" stays "", and a path that does not
 * resolve (or does not fit) is copied as given. */
void absolute_path(const char *path, char *out, size_t n);
/* An output about to be replaced through a temporary file and a rename: when `path` is a
 * symbolic link (data/dataset.h5 -> /scratch/...), the rename would replace the link by a
 * regular file beside it and leave its target stale, so the target is written instead: its
 * resolved path goes into out (n bytes) and 1 is returned; else path is copied and 0 returned.
 * A link to nothing, or a target longer than n, ends the job naming the link and the fix. */
int output_link_target(const char *path, char *out, size_t n);

/* 1 when path is a readable regular file whose first bytes are `prefix`: how a command tells
 * its own earlier output (which it may replace) from another file given as --out by mistake
 * (a data set, a checkpoint), which it must not. */
int file_starts_with(const char *path, const char *prefix);
/* 1 when an output may be written over path: it does not exist, it is an empty regular file
 * (mktemp's), or it begins with prefix (the command's own earlier output; NULL: no prefix
 * makes it replaceable). */
int output_replaceable(const char *path, const char *prefix);

#endif

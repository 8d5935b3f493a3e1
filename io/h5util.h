/* Small HDF5 helpers shared by checkpoints, results and dumps: named float datasets with a
 * shape, string and integer attributes, and atomic file replacement. Every call is checked
 * (CHECK_H5) and reports file and line. Files are opened serially (default property lists). */
#ifndef ALICE_H5UTIL_H
#define ALICE_H5UTIL_H

#include <hdf5.h>
#include <stddef.h>

/* The HDF5 library here is built without thread safety (the parallel build), and the loader's
 * read-ahead threads read data sets while the main thread writes checkpoints: every section of
 * HDF5 calls that may run beside another thread's holds this one process-wide lock. Recursive,
 * so a section may call helpers (and other sections) that take it too. */
void h5_lock(void);
/* HDF5 stops printing its error stack at every failing call; CHECK_H5 prints it for internal
 * errors instead (alice_set_h5_stack_printer), and a full disk, quota or file size limit ends
 * with alice's message alone, not under a page of HDF5-DIAG lines from the later call where
 * HDF5 met it (H5Dclose, a flush). Calls whose failure the caller handles print nothing, as
 * under H5E_BEGIN_TRY. For programs (alice's main); call after MPI_Init, before other threads
 * use HDF5 (the setting is the library's, or the thread's in a thread-safe build). */
void h5_errors_to_alice(void);
void h5_unlock(void);

/* Creates `path`.tmp for writing; h5_commit closes it, forces it to the disk and renames it
 * over `path`, so a reader never sees a half-written file and a crash (of the process or the
 * node) leaves the old file intact. A write that fails (disk full: any HDF5 call ending the
 * process between the two) removes the .tmp and says so (h5_pending_tmp). A path too long for
 * its .tmp name is refused. */
hid_t h5_create_tmp(const char *path);
void h5_commit(hid_t file, const char *path);
/* For writers that create their own file (the parallel data set writer): `tmp` (the .tmp of
 * `final_path`) is removed if the process ends on an error before h5_pending_done(tmp). */
void h5_pending_tmp(const char *tmp, const char *final_path);
void h5_pending_done(const char *tmp);
/* Opens an existing file read-only; a clear error (naming the file, whether it is missing,
 * unreadable or damaged, and the fix) otherwise. */
hid_t h5_open_read(const char *path, const char *what);
/* The same without the error: a negative id when the file cannot be opened. */
hid_t h5_try_open_read(const char *path);
/* Ends the job naming `path` as locked for writing by another process when open_errno (errno
 * right after a failed h5_try_open_read) says HDF5's file lock was refused; else returns. A
 * locked file is not a damaged one: callers that would skip or set aside a damaged file
 * (checkpoints) must not do so to a locked one. */
void h5_refuse_locked(const char *path, const char *what, int open_errno);
/* 1 when every object under loc (groups recursively, datasets, their attributes' headers)
 * opens: a file whose metadata a crash or a bad copy damaged fails its checksums here, quietly
 * (HDF5's error stack is not printed). Raw data is not read. */
int h5_all_objects_open(hid_t loc);

/* Dataset at `name` (intermediate groups created). */
/* H5Dwrite, where a failure (a full disk, a quota, a file size limit: the machine, not alice)
 * ends the job with status 2 naming the dataset (name), its file and the system's reason. */
void h5_write_dataset(hid_t ds, hid_t mem_type, hid_t mem_space, hid_t file_space, hid_t dxpl,
                      const void *data, const char *name);
void h5_write_floats(hid_t loc, const char *name, int ndim, const int *dims, const float *data);
void h5_write_ints(hid_t loc, const char *name, int ndim, const int *dims, const int *data);
void h5_write_doubles(hid_t loc, const char *name, int ndim, const int *dims, const double *data);
/* 1 when the link exists (intermediate groups are checked one by one). */
int h5_exists(hid_t loc, const char *name);
/* Shape of a dataset; returns its rank. A name that is no dataset (a group, a link to nothing)
 * or one of rank above maxdims ends the job naming the file and the object: the file is
 * damaged or was edited by another tool. */
int h5_shape(hid_t loc, const char *name, int maxdims, long long *dims);
void h5_read_floats(hid_t loc, const char *name, float *data, size_t count);
void h5_read_ints(hid_t loc, const char *name, int *data, size_t count);

void h5_attr_string(hid_t loc, const char *name, const char *value);
void h5_attr_long(hid_t loc, const char *name, long value);
void h5_attr_double(hid_t loc, const char *name, double value);
/* count doubles as one attribute (an array; a scalar for one). */
void h5_attr_doubles(hid_t loc, const char *name, const double *values, int count);
/* Reads a string attribute into a malloc'd buffer (NULL when absent, not a string or several:
 * callers then treat the file as foreign, with their own message). */
char *h5_attr_read_string(hid_t loc, const char *name);
/* Reads an integer attribute; returns 0 (value untouched) when absent or not one number (an
 * array, a string: the caller treats the file as foreign). */
int h5_attr_read_long(hid_t loc, const char *name, long *value);
/* The same for a floating-point attribute. */
int h5_attr_read_double(hid_t loc, const char *name, double *value);
/* Reads a numeric attribute of exactly count values; 0 (values untouched) otherwise. */
int h5_attr_read_doubles(hid_t loc, const char *name, double *values, int count);

#endif

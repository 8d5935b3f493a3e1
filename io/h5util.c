#include "h5util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/check.h"
#include "core/fsutil.h"

static pthread_mutex_t g_h5_mutex;
static pthread_once_t g_h5_once = PTHREAD_ONCE_INIT;

static void h5_mutex_init(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&g_h5_mutex, &a);
    pthread_mutexattr_destroy(&a);
}

static void print_h5_stack(void)
{
    H5Eprint2(H5E_DEFAULT, stderr);
}

void h5_errors_to_alice(void)
{
    CHECK_H5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
    alice_set_h5_stack_printer(print_h5_stack);
}

void h5_lock(void)
{
    pthread_once(&g_h5_once, h5_mutex_init);
    pthread_mutex_lock(&g_h5_mutex);
}

void h5_unlock(void) { pthread_mutex_unlock(&g_h5_mutex); }

/* .tmp files being written: removed when the process ends on an error before their commit. */
enum { PENDING_MAX = 4, PENDING_PATH = 4096 };
static struct {
    char tmp[PENDING_PATH], final_path[PENDING_PATH];
} g_pending[PENDING_MAX];
static int g_pending_hooked;

static int remove_pending_tmp(void)
{
    int removed = 0;
    for (int i = 0; i < PENDING_MAX; i++) {
        if (!g_pending[i].tmp[0]) continue;
        if (unlink(g_pending[i].tmp) == 0 || errno == ENOENT)
            fprintf(stderr, "alice: %s was being written when the error above ended the job: "
                    "removed it; %s was not written (a file of that name from before is "
                    "unchanged)\n", g_pending[i].tmp, g_pending[i].final_path);
        g_pending[i].tmp[0] = '\0';
        removed = 1;
    }
    /* HDF5's exit handler would close that file and crash on the failed writes */
    return removed;
}

void h5_pending_tmp(const char *tmp, const char *final_path)
{
    if (!g_pending_hooked) {
        g_pending_hooked = 1;
        alice_on_fatal(remove_pending_tmp);
    }
    for (int i = 0; i < PENDING_MAX; i++)
        if (!g_pending[i].tmp[0]) {
            snprintf(g_pending[i].tmp, PENDING_PATH, "%s", tmp);
            snprintf(g_pending[i].final_path, PENDING_PATH, "%s", final_path);
            return;
        }
    ALICE_FATAL("more than %d files written at once", PENDING_MAX);
}

void h5_pending_done(const char *tmp)
{
    for (int i = 0; i < PENDING_MAX; i++)
        if (!strcmp(g_pending[i].tmp, tmp)) g_pending[i].tmp[0] = '\0';
}

/* path's .tmp name into tmp (PENDING_PATH bytes); a path too long for it is refused, never cut
 * (a cut name could be another existing file, truncated by the create). */
static void tmp_name(char *tmp, const char *path)
{
    if (snprintf(tmp, PENDING_PATH, "%s.tmp", path) >= PENDING_PATH)
        alice_die("cannot write %s: the path is longer than %d characters; use a shorter one",
                  path, PENDING_PATH - 5);
}

hid_t h5_create_tmp(const char *path)
{
    char tmp[PENDING_PATH];
    tmp_name(tmp, path);
    h5_lock();
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT); } H5E_END_TRY;
    h5_unlock();
    if (f < 0) {
        char why[PENDING_PATH + 200];
        describe_create_failure(tmp, why, sizeof why);
        alice_die("cannot create %s: %s", tmp, why);
    }
    h5_pending_tmp(tmp, path);
    return f;
}

void h5_commit(hid_t file, const char *path)
{
    char tmp[PENDING_PATH];
    tmp_name(tmp, path);
    herr_t flushed, closed;
    h5_lock();
    H5E_BEGIN_TRY {
        flushed = H5Fflush(file, H5F_SCOPE_GLOBAL);
        closed = H5Fclose(file);
    } H5E_END_TRY;
    h5_unlock();
    if (flushed < 0 || closed < 0)
        alice_die("cannot finish writing %s (disk full or quota exceeded?)", tmp);
    h5_pending_done(tmp);   /* closed: durable_replace removes it on failure */
    durable_replace(tmp, path);
}

hid_t h5_try_open_read(const char *path)
{
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); } H5E_END_TRY;
    return f;
}

/* Depth-first over loc's links by index (an API the same in HDF5 1.10 and 1.12+). */
static int objects_open(hid_t loc, int depth)
{
    H5G_info_t info;
    herr_t got;
    H5E_BEGIN_TRY { got = H5Gget_info(loc, &info); } H5E_END_TRY;
    if (got < 0 || depth > 32) return 0;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char name[1024];
        ssize_t len;
        H5E_BEGIN_TRY {
            len = H5Lget_name_by_idx(loc, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                                     H5P_DEFAULT);
        } H5E_END_TRY;
        if (len < 0 || len >= (ssize_t)sizeof name) return 0;
        hid_t o;
        H5E_BEGIN_TRY { o = H5Oopen(loc, name, H5P_DEFAULT); } H5E_END_TRY;
        if (o < 0) return 0;
        const int ok = H5Iget_type(o) != H5I_GROUP || objects_open(o, depth + 1);
        CHECK_H5(H5Oclose(o));
        if (!ok) return 0;
    }
    return 1;
}

int h5_all_objects_open(hid_t loc) { return objects_open(loc, 0); }

void h5_refuse_locked(const char *path, const char *what, int open_errno)
{
    /* HDF5's file lock (flock) refused: a process writing the file holds it now */
    if (open_errno == EAGAIN || open_errno == EWOULDBLOCK)
        alice_die("cannot open %s %s: another process holds it locked for writing (HDF5's file "
                  "lock: h5py, another alice, a copy tool); wait until it has closed the file, "
                  "or, where the file system's locking itself fails (some NFS or Lustre mounts), "
                  "export HDF5_USE_FILE_LOCKING=FALSE", what, path);
}

hid_t h5_open_read(const char *path, const char *what)
{
    errno = 0;
    hid_t f = h5_try_open_read(path);
    if (f >= 0) return f;
    const int open_errno = errno;   /* the calls below may change it */
    if (access(path, F_OK) != 0)
        alice_die("cannot open %s %s: no such file (check the path)", what, path);
    if (access(path, R_OK) != 0)
        alice_die("cannot open %s %s: not readable (check its permissions)", what, path);
    struct stat st;
    if (stat(path, &st) == 0 && st.st_size == 0)
        alice_die("cannot open %s %s: the file is empty (0 bytes: a copy or write that failed); "
                  "use another copy", what, path);
    /* no HDF5 signature at all (H5Fis_hdf5, as dataset_open asks): another kind of file (a
     * NIfTI given to alice info), not a damaged one, which keeps its signature */
    htri_t is_hdf5;
    H5E_BEGIN_TRY { is_hdf5 = H5Fis_hdf5(path); } H5E_END_TRY;
    if (is_hdf5 <= 0)
        alice_die("cannot open %s %s: not an HDF5 file (alice reads dataset.h5 from alice pack, "
                  "ckpt_*.h5 from training, results.h5 from alice eval)", what, path);
    h5_refuse_locked(path, what, open_errno);
    alice_die("cannot open %s %s: not a complete HDF5 file (truncated or damaged, e.g. by a "
              "crash while it was copied or written); use another copy", what, path);
}

static hid_t link_props(void)
{
    hid_t lcpl = CHECK_H5(H5Pcreate(H5P_LINK_CREATE));
    CHECK_H5(H5Pset_create_intermediate_group(lcpl, 1));
    return lcpl;
}

void h5_write_dataset(hid_t ds, hid_t mem_type, hid_t mem_space, hid_t file_space, hid_t dxpl,
                      const void *data, const char *name)
{
    herr_t written;
    errno = 0;
    H5E_BEGIN_TRY {
        written = H5Dwrite(ds, mem_type, mem_space, file_space, dxpl, data);
    } H5E_END_TRY;
    if (written >= 0) return;
    /* The raw data is where a full disk or a quota shows (the machine, not an internal
     * error): named with the system's reason; a pending .tmp is removed on exit and the files
     * from before are untouched. */
    const int why = errno;
    char file[1024];
    if (H5Fget_name(ds, file, sizeof file) < 0) snprintf(file, sizeof file, "the file");
    alice_die("cannot write %s into %s: %s; free space on that file system (or raise the quota), "
              "or write elsewhere", name, file,
              why ? strerror(why) : "the write failed (disk full or quota exceeded?)");
}

static void write_any(hid_t loc, const char *name, int ndim, const int *dims, hid_t type, const void *data)
{
    hsize_t hd[8];
    ALICE_ASSERT(ndim >= 0 && ndim <= 8, "rank %d", ndim);
    for (int i = 0; i < ndim; i++) hd[i] = (hsize_t)dims[i];
    hid_t space = CHECK_H5(ndim ? H5Screate_simple(ndim, hd, NULL) : H5Screate(H5S_SCALAR));
    hid_t lcpl = link_props();
    hid_t ds = CHECK_H5(H5Dcreate2(loc, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    h5_write_dataset(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data, name);
    CHECK_H5(H5Dclose(ds));
    CHECK_H5(H5Pclose(lcpl));
    CHECK_H5(H5Sclose(space));
}

void h5_write_floats(hid_t loc, const char *name, int ndim, const int *dims, const float *data)
{
    write_any(loc, name, ndim, dims, H5T_NATIVE_FLOAT, data);
}
void h5_write_ints(hid_t loc, const char *name, int ndim, const int *dims, const int *data)
{
    write_any(loc, name, ndim, dims, H5T_NATIVE_INT, data);
}
void h5_write_doubles(hid_t loc, const char *name, int ndim, const int *dims, const double *data)
{
    write_any(loc, name, ndim, dims, H5T_NATIVE_DOUBLE, data);
}

int h5_exists(hid_t loc, const char *name)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", name);
    for (char *p = buf; (p = strchr(p + 1, '/'));) {
        *p = '\0';
        htri_t e = H5Lexists(loc, buf, H5P_DEFAULT);
        *p = '/';
        if (e <= 0) return 0;
    }
    return H5Lexists(loc, buf, H5P_DEFAULT) > 0;
}

/* Ends the job: object `name` under loc (a file or a group) is not what alice wrote there
 * (problem, e.g. "is missing or is no dataset"), named as the file names it. */
static void die_damaged_object(hid_t loc, const char *name, const char *problem)
{
    char file[4096], group[512] = "";
    if (H5Fget_name(loc, file, sizeof file) < 0) snprintf(file, sizeof file, "the file");
    /* loc may be a group (a checkpoint's params/): its path leads the name */
    if (H5Iget_name(loc, group, sizeof group) > 1)
        strncat(group, "/", sizeof group - strlen(group) - 1);
    else
        group[0] = '\0';
    alice_die("%s: %s%s %s; the file is damaged or was edited by another tool: use the file "
              "alice wrote", file, group[0] == '/' ? group + 1 : group, name, problem);
}

int h5_shape(hid_t loc, const char *name, int maxdims, long long *dims)
{
    hid_t ds;
    H5E_BEGIN_TRY { ds = H5Dopen2(loc, name, H5P_DEFAULT); } H5E_END_TRY;
    if (ds < 0)
        die_damaged_object(loc, name, "is missing or is no dataset (a group, or a link to "
                                      "nothing)");
    hid_t space = CHECK_H5(H5Dget_space(ds));
    int nd = CHECK_H5(H5Sget_simple_extent_ndims(space));
    hsize_t hd[16];
    if (nd > 16 || nd > maxdims) {
        char problem[96];
        snprintf(problem, sizeof problem, "has %d dimensions, at most %d expected", nd, maxdims);
        die_damaged_object(loc, name, problem);
    }
    CHECK_H5(H5Sget_simple_extent_dims(space, hd, NULL));
    for (int i = 0; i < nd; i++) dims[i] = (long long)hd[i];
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(ds));
    return nd;
}

static void read_any(hid_t loc, const char *name, hid_t type, void *data, size_t count)
{
    hid_t ds = CHECK_H5(H5Dopen2(loc, name, H5P_DEFAULT));
    hid_t space = CHECK_H5(H5Dget_space(ds));
    hssize_t n = H5Sget_simple_extent_npoints(space);
    ALICE_ASSERT(n == (hssize_t)count, "dataset %s holds %lld values, expected %zu", name, (long long)n, count);
    CHECK_H5(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Dclose(ds));
}

void h5_read_floats(hid_t loc, const char *name, float *data, size_t count)
{
    read_any(loc, name, H5T_NATIVE_FLOAT, data, count);
}
void h5_read_ints(hid_t loc, const char *name, int *data, size_t count)
{
    read_any(loc, name, H5T_NATIVE_INT, data, count);
}

void h5_attr_string(hid_t loc, const char *name, const char *value)
{
    hid_t type = CHECK_H5(H5Tcopy(H5T_C_S1));
    CHECK_H5(H5Tset_size(type, strlen(value) + 1));
    CHECK_H5(H5Tset_strpad(type, H5T_STR_NULLTERM));
    hid_t space = CHECK_H5(H5Screate(H5S_SCALAR));
    hid_t attr = CHECK_H5(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    CHECK_H5(H5Awrite(attr, type, value));
    CHECK_H5(H5Aclose(attr));
    CHECK_H5(H5Sclose(space));
    CHECK_H5(H5Tclose(type));
}

/* count values of memory type `type` as one attribute: a scalar for one, else an array */
static void attr_values(hid_t loc, const char *name, hid_t type, const void *value, int count)
{
    const hsize_t dims[1] = {(hsize_t)count};
    hid_t space = CHECK_H5(count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL));
    hid_t attr = CHECK_H5(H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    CHECK_H5(H5Awrite(attr, type, value));
    CHECK_H5(H5Aclose(attr));
    CHECK_H5(H5Sclose(space));
}

static void attr_scalar(hid_t loc, const char *name, hid_t type, const void *value)
{
    attr_values(loc, name, type, value, 1);
}

void h5_attr_doubles(hid_t loc, const char *name, const double *values, int count)
{
    attr_values(loc, name, H5T_NATIVE_DOUBLE, values, count);
}

void h5_attr_long(hid_t loc, const char *name, long value) { attr_scalar(loc, name, H5T_NATIVE_LONG, &value); }
void h5_attr_double(hid_t loc, const char *name, double value) { attr_scalar(loc, name, H5T_NATIVE_DOUBLE, &value); }

/* 1 when attribute attr holds one value (a scalar, or an array of one element): H5Aread
 * writes every element, so reading an array into one value's buffer would overrun it. */
static int attr_holds_one_value(hid_t attr)
{
    hid_t space = CHECK_H5(H5Aget_space(attr));
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    CHECK_H5(H5Sclose(space));
    return n == 1;
}

char *h5_attr_read_string(hid_t loc, const char *name)
{
    if (H5Aexists(loc, name) <= 0) return NULL;
    hid_t attr = CHECK_H5(H5Aopen(loc, name, H5P_DEFAULT));
    hid_t type = CHECK_H5(H5Aget_type(attr));
    /* a number where a string belongs, or several strings: foreign */
    if (H5Tget_class(type) != H5T_STRING || !attr_holds_one_value(attr)) {
        CHECK_H5(H5Tclose(type));
        CHECK_H5(H5Aclose(attr));
        return NULL;
    }
    char *out;
    if (H5Tis_variable_str(type) > 0) {
        char *v = NULL;
        hid_t mem = CHECK_H5(H5Tcopy(H5T_C_S1));
        CHECK_H5(H5Tset_size(mem, H5T_VARIABLE));
        /* the file's character set (h5py writes Python strings as UTF-8): HDF5 converts
         * no strings between ASCII and UTF-8 */
        CHECK_H5(H5Tset_cset(mem, H5Tget_cset(type)));
        CHECK_H5(H5Aread(attr, mem, &v));
        out = strdup(v ? v : "");
        H5free_memory(v);
        CHECK_H5(H5Tclose(mem));
    } else {
        size_t n = H5Tget_size(type);
        out = xcalloc(n + 1, 1);
        hid_t mem = CHECK_H5(H5Tcopy(H5T_C_S1));
        /* one byte more than stored: a null-padded string that fills its size (h5py's
         * np.bytes_) keeps its last character */
        CHECK_H5(H5Tset_size(mem, n + 1));
        CHECK_H5(H5Tset_cset(mem, H5Tget_cset(type)));
        CHECK_H5(H5Aread(attr, mem, out));
        CHECK_H5(H5Tclose(mem));
    }
    CHECK_H5(H5Tclose(type));
    CHECK_H5(H5Aclose(attr));
    return out;
}

/* A numeric attribute of exactly `count` values read as memory type `type`; 0 when absent,
 * and when it is not `count` numbers (another length, a string: a foreign or damaged file,
 * whose caller says so). H5Aread writes every stored element, hence the count check first. */
static int attr_read_values(hid_t loc, const char *name, hid_t type, void *value, int count)
{
    if (H5Aexists(loc, name) <= 0) return 0;
    hid_t attr = CHECK_H5(H5Aopen(loc, name, H5P_DEFAULT));
    hid_t stored = CHECK_H5(H5Aget_type(attr));
    const H5T_class_t cls = H5Tget_class(stored);
    CHECK_H5(H5Tclose(stored));
    hid_t space = CHECK_H5(H5Aget_space(attr));
    const hssize_t n = H5Sget_simple_extent_npoints(space);
    CHECK_H5(H5Sclose(space));
    const int ok = (cls == H5T_INTEGER || cls == H5T_FLOAT) && n == count;
    if (ok) CHECK_H5(H5Aread(attr, type, value));
    CHECK_H5(H5Aclose(attr));
    return ok;
}

static int attr_read_scalar(hid_t loc, const char *name, hid_t type, void *value)
{
    return attr_read_values(loc, name, type, value, 1);
}

int h5_attr_read_doubles(hid_t loc, const char *name, double *values, int count)
{
    return attr_read_values(loc, name, H5T_NATIVE_DOUBLE, values, count);
}

int h5_attr_read_long(hid_t loc, const char *name, long *value)
{
    return attr_read_scalar(loc, name, H5T_NATIVE_LONG, value);
}

int h5_attr_read_double(hid_t loc, const char *name, double *value)
{
    return attr_read_scalar(loc, name, H5T_NATIVE_DOUBLE, value);
}

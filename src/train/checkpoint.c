#include "train/checkpoint.h"

#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <mpi.h>
#include <omp.h>

#include "core/check.h"
#include "core/log.h"
#include "h5util.h"


/* CRC-32 (zlib) of a tensor's float32 values as little-endian bytes, stored as each tensor
 * dataset's attribute crc32: HDF5 checksums only its metadata, so tensor data zeroed or
 * changed inside a checkpoint that still opens was resumed, or loaded as pretrained=, without
 * a word. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor_crc hashes the floats' bytes as they are in memory, little-endian"
#endif
static long tensor_crc(const float *v, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    const Bytef *p = (const Bytef *)v;
    for (size_t left = n * sizeof(float); left > 0;) {
        const uInt chunk = left > (1u << 30) ? 1u << 30 : (uInt)left;
        crc = crc32(crc, p, chunk);
        p += chunk;
        left -= chunk;
    }
    return (long)crc;
}

/* 1 when the tensor dataset `name` holds no crc32 (a checkpoint of an older alice) or one that
 * matches values[0..n-1] as read back. */
static int tensor_crc_ok(hid_t f, const char *name, const float *values, size_t n)
{
    hid_t ds = CHECK_H5(H5Dopen2(f, name, H5P_DEFAULT));
    long stored;
    const int has = h5_attr_read_long(ds, "crc32", &stored);
    CHECK_H5(H5Dclose(ds));
    return !has || stored == tensor_crc(values, n);
}

static void refuse_damaged_tensor(const char *path, const char *name)
{
    alice_die("checkpoint %s: tensor %s fails its CRC-32 (its data changed after it was written: "
              "a damaged disk or copy); restore the file from a copy, or move it away to resume "
              "from the checkpoint before", path, name);
}

/* A tensor read whole and past its CRC: the values themselves must be finite. Training never
 * applies a non-finite step (train_optimizer_step's guard), so NaN or Inf here was written by
 * another tool, or by an alice before that guard; loaded, it surfaced a step later as a
 * "non-finite loss, lower lr" that no lr cures. */
static void refuse_nonfinite_tensor(const char *path, const char *name, const float *v, size_t n)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) && bad++ == 0) first = i;
    if (bad)
        alice_die("checkpoint %s: tensor %s holds %zu non-finite value(s) (NaN or Inf; the first "
                  "at element %zu): its weights cannot be trained or used; give another "
                  "checkpoint (move this one away to resume from the one before)", path, name,
                  bad, first);
}

void params_write_h5(hid_t f, const char *group, const char *prefix, const ParamSet *ps,
                     const float *buf, int (*keep)(const char *name))
{
    float *host = xmalloc(ps->total * sizeof(float));
    ps->be->download(host, buf, ps->total * sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        if (keep && !keep(t->name)) continue;
        char name[2 * PARAM_NAME_MAX + 64];
        snprintf(name, sizeof name, "%s/%s%s", group, prefix, t->name);
        h5_write_floats(f, name, t->ndim, t->shape, host + t->offset);
        hid_t ds = CHECK_H5(H5Dopen2(f, name, H5P_DEFAULT));
        h5_attr_long(ds, "decay", t->decay);
        h5_attr_long(ds, "crc32", tensor_crc(host + t->offset, t->numel));
        CHECK_H5(H5Dclose(ds));
    }
    free(host);
}

static void prune(const char *run_dir, int keep, long written);

/* The attribute that tells prune a periodic checkpoint (kept by keep_ckpts) from one written
 * off schedule (docs/FORMAT.md). */
static const char *const kPeriodicAttr = "periodic";

/* Each tensor's own AdamW t (adam_steps less the updates it sat out, freeze_last_layer) as the
 * attribute adam_steps of its /adam_m dataset. */
static void write_tensor_adam_steps(hid_t f, const ParamSet *online)
{
    for (int i = 0; i < online->count; i++) {
        char name[PARAM_NAME_MAX + 16];
        snprintf(name, sizeof name, "adam_m/%s", online->info[i].name);
        hid_t ds = CHECK_H5(H5Dopen2(f, name, H5P_DEFAULT));
        h5_attr_long(ds, "adam_steps", online->adam_steps - online->held_updates[i]);
        CHECK_H5(H5Dclose(ds));
    }
}

/* 1 when some tensor of a trainable set has sat out an update (its t is not the file's). */
static int tensor_steps_differ(const ParamSet *online)
{
    for (int i = 0; online->m && i < online->count; i++)
        if (online->held_updates[i]) return 1;
    return 0;
}

/* The updates each tensor sat out, from write_tensor_adam_steps' attributes (checkpoints
 * written before them: none). */
static void read_tensor_adam_steps(hid_t f, const char *path, ParamSet *online)
{
    for (int i = 0; i < online->count; i++) {
        char name[PARAM_NAME_MAX + 16];
        snprintf(name, sizeof name, "adam_m/%s", online->info[i].name);
        hid_t ds = CHECK_H5(H5Dopen2(f, name, H5P_DEFAULT));
        long t = online->adam_steps;
        h5_attr_read_long(ds, "adam_steps", &t);
        CHECK_H5(H5Dclose(ds));
        if (t < 0 || t > online->adam_steps)
            alice_die("checkpoint %s: tensor %s has adam_steps = %ld outside 0..%ld (the file's "
                      "adam_steps): the file is damaged; resume from another checkpoint", path,
                      online->info[i].name, t, online->adam_steps);
        online->held_updates[i] = online->adam_steps - t;
    }
}

static CheckpointRunShape current_run_shape(const char *backend)
{
    CheckpointRunShape r = {0};
    int size = 1;
    CHECK_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
    r.ranks = size;
    r.threads = omp_get_max_threads();
    snprintf(r.backend, sizeof r.backend, "%s", backend);
    return r;
}

static void write_run_shape(hid_t f, const ParamSet *online)
{
    const CheckpointRunShape r = current_run_shape(online->be->name);
    h5_attr_long(f, "ranks", r.ranks);
    h5_attr_long(f, "threads", r.threads);
    h5_attr_string(f, "backend", r.backend);
}

void checkpoint_save(const char *run_dir, const char *name, long step, const Config *cfg,
                     const char *kind, const ParamSet *online, const ParamSet *target, double metric)
{
    checkpoint_save_state(run_dir, name, step, cfg, kind, online, target, NULL, metric);
}

void checkpoint_save_state(const char *run_dir, const char *name, long step, const Config *cfg,
                           const char *kind, const ParamSet *online, const ParamSet *target,
                           const ParamSet *buffers, double metric)
{
    char path[4096];
    if (name) snprintf(path, sizeof path, "%s/%s", run_dir, name);
    else snprintf(path, sizeof path, "%s/ckpt_%ld.h5", run_dir, step);
    /* the loader's threads may be reading the data set meanwhile (h5util.h h5_lock) */
    h5_lock();
    hid_t f = h5_create_tmp(path);
    char *text = config_to_text(cfg);
    h5_attr_string(f, "format", CHECKPOINT_FORMAT_NAME);
    h5_attr_long(f, "format_version", tensor_steps_differ(online)
                                          ? CHECKPOINT_FORMAT_VERSION_TENSOR_STEPS
                                          : CHECKPOINT_FORMAT_VERSION);
    h5_attr_string(f, "kind", kind);
    h5_attr_string(f, "config", text);
    h5_attr_long(f, "step", step);
    /* on the cadence in force when written (ckpt_every may change at a resume) */
    if (!name) h5_attr_long(f, kPeriodicAttr, step % cfg->ckpt_every == 0);
    h5_attr_double(f, "metric", metric);
    if (cfg->data_spacing[0] > 0) h5_attr_doubles(f, "data_spacing", cfg->data_spacing, 3);
    write_run_shape(f, online);
    free(text);
    params_write_h5(f, "params", "", online, online->data, NULL);
    if (online->m) {
        params_write_h5(f, "adam_m", "", online, online->m, NULL);
        params_write_h5(f, "adam_v", "", online, online->v, NULL);
        h5_attr_long(f, "adam_steps", online->adam_steps);
        write_tensor_adam_steps(f, online);
    }
    if (target) params_write_h5(f, "target", "", target, target->data, NULL);
    if (buffers && buffers->count > 0) params_write_h5(f, "buffers", "", buffers, buffers->data, NULL);
    h5_commit(f, path);
    h5_unlock();
    if (!name) prune(run_dir, cfg->keep_ckpts, step);
}

/* The steps of run_dir's ckpt_<step>.h5 files (not .tmp), newest first; *n of them (malloc'd). */
static long *checkpoint_steps(const char *run_dir, int *n)
{
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d) return NULL;
    int cap = 16;
    long *steps = xmalloc((size_t)cap * sizeof(long));
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        size_t len = strlen(e->d_name);
        char check[64];
        /* Only complete files: a crash mid-write leaves ckpt_<step>.h5.tmp, never .h5. */
        if (len < 4 || strcmp(e->d_name + len - 3, ".h5") || sscanf(e->d_name, "ckpt_%ld", &s) != 1)
            continue;
        snprintf(check, sizeof check, "ckpt_%ld.h5", s);
        if (strcmp(check, e->d_name)) continue;   /* ckpt_best.h5, ckpt_007.h5 and the like */
        if (*n == cap) steps = xrealloc(steps, (size_t)(cap *= 2) * sizeof(long));
        steps[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++)   /* newest first */
        for (int j = i; j > 0 && steps[j] > steps[j - 1]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    return steps;
}

/* A checkpoint opened for reading under the HDF5 lock (io/h5util.h: the loader's threads may
 * be reading the data set meanwhile); close_locked closes it and releases the lock. */
static hid_t open_locked(const char *path, const char *what)
{
    h5_lock();
    return h5_open_read(path, what);
}

static void close_locked(hid_t f)
{
    CHECK_H5(H5Fclose(f));
    h5_unlock();
}

/* 0 when the checkpoint at path was written off schedule (attribute periodic = 0); 1 when
 * periodic, of an alice that did not mark them (no attribute), or unreadable (counted, as
 * before the attribute existed, rather than removed unread). */
static int checkpoint_periodic(const char *path)
{
    long periodic = 1;
    h5_lock();
    hid_t f = h5_try_open_read(path);
    if (f >= 0) {
        if (!h5_attr_read_long(f, kPeriodicAttr, &periodic)) periodic = 1;
        CHECK_H5(H5Fclose(f));
    }
    h5_unlock();
    return periodic != 0;
}

/* Up to `written` (the step just saved) keeps that checkpoint and the newest `keep` periodic
 * ones, and removes the rest: older periodic ones, and the ones written off schedule (a stop,
 * a preemption, the end of an earlier run), which exist to resume from and are superseded by
 * any newer checkpoint; counted among the kept ones, a requeued run's stop checkpoints had
 * pushed its periodic history out. The files are those checkpoint_steps lists: never
 * ckpt_best.h5, a .tmp or another name that merely starts like one. A newer file (one the
 * resume could not read and could not set aside) is neither counted nor removed: it must not
 * push this run's checkpoints out. */
static void prune(const char *run_dir, int keep, long written)
{
    if (keep <= 0) return;
    int n;
    long *steps = checkpoint_steps(run_dir, &n);
    int kept = 0;
    for (int i = 0; i < n; i++) {   /* newest first */
        if (steps[i] > written) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/ckpt_%ld.h5", run_dir, steps[i]);
        const int periodic = checkpoint_periodic(path);
        if (steps[i] == written) {
            kept += periodic;
            continue;
        }
        if (periodic && kept < keep) {
            kept++;
            continue;
        }
        unlink(path);
    }
    free(steps);
}

/* 1 when path opens as an HDF5 file carrying the checkpoint format attribute and every object
 * in it opens (a file of the right size whose tail a crash zeroed opens, then fails a checksum
 * deeper down: it must be skipped here, not end the resume in HDF5's error trace). */
/* 1 when every tensor dataset of the checkpoint's groups matches its crc32 (those without one,
 * of an older alice, pass). */
static int tensor_data_intact(hid_t f)
{
    static const char *const groups[] = {"params", "adam_m", "adam_v", "target", "buffers"};
    int ok = 1;
    float *buf = NULL;
    size_t cap = 0;
    for (size_t gi = 0; ok && gi < sizeof groups / sizeof groups[0]; gi++) {
        if (!h5_exists(f, groups[gi])) continue;
        hid_t g = CHECK_H5(H5Gopen2(f, groups[gi], H5P_DEFAULT));
        H5G_info_t info;
        CHECK_H5(H5Gget_info(g, &info));
        for (hsize_t i = 0; ok && i < info.nlinks; i++) {
            char name[PARAM_NAME_MAX + 32], full[2 * PARAM_NAME_MAX + 64];
            const ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                                   sizeof name, H5P_DEFAULT);
            if (len < 0 || (size_t)len >= sizeof name) continue;
            snprintf(full, sizeof full, "%s/%s", groups[gi], name);
            long long dims[PARAM_MAX_DIMS + 3];
            const int nd = h5_shape(f, full, PARAM_MAX_DIMS + 3, dims);
            size_t n = 1;
            for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
            if (n > cap) {
                free(buf);
                buf = xmalloc((cap = n) * sizeof(float));
            }
            h5_read_floats(f, full, buf, n);
            ok = tensor_crc_ok(f, full, buf, n);
            if (!ok)
                log_warn("tensor %s fails its CRC-32 (its data changed after it was written)",
                         full);
        }
        CHECK_H5(H5Gclose(g));
    }
    free(buf);
    return ok;
}

int checkpoint_intact(const char *path)
{
    h5_lock();
    errno = 0;
    hid_t f = h5_try_open_read(path);
    if (f < 0) h5_refuse_locked(path, "checkpoint", errno);   /* locked: not damaged */
    int ok = 0;
    if (f >= 0) {
        char *fmt = h5_attr_read_string(f, "format");
        ok = fmt && !strcmp(fmt, CHECKPOINT_FORMAT_NAME) && h5_all_objects_open(f) &&
             tensor_data_intact(f);
        free(fmt);
        CHECK_H5(H5Fclose(f));
    }
    h5_unlock();
    return ok;
}

long checkpoint_find_latest(const char *run_dir, char *path, size_t n)
{
    int count;
    long *steps = checkpoint_steps(run_dir, &count);
    long found = -1;
    int damaged = 0;   /* the newest ones, skipped */
    for (int i = 0; i < count && found < 0; i++) {
        snprintf(path, n, "%s/ckpt_%ld.h5", run_dir, steps[i]);
        if (checkpoint_intact(path)) found = steps[i];
        else {
            damaged++;
            log_warn("skipping %s: not a complete checkpoint (truncated or damaged, e.g. by a "
                     "node crash while it was written); trying the one before", path);
        }
    }
    /* Set aside once an intact one is found, so that pruning never counts them among the
     * checkpoints kept (it would delete the good ones this run writes, and the one it resumes
     * from). With none intact they stay, and every start is refused until someone looks:
     * renamed, a second start would begin from step 0 in silence. */
    for (int i = 0; found >= 0 && i < damaged; i++) {
        char bad[4200], aside[4300];
        snprintf(bad, sizeof bad, "%s/ckpt_%ld.h5", run_dir, steps[i]);
        snprintf(aside, sizeof aside, "%s.damaged", bad);
        if (rename(bad, aside) == 0)
            log_warn("set %s aside as %s", bad, aside);
        else
            log_warn("cannot set %s aside (%s): remove it, or pruning counts it among the "
                     "checkpoints kept", bad, strerror(errno));
    }
    free(steps);
    if (found < 0 && n) path[0] = '\0';
    return found;
}

void checkpoint_remove_stale_tmp(const char *run_dir)
{
    DIR *d = opendir(run_dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long s;
        char expect[64];
        if (sscanf(e->d_name, "ckpt_%ld", &s) == 1)
            snprintf(expect, sizeof expect, "ckpt_%ld.h5.tmp", s);
        else
            snprintf(expect, sizeof expect, "ckpt_best.h5.tmp");
        if (strcmp(expect, e->d_name)) continue;   /* only the names checkpoint_save writes */
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", run_dir, e->d_name);
        struct stat st;
        const double mb = stat(path, &st) == 0 ? (double)st.st_size / 1048576.0 : 0.0;
        if (unlink(path) == 0)
            log_warn("removed %s (%.1f MB): a checkpoint an earlier run began and never finished "
                     "(killed while writing it); nothing reads it", path, mb);
        else
            log_warn("cannot remove %s, a checkpoint left half-written by an earlier run: %s",
                     path, strerror(errno));
    }
    closedir(d);
}

long checkpoint_latest_step(const char *run_dir)
{
    int count;
    long *steps = checkpoint_steps(run_dir, &count);
    long latest = count > 0 ? steps[0] : -1;
    free(steps);
    return latest;
}

/* The steps done that checkpoint f holds: one number, or the file is no checkpoint to go on
 * from (resuming at step 0 with its weights would retrain what they learnt). */
static long read_step(hid_t f, const char *path)
{
    long step = 0;
    if (!h5_attr_read_long(f, "step", &step) || step < 0)
        alice_die("%s: no step attribute holding one non-negative number; the checkpoint is "
                  "damaged or not written by alice (resume from another one)", path);
    return step;
}

long checkpoint_step(const char *path)
{
    hid_t f = open_locked(path, "checkpoint");
    const long step = read_step(f, path);
    close_locked(f);
    return step;
}

double checkpoint_metric(const char *path)
{
    hid_t f = open_locked(path, "checkpoint");
    double metric = NAN;
    if (!h5_attr_read_double(f, "metric", &metric)) metric = NAN;
    close_locked(f);
    return metric;
}

long checkpoint_stored_config(const char *path, Config *out)
{
    char *text = checkpoint_config_text(path);
    config_from_text(out, text, path);
    free(text);
    return checkpoint_step(path);
}

int checkpoint_run_shape(const char *path, CheckpointRunShape *shape)
{
    hid_t f = open_locked(path, "checkpoint");
    char *backend = h5_attr_read_string(f, "backend");
    const int known = h5_attr_read_long(f, "ranks", &shape->ranks) &&
                      h5_attr_read_long(f, "threads", &shape->threads) && backend;
    snprintf(shape->backend, sizeof shape->backend, "%s", known ? backend : "");
    free(backend);
    close_locked(f);
    return known;
}

/* Said, not refused: a resume on other ranks, threads or backend is legitimate (a job moved
 * to a bigger allocation) but no longer the run the checkpoint began. Checkpoints written
 * before these attributes existed say nothing. */
/* batch_then/now: samples per rank and step (batch x accum_steps) then and now. */
static void warn_run_shape_change(const char *path, const char *backend, long batch_then,
                                  long batch_now)
{
    CheckpointRunShape then;
    if (!checkpoint_run_shape(path, &then)) return;
    const CheckpointRunShape now = current_run_shape(backend);
    if (then.ranks != now.ranks && batch_then * then.ranks != batch_now * now.ranks)
        log_warn("%s was written by %ld rank(s), this run has %ld: the global batch (batch x "
                 "ranks x accum_steps) goes from %ld to %ld, and the data order goes on from "
                 "sample step x %ld, so some samples are drawn again or skipped once", path,
                 then.ranks, now.ranks, batch_then * then.ranks, batch_now * now.ranks,
                 batch_now * now.ranks);
    else if (then.ranks != now.ranks)
        log_warn("%s was written by %ld rank(s), this run has %ld: the global batch stays %ld, "
                 "the same samples per step (batch or accum_steps changed with the ranks)", path,
                 then.ranks, now.ranks, batch_now * now.ranks);
    if (strcmp(then.backend, now.backend))
        log_warn("%s was written on the %s backend, this run uses %s: the losses go on from "
                 "the same state but not bit for bit as the first run's would have", path,
                 then.backend, now.backend);
    else if (!strcmp(now.backend, "cpu") && then.threads != now.threads)
        log_warn("%s was written with %ld CPU thread(s) per rank, this run has %ld: sums split "
                 "across threads in another order, so the losses are not bit for bit the first "
                 "run's (set threads = %ld to repeat them)", path, then.threads, now.threads,
                 then.threads);
}

/* Appends key (len characters) to the ", "-separated list in buf (n bytes), when it fits. */
static void append_key(char *buf, size_t n, const char *key, size_t len)
{
    const size_t used = strlen(buf);
    if (used + len + 3 < n)
        snprintf(buf + used, n - used, "%s%.*s", used ? ", " : "", (int)len, key);
}

void checkpoint_keys_absent(const char *path, char *absent, size_t n)
{
    Config defaults;
    config_defaults(&defaults);
    char *all = config_to_text(&defaults), *stored = checkpoint_config_text(path);
    if (n) absent[0] = '\0';
    for (const char *a = all; *a;) {
        const size_t la = strcspn(a, "\n"), ka = strcspn(a, " =");
        int found = 0;
        for (const char *b = stored; *b && !found;) {
            b += strspn(b, " \t");
            found = !strncmp(b, a, ka) && (b[ka] == ' ' || b[ka] == '=' || b[ka] == '\t');
            b += strcspn(b, "\n");
            b += *b == '\n';
        }
        if (!found && a[0] != '#') append_key(absent, n, a, ka);
        a += la + (a[la] == '\n');
    }
    free(all);
    free(stored);
}

/* A checkpoint of an older alice lacks the keys added since; parsing it gave them today's
 * defaults, so the comparison above cannot see that the run began without them (e.g.
 * teacher_decoder: the teacher's path changed with its arrival). Named here. */
static void warn_keys_unknown_then(const char *path)
{
    char absent[1024];
    checkpoint_keys_absent(path, absent, sizeof absent);
    if (absent[0])
        log_warn("%s was written by an older alice without the keys %s: the resumed run uses "
                 "their current values (`alice config` shows them), which may not be how the "
                 "run began", path, absent);
}

long checkpoint_check_resumable(const char *path, const char *kind, const Config *cfg,
                                const char *backend)
{
    char *stored_kind = checkpoint_kind(path);
    if (strcmp(stored_kind, kind))
        alice_die("%s was written by alice %s, this is alice %s: resume it with the same "
                  "command, or give this run another run_dir", path,
                  stored_kind[0] ? stored_kind : "(unknown)", kind);
    free(stored_kind);
    Config stored;
    const long step = checkpoint_stored_config(path, &stored);
    /* mae's tensors are a subset of alice's: the shapes alone would let one resume the other
     * (fine-tuning reads no method: a job file shared with pre-training may set any) */
    if (!strcmp(kind, "pretrain") && strcmp(stored.method, cfg->method))
        alice_die("%s is a method = %s run, this run has method = %s: resume it with the same "
                  "method, or give this run another run_dir", path, stored.method, cfg->method);
    /* Another objective, and DINO's centres exist under one of the two only (a cosine run
     * resumed with dino had no centres to read; the reverse dropped them in silence). */
    if (!strcmp(kind, "pretrain") && !strcmp(cfg->method, "alice") &&
        strcmp(stored.align_loss, cfg->align_loss))
        alice_die("%s was trained with align_loss = %s, this run has align_loss = %s: the "
                  "alignment losses (and DINO's centres) would change mid-run; keep align_loss = "
                  "%s to resume it, or give this run another run_dir", path, stored.align_loss,
                  cfg->align_loss, stored.align_loss);
    /* Fine-tuning's validations (val.csv, ckpt_best.h5) are of its held-out fold: on another
     * fold the best would be chosen across two folds' scores, and the model selected on one
     * would have trained on the other's cases. */
    if (!strcmp(kind, "finetune") && stored.fold != cfg->fold)
        alice_die("%s was fine-tuned with fold = %d, this run has fold = %d: %s; keep fold = %d "
                  "to resume it, or give this run another run_dir (one per fold, as "
                  "slurm/finetune.sbatch does)", path, stored.fold, cfg->fold,
                  stored.fold < 0 ? "it trained on every case, without validation"
                                  : "its validations and ckpt_best.h5 are of that fold",
                  stored.fold);
    /* The head counts change no tensor's shape, only the split of every attention: the
     * weights would be read under another meaning. (Every other model key changes a shape or
     * the tensor list, which the load refuses.) */
    const int casa_attention = !strcmp(stored.casa_layer, "transformer");   /* else unread */
    const struct { const char *key; long then, now; } heads[] = {
        {"heads", stored.heads, cfg->heads},
        {"dec_heads", stored.dec_heads, cfg->dec_heads},
        {"casa_heads", stored.casa_heads, casa_attention ? cfg->casa_heads : stored.casa_heads},
    };
    const int keys = strcmp(kind, "finetune") ? 3 : 1;   /* UNETR has the encoder's alone */
    for (int i = 0; i < keys; i++)
        if (heads[i].then != heads[i].now)
            alice_die("%s was trained with %s = %ld, this run has %s = %ld: the weights would "
                      "split into other attention heads; keep %s = %ld to resume it, or give "
                      "this run another run_dir", path, heads[i].key, heads[i].then,
                      heads[i].key, heads[i].now, heads[i].key, heads[i].then);
    /* Other changes are allowed (a lower lr after a divergence), but said: the resumed run is
     * then not the run the checkpoint began. */
    char *now = config_to_text(cfg), *then = config_to_text(&stored);
    static const char *const bookkeeping[] = {"run_dir", "log_every", "ckpt_every",
                                              "keep_ckpts", "threads", NULL};
    char changed[1024] = "";
    for (char *a = now, *b = then; *a && *b;) {
        size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
        size_t ka = strcspn(a, " =");
        int skip = 0;
        for (int i = 0; bookkeeping[i]; i++)
            skip |= strlen(bookkeeping[i]) == ka && !strncmp(a, bookkeeping[i], ka);
        if (!skip && (la != lb || strncmp(a, b, la))) append_key(changed, sizeof changed, a, ka);
        a += la + (a[la] == '\n');
        b += lb + (b[lb] == '\n');
    }
    if (changed[0])
        log_warn("resuming %s with changed keys: %s (the stored values are in the checkpoint's "
                 "config attribute)", path, changed);
    warn_keys_unknown_then(path);
    warn_run_shape_change(path, backend, (long)stored.batch * stored.accum_steps,
                          (long)cfg->batch * cfg->accum_steps);
    if (stored.steps != cfg->steps)
        log_warn("steps changed from %ld to %ld: the learning-rate cosine and the EMA momentum "
                 "(and the weight decay's cosine) follow steps, so they jump at step %ld (the "
                 "run is then not the schedule "
                 "it began; keep steps = %ld to continue that one)", stored.steps,
                 cfg->steps, step, stored.steps);
    free(now);
    free(then);
    return step;
}

static void check_format(hid_t f, const char *path)
{
    char *fmt = h5_attr_read_string(f, "format");
    if (!fmt || strcmp(fmt, CHECKPOINT_FORMAT_NAME))
        alice_die("%s is not an alice checkpoint (no format attribute '%s')", path, CHECKPOINT_FORMAT_NAME);
    free(fmt);
    long version = 0;
    if (!h5_attr_read_long(f, "format_version", &version) ||
        (version != CHECKPOINT_FORMAT_VERSION && version != CHECKPOINT_FORMAT_VERSION_TENSOR_STEPS))
        alice_die("%s: checkpoint format version %ld, this alice reads versions %d-%d (written by "
                  "another alice version)", path, version, CHECKPOINT_FORMAT_VERSION,
                  CHECKPOINT_FORMAT_VERSION_TENSOR_STEPS);
}

/* Ends the job when the checkpoint's group holds a tensor the model lacks: a smaller model
 * (depth = 3 resuming a depth = 4 run) finds each of its own tensors there, and would
 * silently drop the trained rest. */
static void refuse_extra_tensors(hid_t f, const char *path, const char *group, const ParamSet *ps)
{
    if (!h5_exists(f, group))
        alice_die("checkpoint %s was written by a different model: it has no group /%s, which "
                  "this run's model needs (check method, align_loss and the model keys against "
                  "the checkpoint's config: alice info %s), or give this run another run_dir",
                  path, group, path);
    hid_t g = CHECK_H5(H5Gopen2(f, group, H5P_DEFAULT));
    H5G_info_t info;
    CHECK_H5(H5Gget_info(g, &info));
    for (hsize_t i = 0; i < info.nlinks && info.nlinks > (hsize_t)ps->count; i++) {
        char name[PARAM_NAME_MAX + 32];
        const ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name,
                                               sizeof name, H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof name) continue;   /* longer than any tensor name */
        int known = 0;
        for (int t = 0; t < ps->count && !known; t++) known = !strcmp(ps->info[t].name, name);
        if (!known)
            alice_die("checkpoint %s was written by a larger model: it has tensor %s/%s, which "
                      "this run's model lacks (a smaller depth, dec_depth or another model key): "
                      "set the model keys as in the checkpoint's config (alice info %s), or give "
                      "this run another run_dir", path, group, name, path);
    }
    CHECK_H5(H5Gclose(g));
}

static void read_set(hid_t f, const char *path, const char *group, const ParamSet *ps, float *buf, float *host)
{
    refuse_extra_tensors(f, path, group, ps);
    memset(host, 0, ps->total * sizeof(float));
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        char name[PARAM_NAME_MAX + 32];
        snprintf(name, sizeof name, "%s/%s", group, t->name);
        if (!h5_exists(f, name))
            alice_die("checkpoint %s was written by a different model: it has no tensor %s "
                      "(check method and model keys against the checkpoint's config)", path, name);
        long long dims[PARAM_MAX_DIMS + 3];
        int nd = h5_shape(f, name, PARAM_MAX_DIMS + 3, dims);
        int same = nd == t->ndim;
        for (int d = 0; same && d < nd; d++) same = dims[d] == t->shape[d];
        if (!same)
            alice_die("checkpoint %s was written by a different model: tensor %s has another "
                      "shape (check embed_dim, depth, patch and the other model keys)", path, name);
        h5_read_floats(f, name, host + t->offset, t->numel);
        if (!tensor_crc_ok(f, name, host + t->offset, t->numel)) refuse_damaged_tensor(path, name);
        refuse_nonfinite_tensor(path, name, host + t->offset, t->numel);
    }
    ps->be->upload(buf, host, ps->total * sizeof(float));
}

long checkpoint_load(const char *path, ParamSet *online, ParamSet *target)
{
    return checkpoint_load_state(path, online, target, NULL);
}

long checkpoint_load_state(const char *path, ParamSet *online, ParamSet *target, ParamSet *buffers)
{
    hid_t f = open_locked(path, "checkpoint");
    check_format(f, path);
    const long step = read_step(f, path);
    float *host = xmalloc(online->total * sizeof(float));
    read_set(f, path, "params", online, online->data, host);
    if (online->m) {
        read_set(f, path, "adam_m", online, online->m, host);
        read_set(f, path, "adam_v", online, online->v, host);
        /* written before skipped steps were told apart: every step had updated the moments */
        if (!h5_attr_read_long(f, "adam_steps", &online->adam_steps)) online->adam_steps = step;
        read_tensor_adam_steps(f, path, online);
    }
    if (target) read_set(f, path, "target", target, target->data, host);
    free(host);
    if (buffers && buffers->count > 0) {
        float *bhost = xmalloc(buffers->total * sizeof(float));
        read_set(f, path, "buffers", buffers, buffers->data, bhost);
        free(bhost);
    }
    close_locked(f);
    return step;
}

int checkpoint_load_matching(const char *path, ParamSet *ps, const char *from_prefix,
                             const char *to_prefix, int *candidates_out)
{
    hid_t f = open_locked(path, "pre-training checkpoint");
    check_format(f, path);
    float *host = xmalloc(ps->total * sizeof(float));
    ps->be->download(host, ps->data, ps->total * sizeof(float));
    int loaded = 0, candidates = 0;
    size_t tp = strlen(to_prefix);
    for (int i = 0; i < ps->count; i++) {
        const ParamInfo *t = &ps->info[i];
        if (strncmp(t->name, to_prefix, tp)) continue;
        candidates++;
        char name[2 * PARAM_NAME_MAX];
        snprintf(name, sizeof name, "params/%s%s", from_prefix, t->name + tp);
        if (!h5_exists(f, name)) continue;
        long long dims[PARAM_MAX_DIMS + 3];
        int nd = h5_shape(f, name, PARAM_MAX_DIMS + 3, dims);
        int same = nd == t->ndim;
        for (int d = 0; same && d < nd; d++) same = dims[d] == t->shape[d];
        if (!same)
            alice_die("%s: tensor %s has a different shape than %s of this model (check that "
                      "embed_dim, depth, heads, mlp_dim and patch match the pre-training config)",
                      path, name + 7, t->name);
        h5_read_floats(f, name, host + t->offset, t->numel);
        if (!tensor_crc_ok(f, name, host + t->offset, t->numel)) refuse_damaged_tensor(path, name);
        refuse_nonfinite_tensor(path, name, host + t->offset, t->numel);
        loaded++;
    }
    ps->be->upload(ps->data, host, ps->total * sizeof(float));
    free(host);
    close_locked(f);
    log_info("loaded %d of %d %s* tensors from %s (%d initialised at random)", loaded, candidates,
             to_prefix, path, candidates - loaded);
    if (candidates_out) *candidates_out = candidates;
    return loaded;
}

char *checkpoint_kind(const char *path)
{
    hid_t f = open_locked(path, "checkpoint");
    check_format(f, path);
    char *kind = h5_attr_read_string(f, "kind");
    close_locked(f);
    if (!kind) {
        kind = xmalloc(1);
        kind[0] = '\0';
    }
    return kind;
}

int checkpoint_data_spacing(const char *path, double spacing[3])
{
    hid_t f = open_locked(path, "checkpoint");
    check_format(f, path);
    const int known = h5_attr_read_doubles(f, "data_spacing", spacing, 3);
    close_locked(f);
    return known;
}

char *checkpoint_config_text(const char *path)
{
    hid_t f = open_locked(path, "checkpoint");
    check_format(f, path);
    char *text = h5_attr_read_string(f, "config");
    close_locked(f);
    if (!text) alice_die("checkpoint %s has no config attribute", path);
    return text;
}

void checkpoint_check_encoder_source(const char *path, const Config *cfg)
{
    char *kind = checkpoint_kind(path);
    if (strcmp(kind, "pretrain"))
        alice_die("%s is a %s checkpoint, not a pre-training one: give the ckpt_<step>.h5 of an "
                  "alice pretrain run (to continue a fine-tuning run, run it again in its "
                  "run_dir, or pass --resume)", path, kind[0] ? kind : "kindless");
    free(kind);
    Config stored;
    checkpoint_stored_config(path, &stored);
    /* The shapes check the widths on load; the head count changes no shape but the split of
     * every attention, so it must match too. */
    const struct { const char *key; long then, now; } keys[] = {
        {"patch", stored.patch, cfg->patch},       {"embed_dim", stored.embed_dim, cfg->embed_dim},
        {"depth", stored.depth, cfg->depth},       {"heads", stored.heads, cfg->heads},
        {"mlp_dim", stored.mlp_dim, cfg->mlp_dim},
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (keys[i].then != keys[i].now)
            alice_die("%s was pre-trained with %s = %ld, this run has %s = %ld: set "
                      "the encoder keys (patch, embed_dim, depth, heads, mlp_dim) as in the "
                      "pre-training job", path, keys[i].key, keys[i].then, keys[i].key,
                      keys[i].now);
}

int checkpoint_load_encoder(const char *path, ParamSet *ps, const char *to_prefix,
                            const Config *cfg)
{
    checkpoint_check_encoder_source(path, cfg);
    int candidates = 0;
    const int loaded = checkpoint_load_matching(path, ps, "encoder.", to_prefix, &candidates);
    /* the encoder keys match (checked above), so a tensor short is another version's layout */
    if (loaded < candidates)
        alice_die("%s holds %d of the encoder's %d tensors (params/encoder.*): the rest would "
                  "start from random weights; give a pre-training checkpoint of this alice "
                  "version", path, loaded, candidates);
    return loaded;
}

/* Checkpoints: ckpt_<step>.h5 in the run directory (layout in docs/FORMAT.md): the resolved
 * configuration, the step (masks, crops and the loader position are all keyed by it, so it is
 * the whole RNG and loader state), one dataset per named tensor for the parameters
 * (/params/<name>), AdamW moments (/adam_m, /adam_v), the EMA target (/target/<name>) and
 * non-trainable state such as DINO's centers (/buffers/<name>).
 * Written by rank 0 under a temporary name and renamed, so a checkpoint on disk is always
 * complete. */
#ifndef ALICE_CHECKPOINT_H
#define ALICE_CHECKPOINT_H

#include <stddef.h>

#include <hdf5.h>

#include "core/config.h"
#include "nn/params.h"

/* Format identity, stored as root attributes "format" and "format_version". */
#define CHECKPOINT_FORMAT_NAME "alice-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1
/* Written instead when some tensor's own AdamW t differs from the file's adam_steps
 * (freeze_last_layer): an alice that predates the per-tensor attribute would resume it with the
 * wrong bias corrections, so it must refuse the file; this one reads both. */
#define CHECKPOINT_FORMAT_VERSION_TENSOR_STEPS 2

/* Writes <run_dir>/ckpt_<step>.h5 (and removes periodic ones beyond cfg->keep_ckpts).
 * kind: "pretrain" or "finetune"; target may be NULL. Extra scalar metadata: best metric. */
void checkpoint_save(const char *run_dir, const char *name, long step, const Config *cfg,
                     const char *kind, const ParamSet *online, const ParamSet *target,
                     double metric);
/* The same with non-trainable state: buffers (may be NULL or empty) go to /buffers/<name>. */
void checkpoint_save_state(const char *run_dir, const char *name, long step, const Config *cfg,
                           const char *kind, const ParamSet *online, const ParamSet *target,
                           const ParamSet *buffers, double metric);
/* Latest intact ckpt_<step>.h5 in run_dir (one that opens and carries the checkpoint format;
 * damaged newer ones are skipped with a warning): its path in `path` and its step, or -1. */
long checkpoint_find_latest(const char *run_dir, char *path, size_t n);
/* 1 when path opens as an HDF5 file with the checkpoint format attribute and every object in
 * it opens; 0 for a missing, truncated or damaged file (no error, no HDF5 trace). */
int checkpoint_intact(const char *path);
/* Highest step of any ckpt_<step>.h5 in run_dir, intact or not; -1 when there is none. */
long checkpoint_latest_step(const char *run_dir);
/* Removes the ckpt_<step>.h5.tmp and ckpt_best.h5.tmp files a killed run left half-written in
 * run_dir (an error exit removes its own; SIGKILL or a node crash cannot), saying so: nothing
 * reads them, and at the paper preset each holds about 1.6 GB. Rank 0, before a run starts. */
void checkpoint_remove_stale_tmp(const char *run_dir);
/* Ends the job unless the checkpoint at path can resume a run of `kind` ("pretrain",
 * "finetune") with cfg: the same kind and method (tensor shapes are checked on load); other
 * keys that differ from the stored configuration are listed in a warning, and so are a change
 * of rank count, backend (the name of the resuming run's, `backend`) or CPU thread count
 * against the checkpoint's ranks/threads/backend attributes. Returns its step. */
long checkpoint_check_resumable(const char *path, const char *kind, const Config *cfg,
                                const char *backend);
/* Restores parameters, moments and target; every tensor of the model must be present with
 * the same shape (a clear error names the first one that is not). Returns the step. */
long checkpoint_load(const char *path, ParamSet *online, ParamSet *target);
/* The same, also restoring buffers (when not NULL and not empty) from /buffers/<name>. */
long checkpoint_load_state(const char *path, ParamSet *online, ParamSet *target, ParamSet *buffers);
/* Loads tensors by name mapping: every tensor of ps whose name starts with to_prefix is looked
 * up as from_prefix + rest in /params of the file. Shape mismatches are errors; reports the
 * counts of loaded and initialised tensors (rank 0) and returns the number loaded;
 * *candidates_out (may be NULL) gets the number of ps's tensors under to_prefix. */
int checkpoint_load_matching(const char *path, ParamSet *ps, const char *from_prefix,
                             const char *to_prefix, int *candidates_out);
/* Writes the tensors of ps held in buf (ps->data, ->grad, ->m or ->v, backend memory) as
 * datasets <group>/<prefix><name> with their shapes and a `decay` attribute; only the tensors
 * whose name passes keep (NULL: all). Checkpoints and the parity dumps of the tests use it. */
void params_write_h5(hid_t file, const char *group, const char *prefix, const ParamSet *ps,
                     const float *buf, int (*keep)(const char *name));
/* Ends the job unless path is a pre-training checkpoint whose encoder keys (patch, embed_dim,
 * depth, heads, mlp_dim) equal cfg's: what fine-tuning's pretrained = ... must be. */
void checkpoint_check_encoder_source(const char *path, const Config *cfg);
/* The encoder of pre-training checkpoint path (checked by checkpoint_check_encoder_source)
 * into ps's tensors named to_prefix + the checkpoint's "encoder." names; ends the job naming
 * the file when it holds fewer of them than ps has (another version's layout, or a damaged
 * file: the rest would stay at random weights). Returns the count loaded. */
int checkpoint_load_encoder(const char *path, ParamSet *ps, const char *to_prefix,
                            const Config *cfg);
/* 1 with the voxel spacing of the packed data set the checkpoint's run trained on (attribute
 * data_spacing; Config.data_spacing); 0 when it does not say (synthetic data, or written before
 * the attribute existed). */
int checkpoint_data_spacing(const char *path, double spacing[3]);
/* The checkpoint's kind attribute ("pretrain", "finetune"; "" when absent), malloc'd. */
char *checkpoint_kind(const char *path);
/* The configuration text stored in a checkpoint (malloc'd). */
char *checkpoint_config_text(const char *path);
/* That configuration parsed into out (today's defaults for keys it lacks); returns the step. */
long checkpoint_stored_config(const char *path, Config *out);
/* The steps done that checkpoint path holds (its step attribute); ends the job naming the
 * file when it has none. */
long checkpoint_step(const char *path);
/* Its metric attribute (fine-tuning: the run's best validation mean Dice up to its step, -1
 * before the first), or NaN where it has none. */
double checkpoint_metric(const char *path);
/* How the run that wrote a checkpoint computed its steps: what a resume must keep for the
 * losses to continue bit for bit (the rank count also sets the global batch). */
typedef struct {
    long ranks, threads;
    char backend[16];
} CheckpointRunShape;
/* 1 with *shape filled from the checkpoint's ranks/threads/backend attributes; 0 for a
 * checkpoint written before they existed. */
int checkpoint_run_shape(const char *path, CheckpointRunShape *shape);
/* The keys of this alice that the checkpoint's stored configuration lacks (it was written by
 * an older alice; parsing gives them today's defaults), ", "-separated into absent (n bytes;
 * "" when none). */
void checkpoint_keys_absent(const char *path, char *absent, size_t n);

#endif

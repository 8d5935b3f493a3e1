/* `alice infer`: sliding-window UNETR prediction of the cases of a packed data set, mapped back
 * to each case's original grid and affine and written as uint8 NIfTI <out>/<case>.nii.gz
 * (with --probs also the class probabilities, float32 or uint8 <out>/<case>_probs.nii.gz).
 * Ranks split the cases (case j of the selection goes to rank j % size). */
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nifti1.h>

#include "cli/commands.h"
#include "core/fsutil.h"
#include "eval/prediction_out.h"
#include "core/check.h"
#include "core/log.h"
#include "core/timer.h"
#include "data/crop.h"
#include "dataset.h"
#include "eval/sliding_window.h"
#include "geometry.h"
#include "models/unetr.h"
#include "nifti_io.h"
#include "train/checkpoint.h"
#include "train/dist.h"
#include "train/train_common.h"

static void usage(void)
{
    printf("usage: alice infer --checkpoint CKPT --data dataset.h5 --out DIR [--cases fold:K|all]\n"
           "                   [--probs [--probs-type float32|uint8]] [key=value ...]\n"
           "  Predicts every selected case of a packed data set with the fine-tuned UNETR in CKPT\n"
           "  (its stored configuration; key=value overrides e.g. sw_overlap, batch, device; the\n"
           "  keys of the network and its input, crop, patch, widths, num_classes, window_lo/hi,\n"
           "  are the checkpoint's and refused):\n"
           "  Gaussian-weighted sliding windows of the training crop (overlap sw_overlap), argmax,\n"
           "  mapped back to the case's original grid and affine, written as DIR/<case>.nii.gz\n"
           "  (uint8 labels, same shape and affine as the source image).\n"
           "  --cases fold:K   only the cases of fold K (default: all cases)\n"
           "  --allow-spacing-mismatch  predict although the data set's voxel spacing is not the\n"
           "                   one the model was fine-tuned at (the checkpoint's data_spacing;\n"
           "                   refused otherwise: the segmentation degrades silently)\n"
           "  --probs          also write DIR/<case>" PREDICTION_PROBS_SUFFIX ".nii.gz: float32, 4-D\n"
           "                   (X, Y, Z, K classes), same grid and affine as the labels; voxel\n"
           "                   [x,y,z,k] = softmax over k of the Gaussian-blended window logits\n"
           "                   (the label is its argmax), mapped to the original grid by the same\n"
           "                   nearest neighbour as the labels; voxels outside the packed body box\n"
           "                   get probability 1 for class 0. Size: 4 x K bytes per voxel.\n"
           "  --probs-type T   how --probs stores them (implies --probs): float32 (default), or\n"
           "                   uint8: round(255 p) with the header's scl_slope = 1/255, so readers\n"
           "                   that apply the scaling (nibabel get_fdata, ITK, FSL) see p within\n"
           "                   1/510; 1 x K bytes per voxel. Where two classes round to the same\n"
           "                   value the stored argmax can differ from the label file, which is\n"
           "                   the prediction.\n");
}

/* The value line "key = value" of key in config text, or NULL; *len its length. */
static const char *key_line(const char *text, const char *key, size_t *len)
{
    const size_t k = strlen(key);
    for (const char *l = text; *l; l += strcspn(l, "\n") + (l[strcspn(l, "\n")] == '\n')) {
        if (!strncmp(l, key, k) && (l[k] == ' ' || l[k] == '=')) {
            *len = strcspn(l, "\n");
            return l;
        }
    }
    return NULL;
}

/* Keys that define the network the checkpoint holds or the input it was trained on: an
 * override of one runs another network than the one fine-tuned. crop changes no weight's shape
 * (the window, token grid and position table do change), so the load would not refuse it; the
 * written predictions would name the checkpoint alone. */
static void refuse_model_overrides(const char *ckpt, const Config *stored, const Config *cfg)
{
    static const char *const model_keys[] = {"crop", "patch", "embed_dim", "depth", "heads",
                                             "mlp_dim", "feature_size", "num_classes",
                                             "window_lo", "window_hi", NULL};
    char *then = config_to_text(stored), *now = config_to_text(cfg);
    for (int i = 0; model_keys[i]; i++) {
        size_t lt = 0, ln = 0;
        const char *t = key_line(then, model_keys[i], &lt), *n = key_line(now, model_keys[i], &ln);
        if (t && n && (lt != ln || strncmp(t, n, lt)))
            alice_die("alice infer: %.*s, but %s was fine-tuned with %.*s: the network would see "
                      "other inputs than it was trained on (or be another network); drop that "
                      "key=value: infer uses the checkpoint's own", (int)ln, n, ckpt, (int)lt, t);
    }
    free(then);
    free(now);
}

/* The model sees voxels at the spacing it was fine-tuned at, or a data set repacked to it: a
 * CT packed at another spacing shows organs at another size in voxels and is segmented worse
 * without any error (MONAI's bundles fix the spacing in their inference transforms for this). */
static void check_spacing(const char *ckpt, const char *data, const Dataset *ds,
                          const Config *cfg, int allow_mismatch)
{
    double trained[3];
    float packed[3];
    dataset_spacing(ds, packed);
    if (!checkpoint_data_spacing(ckpt, trained)) {
        if (strcmp(cfg->data, "synthetic") != 0)
            log_warn("%s does not record the voxel spacing it was fine-tuned at (written before "
                     "checkpoints did): make sure %s (%g,%g,%g mm) was packed at that spacing",
                     ckpt, data, packed[0], packed[1], packed[2]);
        return;
    }
    const double packed_mm[3] = {packed[0], packed[1], packed[2]};
    if (spacing_equal(packed_mm, trained)) return;
    if (allow_mismatch) {
        log_warn("%s is packed at %g,%g,%g mm, the model was fine-tuned at %g,%g,%g mm: predicting "
                 "anyway (--allow-spacing-mismatch)", data, packed[0], packed[1], packed[2],
                 trained[0], trained[1], trained[2]);
        return;
    }
    alice_die("%s is packed at %g,%g,%g mm but %s was fine-tuned on data at %g,%g,%g mm: repack "
              "the cases with `alice pack ... spacing=%g,%g,%g`, or pass "
              "--allow-spacing-mismatch to predict anyway", data, packed[0], packed[1], packed[2],
              ckpt, trained[0], trained[1], trained[2], trained[0], trained[1], trained[2]);
}

static NiftiFrameStorage probs_storage_named(const char *name)
{
    if (!strcmp(name, "float32")) return NIFTI_FRAMES_FLOAT32;
    if (!strcmp(name, "uint8")) return NIFTI_FRAMES_UINT8_UNIT;
    alice_die("alice infer: --probs-type '%s' is not a storage type; use float32 or uint8", name);
}

int cmd_infer(int argc, char **argv)
{
    const char *ckpt = NULL, *data = NULL, *out = NULL, *select = "all";
    int want_probs = 0, allow_spacing_mismatch = 0;
    NiftiFrameStorage probs_storage = NIFTI_FRAMES_FLOAT32;
    char *overrides[256];
    int noverrides = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(); return 0; }
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc) ckpt = argv[++i];
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--cases") && i + 1 < argc) select = argv[++i];
        else if (!strcmp(argv[i], "--probs")) want_probs = 1;
        else if (!strcmp(argv[i], "--allow-spacing-mismatch")) allow_spacing_mismatch = 1;
        else if (!strcmp(argv[i], "--probs-type") && i + 1 < argc) {
            probs_storage = probs_storage_named(argv[++i]);
            want_probs = 1;
        }
        else if (argv[i][0] != '-' && strchr(argv[i], '=')) {
            if (noverrides == (int)(sizeof overrides / sizeof overrides[0]))
                alice_die("alice infer: more than %d key=value arguments",
                          (int)(sizeof overrides / sizeof overrides[0]));
            overrides[noverrides++] = argv[i];
        } else {
            alice_die("alice infer: unknown argument '%s' (see alice infer --help)", argv[i]);
        }
    }
    if (!ckpt || !data || !out || !out[0])
        alice_die("alice infer: --checkpoint, --data and --out are required (see alice infer --help)");
    const int fold = cli_case_fold("infer", select);

    char *kind = checkpoint_kind(ckpt);
    if (strcmp(kind, "finetune") != 0)
        alice_die("%s is a %s checkpoint: alice infer needs a fine-tuned UNETR (alice finetune's "
                  "ckpt_best.h5 or ckpt_<step>.h5)", ckpt, kind[0] ? kind : "kindless");
    free(kind);
    Config cfg, stored;
    checkpoint_stored_config(ckpt, &cfg);
    stored = cfg;
    for (int i = 0; i < noverrides; i++) {
        int k = 0;
        char **one = &overrides[i];
        cli_config_arg(&cfg, 1, one, &k);
    }
    refuse_model_overrides(ckpt, &stored, &cfg);
    /* keys inference reads nowhere: training's (the checkpoint is trained), the pre-training
     * method's, evaluation's and packing's; fold is --cases fold:K */
    static const char *const not_inference[] = {
        "lr", "lr_reference_batch", "min_lr", "warmup", "weight_decay", "weight_decay_schedule",
        "weight_decay_end", "beta1", "beta2", "adam_eps", "clip", "clip_mode", "on_nonfinite",
        "steps", "accum_steps", "ckpt_every", "log_every", "keep_ckpts", "pretrained",
        "layer_decay", "val_every", "crops_per_case", "pos_fraction", "crop_sampler",
        "class_ratios", "fold", "num_folds", "run_dir", "label_set", "eval_protocol", "spacing",
        NULL};
    cli_refuse_keys(&cfg, "infer", not_inference, "training, evaluation or packing");
    cli_refuse_keys(&cfg, "infer", cli_pretraining_keys, "pre-training");
    config_validate(&cfg);
    Dist dist;
    const AliceBackend *be = train_begin(&cfg, &dist);

    Dataset *ds = dataset_open(data);
    check_spacing(ckpt, data, ds, &cfg, allow_spacing_mismatch);
    const int total = dataset_num_cases(ds);
    int *cases = xmalloc((size_t)(total > 0 ? total : 1) * sizeof(int));
    int n = 0;
    for (int i = 0; i < total; i++)
        if (fold < 0 || dataset_case(ds, i)->fold == fold) cases[n++] = i;
    if (n == 0)
        alice_die("%s: no case selected by --cases %s (the data set has %d cases in %d folds)", data,
                  select, total, dataset_num_folds(ds));
    if (dist.rank == 0) make_dirs(out, "choose a writable --out");
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));

    UnetrModel model;
    unetr_init(&model, &cfg, be, cfg.batch, 0);
    const long ckpt_step = checkpoint_load(ckpt, &model.ps, NULL);
    /* Recorded in every prediction, so a score can be traced to its checkpoint. */
    char source[PREDICTION_SOURCE_LEN], *ckpt_abs = realpath(ckpt, NULL);
    snprintf(source, sizeof source, PREDICTION_SOURCE_INFER "%s (step %ld)",
             ckpt_abs ? ckpt_abs : ckpt,
             ckpt_step);
    free(ckpt_abs);
    log_info("infer: %s, UNETR %dx%d, window %dx%dx%d, overlap %.2f, %d cases on %d ranks -> %s%s",
             ckpt, cfg.depth, cfg.embed_dim, cfg.crop[0], cfg.crop[1], cfg.crop[2], cfg.sw_overlap,
             n, dist.size, out, want_probs ? " (labels and probabilities)" : "");
    SlidingWindow sw = {{cfg.crop[0], cfg.crop[1], cfg.crop[2]}, model.K, model.B, cfg.sw_overlap,
                        SW_SIGMA_SCALE, unetr_predict, &model, be};
    const HuWindow window = {cfg.window_lo, cfg.window_hi};
    double t_all = wall_seconds();
    for (int j = dist.rank; j < n; j += dist.size) {
        double t0 = wall_seconds();
        const DatasetCase *c = dataset_case(ds, cases[j]);
        Volume v;
        dataset_read_case(ds, cases[j], &v);
        size_t nv = volume_voxels(&v);
        float *img = xmalloc(nv * sizeof(float));
        for (size_t i = 0; i < nv; i++) img[i] = window_apply(window, v.image[i]);
        uint8_t *packed = xmalloc(nv);
        float *probs = want_probs ? xmalloc((size_t)model.K * nv * sizeof(float)) : NULL;
        long windows = sliding_window_argmax(&sw, img, v.dim, packed, probs);
        char path[4096], probs_path[4096];
        snprintf(path, sizeof path, "%s/%s.nii.gz", out, c->name);
        snprintf(probs_path, sizeof probs_path, "%s/%s" PREDICTION_PROBS_SUFFIX ".nii.gz", out, c->name);
        prediction_write_original(c, packed, probs, model.K, v.dim, (const double (*)[4])v.affine,
                                  path, want_probs ? probs_path : NULL, probs_storage, source);
        /* Every rank reports its own cases (log_info speaks for rank 0 only). */
        printf("  [rank %d] case %d/%d %s: packed %dx%dx%d, %ld windows, %.1f s -> %s (%dx%dx%d)\n",
                 dist.rank, j + 1, n, c->name, v.dim[0], v.dim[1], v.dim[2], windows,
                 wall_seconds() - t0, path, c->orig_dim[0], c->orig_dim[1], c->orig_dim[2]);
        fflush(stdout);
        free(probs);
        free(packed);
        free(img);
        volume_free(&v);
    }
    CHECK_MPI(MPI_Barrier(MPI_COMM_WORLD));
    log_info("infer done: %d cases in %.1f s, predictions in %s", n, wall_seconds() - t_all, out);
    unetr_free(&model);
    free(cases);
    dataset_close(ds);
    train_end(&dist);
    return 0;
}

#include "data/crop_sampler.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"

static void parse_class_ratios(CropSampler *s, const char *text)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        double r = strtod(p, &end);
        if (end == p || errno || !isfinite(r) || r < 0.0)
            alice_die("config key class_ratios = '%s': entry %d is not a non-negative number; "
                      "give num_classes (%d) comma-separated weights, background first, or leave "
                      "it empty for equal weights", text, n + 1, s->num_classes);
        if (n < s->num_classes) s->class_ratios[n] = (float)r;
        n++;
        while (*end == ' ' || *end == '\t') end++;
        if (*end == ',') end++;
        else if (*end)
            alice_die("config key class_ratios = '%s': unexpected '%c' after entry %d; separate "
                      "the weights by commas", text, *end, n);
        p = end;
    }
    if (n != s->num_classes)
        alice_die("config key class_ratios = '%s' has %d weights but num_classes = %d; give one "
                  "weight per class, background first (e.g. 1 for each), or leave it empty for "
                  "equal weights", text, n, s->num_classes);
    double sum = 0.0;
    for (int c = 0; c < n; c++) sum += s->class_ratios[c];
    if (!(sum > 0.0))
        alice_die("config key class_ratios = '%s': every weight is 0, so no crop centre can be "
                  "drawn; give at least one class a positive weight", text);
}

void crop_sampler_init(CropSampler *s, const char *kind, float pos_fraction,
                       const char *class_ratios, int num_classes)
{
    memset(s, 0, sizeof *s);
    s->pos_fraction = pos_fraction;
    s->num_classes = num_classes;
    if (!strcmp(kind, "posneg")) s->kind = CROP_SAMPLER_POSNEG;
    else if (!strcmp(kind, "classes")) s->kind = CROP_SAMPLER_CLASSES;
    else alice_die("config key crop_sampler = '%s' is unknown; use one of %s", kind, CROP_SAMPLER_NAMES);
    if (s->kind != CROP_SAMPLER_CLASSES) return;
    if (num_classes < 2 || num_classes > LABEL_CLASS_COUNT)
        alice_die("config key num_classes = %d: crop_sampler = classes needs 2..%d classes "
                  "(background included)", num_classes, LABEL_CLASS_COUNT);
    const char *p = class_ratios ? class_ratios : "";
    while (*p == ' ' || *p == '\t') p++;
    if (*p) parse_class_ratios(s, p);
    else
        for (int c = 0; c < num_classes; c++) s->class_ratios[c] = 1.0f;
}

void crop_sampler_index_build(const CropSampler *s, const Volume *v, HuWindow w, LabelIndex *out)
{
    if (s->kind == CROP_SAMPLER_CLASSES) label_index_build_by_class(v, w, out);
    else label_index_build(v, out);
}

double crop_class_probabilities(const LabelIndex *idx, const float *ratios, int num_classes,
                                double *probs)
{
    ALICE_ASSERT(idx->by_class, "the class-balanced sampler needs a label index built by class");
    double sum = 0.0;
    for (int c = 0; c < num_classes; c++) {
        int present = c == 0 ? idx->background_count > 0 : label_index_class_count(idx, c) > 0;
        probs[c] = present ? (double)ratios[c] : 0.0;
        sum += probs[c];
    }
    for (int c = 0; c < num_classes; c++) probs[c] = sum > 0.0 ? probs[c] / sum : 0.0;
    return sum;
}

/* A uniform qualifying background voxel (background_count > 0, counted by the index). */
static size_t draw_background(const Volume *v, const LabelIndex *idx, HuWindow w, RngStream *r)
{
    size_t voxel;
    if (crop_draw_background(v, w, (long long)idx->background_count, r, &voxel) != 0)
        ALICE_FATAL("label index counts %zu background voxels, the volume none",
                    idx->background_count);
    return voxel;
}

int crop_classes_center(const Volume *v, const LabelIndex *idx, HuWindow w, const float *ratios,
                        int num_classes, RngStream *r, int center[3])
{
    ALICE_ASSERT(num_classes >= 1 && num_classes <= LABEL_CLASS_COUNT, "num_classes %d", num_classes);
    double probs[LABEL_CLASS_COUNT];
    if (crop_class_probabilities(idx, ratios, num_classes, probs) <= 0.0) {
        /* Only classes without weight are in this case: rather than no crop, MONAI's default
         * (equal weights) over what is present; with nothing present, any voxel. */
        float equal[LABEL_CLASS_COUNT];
        for (int c = 0; c < num_classes; c++) equal[c] = 1.0f;
        if (crop_class_probabilities(idx, equal, num_classes, probs) <= 0.0) {
            size_t any = rng_below(r, (uint32_t)volume_voxels(v));
            volume_unflatten(v->dim, any, center);
            return v->label ? v->label[any] : 0;
        }
    }
    /* Inverse CDF over the classes; u < 1, so the walk ends on the last class with p > 0. */
    double u = rng_uniform(r), cum = 0.0;
    int cls = -1;
    for (int c = 0; c < num_classes; c++) {
        if (probs[c] <= 0.0) continue;
        cls = c;
        cum += probs[c];
        if (u < cum) break;
    }
    size_t voxel;
    if (cls == 0) {
        voxel = draw_background(v, idx, w, r);
    } else {
        size_t count = label_index_class_count(idx, cls);
        voxel = idx->foreground[idx->class_start[cls] + rng_below(r, (uint32_t)count)];
    }
    volume_unflatten(v->dim, voxel, center);
    return cls;
}

int crop_sampler_center(const CropSampler *s, const Volume *v, const LabelIndex *idx, HuWindow w,
                        RngStream *r, int center[3])
{
    if (s->kind == CROP_SAMPLER_CLASSES)
        return crop_classes_center(v, idx, w, s->class_ratios, s->num_classes, r, center) > 0;
    return crop_posneg_center(v, idx, w, s->pos_fraction, r, center);
}

/* A tiny analytic "patient" for loader and matcher tests and the loader benchmark (the real
 * phantom generator lives in src/data/phantom*; this one is independent of it on purpose, so
 * the tests know the ground truth exactly).
 *
 * World z (mm) runs caudal to cranial: pelvis near 0, lung bases at about 330 mm. A case is
 * the patient scaled (girth and height), sampled with its own spacing over its own
 * cranio-caudal field of view, so volumes differ in size, spacing and FOV. Labels: 1 liver,
 * 2 right kidney, 3 spleen, 13 left kidney, 5 aorta; spine and pelvis are bone. */
#ifndef ALICE_TEST_SYNTHETIC_BODY_H
#define ALICE_TEST_SYNTHETIC_BODY_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "volume.h"

typedef struct {
    double girth;       /* scales X and Y */
    double height;      /* scales Z */
    double z_lo, z_hi;  /* field of view in the patient's own (unscaled) mm */
    float spacing[3];
    int dim_xy;         /* voxels in X and Y */
} BodyCase;

typedef struct { double c[3], r[3]; int label; } BodyOrgan;

/* Organs in unscaled patient mm: centre (x right-left offset from the midline, y anterior-
 * posterior offset, z), semi-axes. */
static const BodyOrgan body_organs[] = {
    {{-50, 10, 300}, {55, 45, 45}, 1},  /* liver */
    {{-55, -40, 220}, {22, 20, 40}, 2}, /* right kidney */
    {{60, -30, 290}, {25, 30, 35}, 3},  /* spleen */
    {{55, -40, 230}, {22, 20, 40}, 13}, /* left kidney */
    {{0, -20, 240}, {9, 9, 150}, 5},    /* aorta */
};
#define BODY_ORGAN_COUNT ((int)(sizeof body_organs / sizeof body_organs[0]))

static inline double body_sq(double v) { return v * v; }

/* HU and label at unscaled patient coordinates (x, y from the body axis, z). */
static inline void body_tissue(double x, double y, double z, int16_t *hu, uint8_t *label)
{
    *label = 0;
    /* Girth: wide at the pelvis and lower chest, narrower at the waist. */
    double ax = 150 + 20 * cos(z / 450.0 * 6.283) + (z < 80 ? 15 : 0);
    double ay = 110 + 10 * sin(z / 300.0 * 3.1416);
    if (z < -20 || z > 480 || body_sq(x / ax) + body_sq(y / ay) > 1) { *hu = -1000; return; }
    *hu = (int16_t)(body_sq(x / ax) + body_sq(y / ay) > 0.8 ? -100 : 40); /* fat rim, soft tissue */
    /* Lungs from 330 mm up. */
    if (z > 330 && body_sq((fabs(x) - 65) / 50) + body_sq((y - 5) / 60) < 1) { *hu = -850; return; }
    /* Spine along the back; pelvis as a bony ring at the bottom. */
    if (body_sq(x / 18) + body_sq((y + 75) / 18) < 1) { *hu = 700; return; }
    if (z < 80 && fabs(body_sq(x / 120) + body_sq((y + 10) / 80) - 1) < 0.15) { *hu = 500; return; }
    for (int i = 0; i < BODY_ORGAN_COUNT; i++) {
        const BodyOrgan *o = &body_organs[i];
        if (body_sq((x - o->c[0]) / o->r[0]) + body_sq((y - o->c[1]) / o->r[1]) +
                body_sq((z - o->c[2]) / o->r[2]) < 1) {
            *label = (uint8_t)o->label;
            *hu = (int16_t)(o->label == 5 ? 180 : 60 + 10 * o->label);
            return;
        }
    }
}

/* Samples one case; volume_free releases it. The body axis sits at the grid's middle. */
static inline void body_make(const BodyCase *bc, Volume *v)
{
    memset(v, 0, sizeof *v);
    v->dim[0] = v->dim[1] = bc->dim_xy;
    v->dim[2] = (int)((bc->z_hi - bc->z_lo) * bc->height / bc->spacing[2]) + 1;
    memcpy(v->spacing, bc->spacing, sizeof v->spacing);
    for (int a = 0; a < 3; a++) v->affine[a][a] = bc->spacing[a];
    v->affine[3][3] = 1;
    size_t n = volume_voxels(v);
    v->image = malloc(n * sizeof *v->image);
    v->label = malloc(n);
    for (int x = 0; x < v->dim[0]; x++)
        for (int y = 0; y < v->dim[1]; y++)
            for (int z = 0; z < v->dim[2]; z++) {
                double px = (x - 0.5 * (v->dim[0] - 1)) * bc->spacing[0] / bc->girth;
                double py = (y - 0.5 * (v->dim[1] - 1)) * bc->spacing[1] / bc->girth;
                double pz = bc->z_lo + z * bc->spacing[2] / bc->height;
                size_t i = volume_index(v->dim, x, y, z);
                body_tissue(px, py, pz, &v->image[i], &v->label[i]);
            }
}

#endif

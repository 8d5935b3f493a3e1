#include "data/phantom.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"

static const char *const organ_names[FLARE_LABEL_COUNT] = {
    "background", "liver", "right_kidney", "spleen", "pancreas", "aorta", "ivc",
    "right_adrenal", "left_adrenal", "gallbladder", "esophagus", "stomach", "duodenum",
    "left_kidney"};

const char *flare_label_name(int id)
{
    return id >= 0 && id < FLARE_LABEL_COUNT ? organ_names[id] : NULL;
}

static const char *const size_names[] = {
    [PHANTOM_SMALL] = "small", [PHANTOM_MEDIUM] = "medium", [PHANTOM_LARGE] = "large"};

int phantom_size_from_name(const char *name, PhantomSize *size)
{
    for (int s = PHANTOM_SMALL; s <= PHANTOM_LARGE; s++)
        if (!strcmp(name, size_names[s])) {
            *size = (PhantomSize)s;
            return 0;
        }
    return -1;
}

const char *phantom_size_name(PhantomSize size)
{
    return size >= PHANTOM_SMALL && size <= PHANTOM_LARGE ? size_names[size] : "?";
}

/* Grid of each size: in-plane voxels, and ranges of in-plane and slice spacing (mm). */
typedef struct { int n_xy; float sp_xy_lo, sp_xy_hi, sp_z_lo, sp_z_hi; } SizeSpec;
static const SizeSpec size_specs[] = {
    [PHANTOM_SMALL] = {128, 2.6f, 3.0f, 3.0f, 4.0f},
    [PHANTOM_MEDIUM] = {192, 1.75f, 2.0f, 2.0f, 2.5f},
    [PHANTOM_LARGE] = {256, 1.3f, 1.5f, 1.25f, 1.75f},
};

/* Tissue intensities (HU) of the unlabelled structures. */
enum {
    HU_AIR = -1000, HU_LUNG = -850, HU_SUBCUT_FAT = -105, HU_VISCERAL_FAT = -90, HU_SKIN = 30,
    HU_MUSCLE = 50, HU_CORTICAL_BONE = 650, HU_MARROW = 220, HU_DISC = 85, HU_CSF = 15,
    HU_BOWEL = 30, HU_GAS = -700, HU_MYOCARDIUM = 60, HU_RIB = 520,
};

/* Organ enhancement by phase: non-contrast, arterial, portal venous (typical adult values). */
static const float organ_hu[FLARE_LABEL_COUNT][PHASE_COUNT] = {
    [FLARE_LIVER] = {55, 75, 115},     [FLARE_KIDNEY_R] = {32, 165, 175},
    [FLARE_SPLEEN] = {45, 115, 120},   [FLARE_PANCREAS] = {40, 110, 95},
    [FLARE_AORTA] = {42, 310, 165},    [FLARE_IVC] = {40, 75, 140},
    [FLARE_ADRENAL_R] = {28, 60, 62},  [FLARE_ADRENAL_L] = {28, 60, 62},
    [FLARE_GALLBLADDER] = {8, 10, 12}, [FLARE_ESOPHAGUS] = {42, 60, 62},
    [FLARE_STOMACH] = {25, 45, 55},    [FLARE_DUODENUM] = {30, 48, 58},
    [FLARE_KIDNEY_L] = {32, 165, 175},
};
static const float blood_hu[PHASE_COUNT] = {42, 280, 160};

typedef enum { SHAPE_ELLIPSOID, SHAPE_TUBE } ShapeKind;
enum { TUBE_MAX_POINTS = 6 };

/* One organ part: an ellipsoid (rotated about z) or a tube along a polyline. */
typedef struct {
    ShapeKind kind;
    int label;
    int above_diaphragm;        /* 1: may extend into the chest (vessels, oesophagus) */
    double c[3], r[3], cos_a, sin_a;
    int np;
    double p[TUBE_MAX_POINTS][3];
    double radius;
    double lo[3], hi[3];        /* bounding box, for a quick reject */
} Shape;

enum { MAX_SHAPES = 24 };

typedef struct {
    /* body */
    double ax, ay;              /* body half-widths (mm) */
    double fat, wall;           /* subcutaneous fat and muscle wall thickness */
    double pos_scale, z_scale;  /* organ placement scale in-plane and cranio-caudal */
    double dome;                /* diaphragm dome height */
    double spine_y;             /* vertebral body centre */
    double rib_phase;
    /* smooth deformation: q = p + d, each component a sum of two sines of the other axes */
    double def_amp[3][2], def_freq[3][2], def_phase[3][2];
    double bowel_freq[3], bowel_phase[3];
    ContrastPhase phase;
    int nshape;
    Shape shape[MAX_SHAPES];
} Anatomy;

static double uniform(RngStream *s, double lo, double hi) { return lo + (hi - lo) * rng_uniform(s); }

static void shape_bounds(Shape *sh)
{
    if (sh->kind == SHAPE_ELLIPSOID) {
        double rxy = fmax(sh->r[0], sh->r[1]);
        for (int a = 0; a < 3; a++) {
            double r = a < 2 ? rxy : sh->r[2];
            sh->lo[a] = sh->c[a] - r;
            sh->hi[a] = sh->c[a] + r;
        }
    } else {
        for (int a = 0; a < 3; a++) {
            sh->lo[a] = sh->hi[a] = sh->p[0][a];
            for (int i = 1; i < sh->np; i++) {
                sh->lo[a] = fmin(sh->lo[a], sh->p[i][a]);
                sh->hi[a] = fmax(sh->hi[a], sh->p[i][a]);
            }
            sh->lo[a] -= sh->radius;
            sh->hi[a] += sh->radius;
        }
    }
}

/* Organ placed at its nominal position (body frame mm, before scaling) with random jitter of
 * position (sd 6 mm) and of each semi-axis (x0.85 .. x1.15) and a random turn about z. */
static void add_ellipsoid(Anatomy *an, RngStream *s, int label, double cx, double cy, double cz,
                          double rx, double ry, double rz, double angle_deg)
{
    ALICE_ASSERT(an->nshape < MAX_SHAPES, "phantom: too many shapes");
    Shape *sh = &an->shape[an->nshape++];
    memset(sh, 0, sizeof *sh);
    sh->kind = SHAPE_ELLIPSOID;
    sh->label = label;
    sh->c[0] = cx * an->pos_scale + 6 * rng_normal(s);
    sh->c[1] = cy * an->pos_scale + 6 * rng_normal(s);
    sh->c[2] = cz * an->z_scale + 6 * rng_normal(s);
    sh->r[0] = rx * uniform(s, 0.85, 1.15);
    sh->r[1] = ry * uniform(s, 0.85, 1.15);
    sh->r[2] = rz * uniform(s, 0.85, 1.15) * an->z_scale;
    double a = (angle_deg + 10 * rng_normal(s)) * M_PI / 180.0;
    sh->cos_a = cos(a);
    sh->sin_a = sin(a);
    shape_bounds(sh);
}

static void add_tube(Anatomy *an, RngStream *s, int label, int above, int np, const double pts[][3],
                     double radius)
{
    ALICE_ASSERT(an->nshape < MAX_SHAPES && np <= TUBE_MAX_POINTS, "phantom: too many shapes");
    Shape *sh = &an->shape[an->nshape++];
    memset(sh, 0, sizeof *sh);
    sh->kind = SHAPE_TUBE;
    sh->label = label;
    sh->above_diaphragm = above;
    sh->np = np;
    const double jx = 4 * rng_normal(s), jy = 4 * rng_normal(s);
    for (int i = 0; i < np; i++) {
        sh->p[i][0] = pts[i][0] * an->pos_scale + jx + 2 * rng_normal(s);
        sh->p[i][1] = pts[i][1] * an->pos_scale + jy + 2 * rng_normal(s);
        sh->p[i][2] = pts[i][2] * an->z_scale + 3 * rng_normal(s);
    }
    sh->radius = radius * uniform(s, 0.85, 1.15);
    shape_bounds(sh);
}

static int shape_contains(const Shape *sh, const double q[3])
{
    for (int a = 0; a < 3; a++)
        if (q[a] < sh->lo[a] || q[a] > sh->hi[a]) return 0;
    if (sh->kind == SHAPE_ELLIPSOID) {
        double dx = q[0] - sh->c[0], dy = q[1] - sh->c[1], dz = q[2] - sh->c[2];
        double u = (sh->cos_a * dx + sh->sin_a * dy) / sh->r[0];
        double v = (-sh->sin_a * dx + sh->cos_a * dy) / sh->r[1];
        double w = dz / sh->r[2];
        return u * u + v * v + w * w <= 1.0;
    }
    const double r2 = sh->radius * sh->radius;
    for (int i = 0; i + 1 < sh->np; i++) {
        const double *a = sh->p[i], *b = sh->p[i + 1];
        double ab[3], aq[3], len2 = 0, t = 0;
        for (int k = 0; k < 3; k++) {
            ab[k] = b[k] - a[k];
            aq[k] = q[k] - a[k];
            len2 += ab[k] * ab[k];
            t += ab[k] * aq[k];
        }
        t = len2 > 0 ? fmin(1.0, fmax(0.0, t / len2)) : 0.0;
        double d2 = 0;
        for (int k = 0; k < 3; k++) {
            double d = aq[k] - t * ab[k];
            d2 += d * d;
        }
        if (d2 <= r2) return 1;
    }
    return 0;
}

/* Nominal adult anatomy in the body frame (mm; x to the patient's right, y anterior, z
 * superior, z = 0 near the renal hila), jittered per case. Later shapes win where shapes
 * overlap, so small organs come after the large ones they touch. */
static void build_anatomy(Anatomy *an, RngStream *s)
{
    const double body = uniform(s, 0.82, 1.15);
    an->ax = 150 * body * uniform(s, 0.95, 1.05);
    an->ay = 108 * body * uniform(s, 0.95, 1.05);
    an->fat = uniform(s, 8, 20) + 25 * (body - 0.82);
    an->wall = uniform(s, 9, 14);
    an->pos_scale = 1 + 0.6 * (body - 1);
    an->z_scale = uniform(s, 0.92, 1.08);
    an->dome = uniform(s, 88, 102) * an->z_scale;
    an->spine_y = -an->ay + an->fat + an->wall + 40 * an->pos_scale;
    an->rib_phase = uniform(s, 0, 30);
    for (int c = 0; c < 3; c++)
        for (int k = 0; k < 2; k++) {
            an->def_amp[c][k] = uniform(s, 1.5, 6.0);
            an->def_freq[c][k] = 2 * M_PI / uniform(s, 120, 260);
            an->def_phase[c][k] = uniform(s, 0, 2 * M_PI);
        }
    for (int a = 0; a < 3; a++) {
        an->bowel_freq[a] = 1.0 / uniform(s, 11, 17);
        an->bowel_phase[a] = uniform(s, 0, 2 * M_PI);
    }
    an->phase = (ContrastPhase)rng_below(s, PHASE_COUNT);
    an->nshape = 0;

    add_ellipsoid(an, s, FLARE_LIVER, 62, 5, 58, 80, 82, 62, 10);
    add_ellipsoid(an, s, FLARE_LIVER, 5, 38, 70, 48, 30, 32, -15);        /* left lobe */
    add_ellipsoid(an, s, FLARE_SPLEEN, -85, -35, 62, 26, 48, 50, 35);
    add_ellipsoid(an, s, FLARE_KIDNEY_R, 68, -45, -12, 27, 25, 55, 20);
    add_ellipsoid(an, s, FLARE_KIDNEY_L, -68, -45, 4, 27, 25, 55, -20);
    add_ellipsoid(an, s, FLARE_STOMACH, -52, 28, 64, 46, 36, 44, -30);
    add_ellipsoid(an, s, FLARE_GALLBLADDER, 55, 52, 28, 15, 15, 33, 20);
    add_ellipsoid(an, s, FLARE_ADRENAL_R, 44, -33, 60, 7, 13, 18, 30);
    add_ellipsoid(an, s, FLARE_ADRENAL_L, -44, -28, 54, 7, 13, 18, -30);
    const double duodenum[][3] = {{30, 20, 48}, {46, 8, 22}, {42, -4, -8}, {8, -10, -16}, {-16, -8, 0}};
    add_tube(an, s, FLARE_DUODENUM, 0, 5, duodenum, 11);
    const double pancreas[][3] = {{30, -2, 12}, {0, -4, 24}, {-35, -12, 34}, {-66, -26, 42}};
    add_tube(an, s, FLARE_PANCREAS, 0, 4, pancreas, 12);
    const double esophagus[][3] = {{-38, 12, 82}, {-12, -32, 100}, {-6, -40, 200}, {-4, -42, 320}};
    add_tube(an, s, FLARE_ESOPHAGUS, 1, 4, esophagus, 8);
    const double ivc[][3] = {{22, -24, -140}, {24, -18, 60}, {18, -8, 110}, {14, -4, 320}};
    add_tube(an, s, FLARE_IVC, 1, 4, ivc, 12);
    const double aorta[][3] = {{-14, -28, -140}, {-14, -30, 110}, {-10, -32, 320}};
    add_tube(an, s, FLARE_AORTA, 1, 3, aorta, 11);
}

/* Height of the diaphragm at (x, y): domed, the right dome higher over the liver, lower
 * posteriorly (the costophrenic recesses). */
static double diaphragm_z(const Anatomy *an, double x, double y)
{
    double u = x / an->ax;
    return an->dome + 22 * (1 - u * u) + (x > 0 ? 12 : 0) + 15 * (y / an->ay);
}

/* Tissue of the unlabelled body at q (deformed body-frame mm). */
static float background_hu(const Anatomy *an, const double q[3], double zd, const double bowel[3])
{
    const double x = q[0], y = q[1], z = q[2];
    double r = sqrt((x / an->ax) * (x / an->ax) + (y / an->ay) * (y / an->ay));
    if (r >= 1.0) return HU_AIR;
    double len = sqrt(x * x + y * y);
    double depth = r > 1e-9 ? len / r - len : an->ay;  /* distance to the skin along the ray */
    if (depth < 2.5) return HU_SKIN;
    if (depth < an->fat) return HU_SUBCUT_FAT;
    const double sy = an->spine_y;
    /* Spine: vertebral body with discs, canal, spinous process; then back muscles. */
    double dvx = x, dvy = y - sy;
    double rv = 17 * an->pos_scale;
    if (dvx * dvx + dvy * dvy < rv * rv) {
        double disc = fmod(z + 1000.0 * 30, 30.0);
        if (disc < 6) return HU_DISC;
        return dvx * dvx + dvy * dvy > (rv - 3) * (rv - 3) ? HU_CORTICAL_BONE : HU_MARROW;
    }
    double cy = sy - rv - 9;
    if (x * x + (y - cy) * (y - cy) < 64) return HU_CSF;
    if (fabs(x) < 5 && y < cy && y > cy - 28) return HU_CORTICAL_BONE;
    for (int side = -1; side <= 1; side += 2) {
        double px = (x - side * 34) / 24, py = (y - (sy - 28)) / 20;
        if (px * px + py * py < 1) return HU_MUSCLE;           /* paraspinal */
        if (z < 35) {
            double rp = fmin(22.0, 8 + 0.12 * (35 - z));
            double qx = x - side * 40, qy = y - (sy + 6);
            if (qx * qx + qy * qy < rp * rp) return HU_MUSCLE; /* psoas */
        }
    }
    if (depth < an->fat + an->wall) {
        /* Ribs: oblique bands in the wall of the upper abdomen, not in the midline front. */
        if (z > 15 * an->z_scale && !(fabs(x) < 45 && y > 0)) {
            double band = fmod(z + 0.25 * y + an->rib_phase + 3000.0, 30.0);
            if (band < 9) return HU_RIB;
        }
        return HU_MUSCLE;
    }
    if (z > zd) {
        double hx = (x + 20) / 62, hy = (y - 20) / 52, hz = (z - (an->dome + 75)) / 55;
        if (hx * hx + hy * hy + hz * hz < 1) return HU_MYOCARDIUM;  /* heart; blood pool set later */
        if (fabs(x) < 28 && y < sy + 45) return HU_VISCERAL_FAT;  /* mediastinum */
        return HU_LUNG;
    }
    /* Bowel loops: a smooth periodic pattern in the lower and mid abdomen. */
    double b = bowel[0] * bowel[1] * bowel[2];
    if (z < 45 * an->z_scale && b > 0.2) return b > 0.8 ? HU_GAS : HU_BOWEL;
    return HU_VISCERAL_FAT;
}

void phantom_generate(uint64_t seed, int index, PhantomSize size, Volume *v, PhantomInfo *info)
{
    ALICE_ASSERT(size >= PHANTOM_SMALL && size <= PHANTOM_LARGE, "phantom: bad size %d", (int)size);
    RngStream s;
    rng_init(&s, seed, 0, (uint32_t)index, RNG_PHANTOM);
    Anatomy an;
    build_anatomy(&an, &s);
    const SizeSpec *spec = &size_specs[size];

    /* Field of view: full abdomen (lung bases to below the kidneys), or about one case in
     * four only its upper or lower part. */
    PhantomInfo pi;
    memset(&pi, 0, sizeof pi);
    double u = rng_uniform(&s);
    pi.coverage = u < 0.75 ? COVERAGE_FULL : u < 0.875 ? COVERAGE_UPPER : COVERAGE_LOWER;
    double z_lo = -110 * an.z_scale, z_hi = 185 * an.z_scale;
    if (pi.coverage == COVERAGE_UPPER) z_lo = uniform(&s, -10, 20) * an.z_scale;
    if (pi.coverage == COVERAGE_LOWER) z_hi = uniform(&s, 30, 60) * an.z_scale;
    const double sp_xy = uniform(&s, spec->sp_xy_lo, spec->sp_xy_hi);
    const double sp_z = uniform(&s, spec->sp_z_lo, spec->sp_z_hi);
    const int nx = spec->n_xy, ny = spec->n_xy, nz = (int)ceil((z_hi - z_lo) / sp_z);
    const double shift_x = 10 * rng_normal(&s), shift_y = 10 * rng_normal(&s) - 8;
    pi.noise_hu = (float)uniform(&s, 8, 25);
    pi.store_lps = rng_uniform(&s) < 0.3;
    pi.phase = an.phase;
    pi.body_scale = (float)(an.ax / 150);
    /* Scanner coordinates: the body frame moved by a table position. */
    const double world_offset[3] = {uniform(&s, -30, 30), uniform(&s, -180, -120), uniform(&s, -900, -600)};

    memset(v, 0, sizeof *v);
    v->dim[0] = nx;
    v->dim[1] = ny;
    v->dim[2] = nz;
    v->spacing[0] = v->spacing[1] = (float)sp_xy;
    v->spacing[2] = (float)sp_z;
    const double x0 = -0.5 * (nx - 1) * sp_xy + shift_x, y0 = -0.5 * (ny - 1) * sp_xy + shift_y;
    v->affine[0][0] = sp_xy;
    v->affine[1][1] = sp_xy;
    v->affine[2][2] = sp_z;
    v->affine[0][3] = x0 + world_offset[0];
    v->affine[1][3] = y0 + world_offset[1];
    v->affine[2][3] = z_lo + world_offset[2];
    v->affine[3][3] = 1;
    const size_t n = (size_t)nx * ny * nz;
    v->image = xmalloc(n * sizeof(int16_t));
    v->label = xcalloc(n, 1);

    /* World coordinates and half of the deformation are separable: tabulate them per axis. */
    const int nmax = nx > nz ? (nx > ny ? nx : ny) : (nz > ny ? nz : ny);
    double *tab = xmalloc(sizeof(double) * 6 * nmax);
    double *coord[3] = {tab, tab + nmax, tab + 2 * nmax};
    double *def_tab[3] = {tab + 3 * nmax, tab + 4 * nmax, tab + 5 * nmax};
    const int dims[3] = {nx, ny, nz};
    const double start[3] = {x0, y0, z_lo}, step[3] = {sp_xy, sp_xy, sp_z};
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < dims[a]; i++) coord[a][i] = start[a] + i * step[a];
    /* Component c is displaced by sines of the other two axes: d_c = f(axis a) + g(axis b);
     * def_tab[a][i] holds the contribution of axis a to the component (a + 1) % 3. */
    for (int a = 0; a < 3; a++) {
        int c = (a + 1) % 3;
        for (int i = 0; i < dims[a]; i++)
            def_tab[a][i] = an.def_amp[c][0] * sin(an.def_freq[c][0] * coord[a][i] + an.def_phase[c][0]);
    }
    RngStream noise;
    rng_init(&noise, seed, 0, (uint32_t)index, RNG_NOISE);
    size_t i = 0;
    for (int x = 0; x < nx; x++)
        for (int y = 0; y < ny; y++)
            for (int z = 0; z < nz; z++, i++) {
                /* Second sine of each component uses the remaining axis. */
                double q[3];
                q[0] = coord[0][x] + def_tab[2][z] +
                       an.def_amp[0][1] * sin(an.def_freq[0][1] * coord[1][y] + an.def_phase[0][1]);
                q[1] = coord[1][y] + def_tab[0][x] +
                       an.def_amp[1][1] * sin(an.def_freq[1][1] * coord[2][z] + an.def_phase[1][1]);
                q[2] = coord[2][z] + def_tab[1][y] +
                       an.def_amp[2][1] * sin(an.def_freq[2][1] * coord[0][x] + an.def_phase[2][1]);
                double bowel[3];
                for (int a = 0; a < 3; a++) bowel[a] = sin(an.bowel_freq[a] * q[a] + an.bowel_phase[a]);
                const double zd = diaphragm_z(&an, q[0], q[1]);
                float value = background_hu(&an, q, zd, bowel);
                int label = FLARE_BACKGROUND;
                if (value != HU_AIR && value != HU_SKIN && value != HU_SUBCUT_FAT) {
                    double r = sqrt((q[0] / an.ax) * (q[0] / an.ax) + (q[1] / an.ay) * (q[1] / an.ay));
                    double len = sqrt(q[0] * q[0] + q[1] * q[1]);
                    double depth = r > 1e-9 ? len / r - len : an.ay;
                    int in_cavity = depth >= an.fat + an.wall;
                    for (int k = 0; k < an.nshape && in_cavity; k++) {
                        const Shape *sh = &an.shape[k];
                        if ((sh->above_diaphragm || q[2] <= zd) && shape_contains(sh, q)) label = sh->label;
                    }
                }
                if (label) {
                    value = organ_hu[label][an.phase];
                    if (label == FLARE_STOMACH && q[1] > 35 * an.pos_scale && q[2] > 80 * an.z_scale)
                        value = HU_GAS;  /* gas cap of the stomach, still stomach */
                } else if (value == HU_MYOCARDIUM) {
                    double hx = (q[0] + 20) / 62, hy = (q[1] - 20) / 52, hz = (q[2] - (an.dome + 75)) / 55;
                    if (hx * hx + hy * hy + hz * hz < 0.6) value = blood_hu[an.phase];
                }
                value += pi.noise_hu * rng_normal(&noise);  /* air too: CT noise is everywhere */
                long hv = lrint(value);
                if (hv < -1024) hv = -1024;
                if (hv > 3071) hv = 3071;
                v->image[i] = (int16_t)hv;
                v->label[i] = (uint8_t)label;
            }
    free(tab);
    if (info) *info = pi;
}

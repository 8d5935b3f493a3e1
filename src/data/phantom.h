/* Synthetic abdominal CT phantoms: the embedded default data of the demo and most tests.
 *
 * Each case is a pure function of (seed, case index, size): an elliptic body with skin,
 * subcutaneous fat, muscle wall, spine, paraspinal and psoas muscles, ribs, lungs and heart
 * above a domed diaphragm, bowel loops, and the 13 FLARE 2022 organs. Cases vary in body
 * size, organ size, shape and position, a smooth deformation, contrast phase, noise, voxel
 * spacing and field of view (about one case in four covers only the upper or lower part of
 * the abdomen), so that finding the same body part in two volumes is a real question. */
#ifndef ALICE_PHANTOM_H
#define ALICE_PHANTOM_H

#include <stdint.h>

#include "volume.h"

/* FLARE 2022 label ids (what the phantom's label map holds). */
typedef enum {
    FLARE_BACKGROUND = 0,
    FLARE_LIVER = 1,
    FLARE_KIDNEY_R = 2,
    FLARE_SPLEEN = 3,
    FLARE_PANCREAS = 4,
    FLARE_AORTA = 5,
    FLARE_IVC = 6,
    FLARE_ADRENAL_R = 7,
    FLARE_ADRENAL_L = 8,
    FLARE_GALLBLADDER = 9,
    FLARE_ESOPHAGUS = 10,
    FLARE_STOMACH = 11,
    FLARE_DUODENUM = 12,
    FLARE_KIDNEY_L = 13,
    FLARE_LABEL_COUNT = 14      /* background + 13 organs */
} FlareLabel;

/* Organ name of a FLARE id ("background" for 0, NULL outside 0..13). */
const char *flare_label_name(int id);

typedef enum { PHANTOM_SMALL, PHANTOM_MEDIUM, PHANTOM_LARGE } PhantomSize;
#define PHANTOM_SIZE_NAMES "small|medium|large"
/* Returns 0 and sets *size, or -1 for an unknown name. */
int phantom_size_from_name(const char *name, PhantomSize *size);
const char *phantom_size_name(PhantomSize size);

typedef enum { PHASE_NONCONTRAST, PHASE_ARTERIAL, PHASE_PORTAL_VENOUS, PHASE_COUNT } ContrastPhase;
typedef enum { COVERAGE_FULL, COVERAGE_UPPER, COVERAGE_LOWER } Coverage;

/* What was drawn for a case (for tests and the log). */
typedef struct {
    ContrastPhase phase;
    Coverage coverage;
    float body_scale;           /* 1 = average adult */
    float noise_hu;             /* standard deviation of the added noise */
    int store_lps;              /* 1: `alice phantom` stores this case in LPS voxel order */
} PhantomInfo;

/* Generates case `index` of the series `seed` into v (RAS, C order [X][Y][Z], int16 HU and a
 * uint8 FLARE label map; free with volume_free). info may be NULL. */
void phantom_generate(uint64_t seed, int index, PhantomSize size, Volume *v, PhantomInfo *info);

#endif

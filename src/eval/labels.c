#include "eval/labels.h"

#include <string.h>

/* NSD tolerances of the FLARE 2022 challenge (mm). The portal/splenic vein is not a FLARE
 * organ; 3 mm follows the other vessels of its calibre in BTCV evaluations. The last field marks
 * the organs the FLARE 2022 script scores on the truth's labelled slices only (aorta, IVC,
 * esophagus), in either label set. */
enum {
    TOL_LIVER = 5, TOL_KIDNEY = 3, TOL_SPLEEN = 3, TOL_PANCREAS = 5, TOL_AORTA = 2, TOL_IVC = 2,
    TOL_ADRENAL = 2, TOL_GALLBLADDER = 2, TOL_ESOPHAGUS = 3, TOL_STOMACH = 5, TOL_DUODENUM = 7,
    TOL_PORTAL_VEIN = 3
};

static const OrganLabel flare_organs[] = {
    {1, "liver", TOL_LIVER, 0},
    {2, "right_kidney", TOL_KIDNEY, 0},
    {3, "spleen", TOL_SPLEEN, 0},
    {4, "pancreas", TOL_PANCREAS, 0},
    {5, "aorta", TOL_AORTA, 1},
    {6, "ivc", TOL_IVC, 1},
    {7, "right_adrenal", TOL_ADRENAL, 0},
    {8, "left_adrenal", TOL_ADRENAL, 0},
    {9, "gallbladder", TOL_GALLBLADDER, 0},
    {10, "esophagus", TOL_ESOPHAGUS, 1},
    {11, "stomach", TOL_STOMACH, 0},
    {12, "duodenum", TOL_DUODENUM, 0},
    {13, "left_kidney", TOL_KIDNEY, 0},
};

static const OrganLabel btcv_organs[] = {
    {1, "spleen", TOL_SPLEEN, 0},
    {2, "right_kidney", TOL_KIDNEY, 0},
    {3, "left_kidney", TOL_KIDNEY, 0},
    {4, "gallbladder", TOL_GALLBLADDER, 0},
    {5, "esophagus", TOL_ESOPHAGUS, 1},
    {6, "liver", TOL_LIVER, 0},
    {7, "stomach", TOL_STOMACH, 0},
    {8, "aorta", TOL_AORTA, 1},
    {9, "ivc", TOL_IVC, 1},
    {10, "portal_splenic_vein", TOL_PORTAL_VEIN, 0},
    {11, "pancreas", TOL_PANCREAS, 0},
    {12, "right_adrenal", TOL_ADRENAL, 0},
    {13, "left_adrenal", TOL_ADRENAL, 0},
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const LabelSet label_sets[] = {
    {"flare", COUNT(flare_organs), flare_organs},
    {"btcv", COUNT(btcv_organs), btcv_organs},
};

const LabelSet *label_set_find(const char *name)
{
    for (int i = 0; i < COUNT(label_sets); i++)
        if (!strcmp(label_sets[i].name, name)) return &label_sets[i];
    return NULL;
}

const char *label_set_names(void) { return "flare|btcv"; }

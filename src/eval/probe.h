/* k-NN probe of encoder patch features: how well do the features of a (pre-trained or random)
 * encoder separate the organs? Tokens of labelled crops get the majority label of their patch;
 * each token of a case is classified by its k nearest tokens (cosine similarity) of the OTHER
 * cases; the score is the balanced accuracy (mean recall over the organ classes present, the
 * background included as a class). */
#ifndef ALICE_PROBE_H
#define ALICE_PROBE_H

#include "core/config.h"

typedef struct {
    double balanced_accuracy;
    double accuracy;
    long tokens;
    int classes;
} ProbeResult;

/* checkpoint NULL: the encoder at its random initialisation (seed of cfg). */
ProbeResult probe_knn(const Config *cfg, const char *checkpoint, int cases, int crops_per_case, int k);

#endif

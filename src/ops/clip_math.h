/* The factor gradient clipping multiplies by, torch.nn.utils.clip_grad_norm_'s (and DINO's
 * clip_gradients'): max_norm / (norm + 1e-6) rounded to float where that is below 1 and
 * max_norm > 0, else 1 (torch clamps the coefficient, not the norm: within 1e-6 below the
 * threshold it scales). One inline shared by gcc and nvcc (ALICE_HOSTDEV), so the host's global
 * clipping and both backends' per-tensor clipping (clip_segments) compute the same float. */
#ifndef ALICE_CLIP_MATH_H
#define ALICE_CLIP_MATH_H

#include "core/hostdev.h"

static inline ALICE_HOSTDEV float clip_factor(double norm, double max_norm)
{
    if (max_norm <= 0) return 1.0f;
    const double scale = max_norm / (norm + 1e-6);
    return scale < 1.0 ? (float)scale : 1.0f;
}

#endif

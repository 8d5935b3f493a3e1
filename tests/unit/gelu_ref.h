/* The exact (erf) GELU and its slope from their definitions with libm, in double: the
 * independent reference the GELU tests compare the backends against. */
#ifndef ALICE_TEST_GELU_REF_H
#define ALICE_TEST_GELU_REF_H

#include <math.h>

/* x Phi(x) */
static inline double gelu_exact(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

/* d/dx [x Phi(x)] = Phi(x) + x phi(x) */
static inline double gelu_slope_exact(double x)
{
    const double Phi = 0.5 * (1.0 + erf(x / sqrt(2.0)));
    const double phi = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
    return Phi + x * phi;
}

#endif

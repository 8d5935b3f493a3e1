#include "eval/edt.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/check.h"

/* One line: f[0..n-1] (INFINITY = no feature), element stride `stride`, w = spacing^2.
 * Writes the 1-D transform back in place. v, z: scratch of n and n+1 entries; g: copy of f. */
static void edt_line(double *f, ptrdiff_t stride, int n, double w, int *v, double *z, double *g)
{
    int k = -1;
    for (int q = 0; q < n; q++) {
        g[q] = f[(ptrdiff_t)q * stride];
        if (!isfinite(g[q])) continue;
        if (k < 0) {
            k = 0; v[0] = q; z[0] = -INFINITY; z[1] = INFINITY;
            continue;
        }
        double s;
        for (;;) {
            /* where the parabola rooted at q overtakes the one rooted at v[k]; z[0] = -inf
             * keeps k >= 0 */
            int p = v[k];
            s = ((g[q] + w * (double)q * q) - (g[p] + w * (double)p * p)) / (2.0 * w * (double)(q - p));
            if (s > z[k]) break;
            k--;
        }
        k++;
        v[k] = q; z[k] = s; z[k + 1] = INFINITY;
    }
    if (k < 0) {                    /* no finite value on the line: stays INFINITY */
        for (int q = 0; q < n; q++) f[(ptrdiff_t)q * stride] = INFINITY;
        return;
    }
    int j = 0;
    for (int q = 0; q < n; q++) {
        while (z[j + 1] < q) j++;
        double d = (double)(q - v[j]);
        f[(ptrdiff_t)q * stride] = w * d * d + g[v[j]];
    }
}

void edt_squared(const uint8_t *feature, const int dim[3], const double spacing[3], double *d2)
{
    const size_t n = (size_t)dim[0] * (size_t)dim[1] * (size_t)dim[2];
    for (size_t i = 0; i < n; i++) d2[i] = feature[i] ? 0.0 : INFINITY;
    int longest = dim[0] > dim[1] ? dim[0] : dim[1];
    if (dim[2] > longest) longest = dim[2];
    int *v = xmalloc(sizeof(int) * (size_t)longest);
    double *z = xmalloc(sizeof(double) * (size_t)(longest + 1));
    double *g = xmalloc(sizeof(double) * (size_t)longest);
    const ptrdiff_t stride[3] = {(ptrdiff_t)dim[1] * dim[2], dim[2], 1};
    for (int axis = 2; axis >= 0; axis--) {
        const int a = (axis + 1) % 3, b = (axis + 2) % 3;   /* the two other axes */
        const double w = spacing[axis] * spacing[axis];
        for (int i = 0; i < dim[a]; i++)
            for (int j = 0; j < dim[b]; j++)
                edt_line(d2 + (ptrdiff_t)i * stride[a] + (ptrdiff_t)j * stride[b], stride[axis], dim[axis], w, v,
                         z, g);
    }
    free(v);
    free(z);
    free(g);
}

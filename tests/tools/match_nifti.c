/* Maps body points of one NIfTI scan into another whose voxel grid is known to be the same
 * but shifted by a whole number of slices (e.g. example_ct_sm = slices 82..111 of example_ct,
 * with a stale affine), and prints the error in mm of each matcher:
 *   match_nifti QUERY.nii.gz KEY.nii.gz Z_OFFSET
 * Output lines "matcher <name> points <n> mean_mm <m> median_mm <md> max_mm <mx>". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/crop.h"
#include "data/matcher.h"
#include "nifti_io.h"

static void load(const char *path, Volume *v)
{
    char err[1024];
    float *data;
    memset(v, 0, sizeof *v);
    if (nifti_read_volume(path, &data, v->dim, v->affine, err, sizeof err) != 0) {
        fprintf(stderr, "match_nifti: %s\n", err);
        exit(2);
    }
    size_t n = volume_voxels(v);
    v->image = malloc(n * sizeof *v->image);
    for (size_t i = 0; i < n; i++) {
        float h = data[i] < -32768 ? -32768 : (data[i] > 32767 ? 32767 : data[i]);
        v->image[i] = (int16_t)lrintf(h);
    }
    free(data);
    for (int a = 0; a < 3; a++)
        v->spacing[a] = (float)sqrt(v->affine[0][a] * v->affine[0][a] + v->affine[1][a] * v->affine[1][a] +
                                    v->affine[2][a] * v->affine[2][a]);
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: match_nifti QUERY KEY Z_OFFSET\n");
        return 2;
    }
    Volume q, k;
    load(argv[1], &q);
    load(argv[2], &k);
    int offset = atoi(argv[3]);
    /* Every 4th voxel in X and Y, every 2nd slice, inside the body. */
    int cap = q.dim[0] * q.dim[1] * q.dim[2] / 16 + 1, n = 0;
    double (*pq)[3] = malloc((size_t)cap * sizeof *pq), (*pk)[3] = malloc((size_t)cap * sizeof *pk);
    for (int x = 0; x < q.dim[0]; x += 4)
        for (int y = 0; y < q.dim[1]; y += 4)
            for (int z = 0; z < q.dim[2]; z += 2)
                if (q.image[volume_index(q.dim, x, y, z)] > BODY_HU_THRESHOLD && n < cap) {
                    pq[n][0] = x; pq[n][1] = y; pq[n][2] = z;
                    n++;
                }
    const Matcher *methods[2] = {&matcher_profile, &matcher_bbox};
    double *err = malloc((size_t)(n > 0 ? n : 1) * sizeof *err);
    for (int m = 0; m < 2; m++) {
        void *dq = methods[m]->describe(&q), *dk = methods[m]->describe(&k);
        methods[m]->map_points(dq, dk, n, (const double(*)[3])pq, pk);
        double sum = 0, max = 0;
        for (int i = 0; i < n; i++) {
            double e2 = 0;
            for (int a = 0; a < 3; a++) {
                double want = pq[i][a] + (a == 2 ? offset : 0);
                double d = (pk[i][a] - want) * k.spacing[a];
                e2 += d * d;
            }
            err[i] = sqrt(e2);
            sum += err[i];
            if (err[i] > max) max = err[i];
        }
        qsort(err, (size_t)n, sizeof *err, compare);
        printf("matcher %s points %d mean_mm %.2f median_mm %.2f max_mm %.2f\n", methods[m]->name, n,
               n ? sum / n : NAN, n ? err[n / 2] : NAN, max);
        methods[m]->free_description(dq);
        methods[m]->free_description(dk);
    }
    free(err); free(pq); free(pk);
    volume_free(&q);
    volume_free(&k);
    return 0;
}

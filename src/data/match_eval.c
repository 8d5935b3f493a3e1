#include "data/match_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"

void label_centroids(const Volume *v, LabelCentroids *out)
{
    memset(out, 0, sizeof *out);
    if (!v->label) return;
    for (int x = 0; x < v->dim[0]; x++)
        for (int y = 0; y < v->dim[1]; y++) {
            const uint8_t *col = v->label + volume_index(v->dim, x, y, 0);
            const int xy_face = x == 0 || x == v->dim[0] - 1 || y == 0 || y == v->dim[1] - 1;
            for (int z = 0; z < v->dim[2]; z++) {
                int l = col[z];
                if (!l) continue;
                out->centroid[l][0] += x;
                out->centroid[l][1] += y;
                out->centroid[l][2] += z;
                out->count[l]++;
                out->cut[l] |= xy_face || z == 0 || z == v->dim[2] - 1;
            }
        }
    for (int l = 1; l < MATCH_LABELS; l++)
        if (out->count[l])
            for (int a = 0; a < 3; a++) out->centroid[l][a] /= (double)out->count[l];
}

void match_evaluate(const Volume *vols, int count, const Matcher *const *methods, int num_methods,
                    MatchReport *r)
{
    ALICE_ASSERT(num_methods >= 1 && num_methods <= 4, "1 to 4 matchers, not %d", num_methods);
    memset(r, 0, sizeof *r);
    r->num_methods = num_methods;
    for (int m = 0; m < num_methods; m++) r->method[m] = methods[m]->name;
    LabelCentroids *cent = xcalloc((size_t)count, sizeof *cent);
    void **desc = xcalloc((size_t)count * (size_t)num_methods, sizeof *desc);
    int index_of[MATCH_LABELS];
    for (int l = 0; l < MATCH_LABELS; l++) index_of[l] = -1;
    int cap[MATCH_LABELS] = {0};
    for (int i = 0; i < count; i++) {
        if (!vols[i].label) continue;
        label_centroids(&vols[i], &cent[i]);
        for (int m = 0; m < num_methods; m++) desc[i * num_methods + m] = methods[m]->describe(&vols[i]);
    }
    for (int q = 0; q < count; q++)
        for (int k = 0; k < count; k++) {
            if (q == k || !vols[q].label || !vols[k].label) continue;
            int labels[MATCH_LABELS], n = 0;
            double pq[MATCH_LABELS][3], pk[MATCH_LABELS][3];
            for (int l = 1; l < MATCH_LABELS; l++)
                if (cent[q].count[l] && cent[k].count[l]) {
                    if (cent[q].cut[l] || cent[k].cut[l]) {
                        r->cut_left_out++;
                        continue;
                    }
                    labels[n] = l;
                    memcpy(pq[n], cent[q].centroid[l], sizeof pq[n]);
                    n++;
                }
            if (!n) continue;
            r->pairs++;
            for (int i = 0; i < n; i++) {
                int l = labels[i];
                if (index_of[l] < 0) { index_of[l] = r->num_organs; r->organ[r->num_organs++] = l; }
                int o = index_of[l];
                if (r->n[o] == cap[o]) {
                    cap[o] = cap[o] ? 2 * cap[o] : 16;
                    for (int m = 0; m < num_methods; m++) {
                        r->errors[m][o] = xrealloc(r->errors[m][o], (size_t)cap[o] * sizeof(double));
                    }
                }
            }
            for (int m = 0; m < num_methods; m++) {
                methods[m]->map_points(desc[q * num_methods + m], desc[k * num_methods + m], n,
                                       (const double(*)[3])pq, pk);
                for (int i = 0; i < n; i++) {
                    int l = labels[i], o = index_of[l];
                    double e2 = 0;
                    for (int a = 0; a < 3; a++) {
                        double d = (pk[i][a] - cent[k].centroid[l][a]) * vols[k].spacing[a];
                        e2 += d * d;
                    }
                    r->errors[m][o][r->n[o]] = sqrt(e2);
                }
            }
            for (int i = 0; i < n; i++) r->n[index_of[labels[i]]]++;
        }
    for (int i = 0; i < count * num_methods; i++)
        if (desc[i]) methods[i % num_methods]->free_description(desc[i]);
    free(desc);
    free(cent);
    /* Organs in label order for the table. */
    for (int a = 1; a < r->num_organs; a++)
        for (int b = a; b > 0 && r->organ[b - 1] > r->organ[b]; b--) {
            int t = r->organ[b]; r->organ[b] = r->organ[b - 1]; r->organ[b - 1] = t;
            int tn = r->n[b]; r->n[b] = r->n[b - 1]; r->n[b - 1] = tn;
            for (int m = 0; m < num_methods; m++) {
                double *te = r->errors[m][b]; r->errors[m][b] = r->errors[m][b - 1]; r->errors[m][b - 1] = te;
            }
        }
}

void match_report_free(MatchReport *r)
{
    for (int m = 0; m < r->num_methods; m++)
        for (int o = 0; o < r->num_organs; o++) free(r->errors[m][o]);
    memset(r, 0, sizeof *r);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void match_report_stats(const MatchReport *r, int m, int o, double *mean, double *median, int *n)
{
    int total = 0;
    for (int i = 0; i < r->num_organs; i++)
        if (o < 0 || o == i) total += r->n[i];
    *n = total;
    *mean = *median = NAN;
    if (!total) return;
    double *v = xmalloc((size_t)total * sizeof *v), sum = 0;
    int k = 0;
    for (int i = 0; i < r->num_organs; i++)
        if (o < 0 || o == i)
            for (int j = 0; j < r->n[i]; j++) { v[k++] = r->errors[m][i][j]; sum += r->errors[m][i][j]; }
    qsort(v, (size_t)total, sizeof *v, compare_double);
    *mean = sum / total;
    *median = total % 2 ? v[total / 2] : 0.5 * (v[total / 2 - 1] + v[total / 2]);
    free(v);
}

void match_report_print(FILE *out, const MatchReport *r, const char *(*organ_name)(int label))
{
    fprintf(out, MATCH_REPORT_START " organ centroids of Q mapped into K, %d ordered pairs\n",
            r->pairs);
    if (r->cut_left_out)
        fprintf(out, "(%d organ pairs left out: the field of view cuts the organ in Q or in K, so "
                "the visible parts' centroids are not the same anatomy)\n", r->cut_left_out);
    fprintf(out, "\n");
    fprintf(out, "| organ | pairs |");
    for (int m = 0; m < r->num_methods; m++) fprintf(out, " %s mean | %s median |", r->method[m], r->method[m]);
    fprintf(out, "\n|---|---:|");
    for (int m = 0; m < r->num_methods; m++) fprintf(out, "---:|---:|");
    fprintf(out, "\n");
    for (int row = 0; row < r->num_organs; row++) {
        const char *name = organ_name ? organ_name(r->organ[row]) : NULL;
        char label[64];
        if (name) snprintf(label, sizeof label, "%s", name);
        else snprintf(label, sizeof label, "label %d", r->organ[row]);
        fprintf(out, "| %s | %d |", label, r->n[row]);
        for (int m = 0; m < r->num_methods; m++) {
            double mean, median;
            int n;
            match_report_stats(r, m, row, &mean, &median, &n);
            fprintf(out, " %.1f | %.1f |", mean, median);
        }
        fprintf(out, "\n");
    }
    int n = 0;
    for (int o = 0; o < r->num_organs; o++) n += r->n[o];
    fprintf(out, "| all | %d |", n);
    for (int m = 0; m < r->num_methods; m++) {
        double mean, median;
        int k;
        match_report_stats(r, m, -1, &mean, &median, &k);
        fprintf(out, " %.1f | %.1f |", mean, median);
    }
    fprintf(out, "\n");
}

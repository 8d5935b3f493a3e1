/* The triangle normals behind the DeepMind area table are generated here rather than copied:
 *  - iso-vertices sit at the midpoints of the cube edges whose two voxels differ;
 *  - on each cube face the cut edges are joined pairwise; on an ambiguous face (diagonal
 *    pattern) each "inside" corner is cut off on its own;
 *  - a code with more than four voxels on uses the surface of its complement (the same
 *    surface with the inside flipped), which makes the table symmetric as DeepMind's is;
 *  - each closed polygon is triangulated; where the polygon is not planar the triangulation
 *    changes the area, and the DeepMind table is reproduced by taking the triangulation of
 *    largest area, ties broken by the fewest distinct triangle planes.
 * Checked against the published table (every code, anisotropic spacings) while writing this;
 * tests/reference/metrics_ref.py rebuilds it independently in numpy.
 * A triangle's area vector n (cross product / 2) maps under the spacing D = diag(s) to
 * cof(D) n = (s1 s2 n0, s0 s2 n1, s0 s1 n2), whose length is the area in mm^2. */
#include "eval/surface_area.h"

#include <math.h>
#include <string.h>

enum { CUBE_CORNERS = 8, CUBE_EDGES = 12, CUBE_FACES = 6, MAX_POLYGON = 12, MAX_TRIANGLES = 16 };

typedef struct {
    double normal[MAX_TRIANGLES][3];
    int count;
} SurfaceTriangles;

static void corner_coords(int corner, int xyz[3])
{
    xyz[0] = (corner >> 2) & 1;
    xyz[1] = (corner >> 1) & 1;
    xyz[2] = corner & 1;
}

static int corner_inside(int code, int corner)
{
    int p[3];
    corner_coords(corner, p);
    return (code & neighbour_code_bit(p[0], p[1], p[2])) != 0;
}

/* Cube edges as corner pairs (corners differ in exactly one coordinate bit). */
static int cube_edges(int edge_corners[CUBE_EDGES][2])
{
    int n = 0;
    for (int c = 0; c < CUBE_CORNERS; c++)
        for (int bit = 0; bit < 3; bit++) {
            int d = c ^ (1 << bit);
            if (d > c) { edge_corners[n][0] = c; edge_corners[n][1] = d; n++; }
        }
    return n;
}

static int edge_of(const int edge_corners[CUBE_EDGES][2], int a, int b)
{
    if (a > b) { int t = a; a = b; b = t; }
    for (int e = 0; e < CUBE_EDGES; e++)
        if (edge_corners[e][0] == a && edge_corners[e][1] == b) return e;
    return -1;
}

/* The four corners of each face in cyclic order. */
static void cube_faces(int faces[CUBE_FACES][4])
{
    int f = 0;
    for (int axis = 0; axis < 3; axis++)
        for (int side = 0; side < 2; side++) {
            int u = (axis + 1) % 3, v = (axis + 2) % 3;
            const int cyc[4][2] = {{0, 0}, {1, 0}, {1, 1}, {0, 1}};
            for (int k = 0; k < 4; k++) {
                int p[3];
                p[axis] = side;
                p[u] = cyc[k][0];
                p[v] = cyc[k][1];
                faces[f][k] = 4 * p[0] + 2 * p[1] + p[2];
            }
            f++;
        }
}

static void edge_midpoint(const int edge_corners[CUBE_EDGES][2], int e, double out[3])
{
    int a[3], b[3];
    corner_coords(edge_corners[e][0], a);
    corner_coords(edge_corners[e][1], b);
    for (int k = 0; k < 3; k++) out[k] = 0.5 * (a[k] + b[k]);
}

static void triangle_normal(const double a[3], const double b[3], const double c[3], double n[3])
{
    double u[3], v[3];
    for (int k = 0; k < 3; k++) { u[k] = b[k] - a[k]; v[k] = c[k] - a[k]; }
    n[0] = 0.5 * (u[1] * v[2] - u[2] * v[1]);
    n[1] = 0.5 * (u[2] * v[0] - u[0] * v[2]);
    n[2] = 0.5 * (u[0] * v[1] - u[1] * v[0]);
}

static double norm3(const double n[3]) { return sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]); }

/* Triangulation search over one polygon. */
typedef struct {
    double vertex[MAX_POLYGON][3];
    int n;
    int tri[MAX_POLYGON][3];   /* current partial triangulation */
    int ntri;
    int best[MAX_POLYGON][3];
    int nbest;
    double best_area;
    int best_planes;
} TriangulationSearch;

static int distinct_planes(const TriangulationSearch *s)
{
    double dirs[MAX_POLYGON][3];
    int nd = 0;
    for (int t = 0; t < s->ntri; t++) {
        double n[3];
        triangle_normal(s->vertex[s->tri[t][0]], s->vertex[s->tri[t][1]], s->vertex[s->tri[t][2]], n);
        double len = norm3(n);
        if (len < 1e-12) continue;
        int same = 0;
        for (int d = 0; d < nd && !same; d++) {
            double dot = (n[0] * dirs[d][0] + n[1] * dirs[d][1] + n[2] * dirs[d][2]) / len;
            same = fabs(fabs(dot) - 1.0) < 1e-9;   /* parallel either way round */
        }
        if (!same) {
            for (int k = 0; k < 3; k++) dirs[nd][k] = n[k] / len;
            nd++;
        }
    }
    return nd;
}

static void consider(TriangulationSearch *s)
{
    double area = 0;
    for (int t = 0; t < s->ntri; t++) {
        double n[3];
        triangle_normal(s->vertex[s->tri[t][0]], s->vertex[s->tri[t][1]], s->vertex[s->tri[t][2]], n);
        area += norm3(n);
    }
    int planes = distinct_planes(s);
    int better = s->nbest == 0 || area > s->best_area + 1e-9 ||
                 (fabs(area - s->best_area) <= 1e-9 && planes < s->best_planes);
    if (!better) return;
    s->best_area = area;
    s->best_planes = planes;
    s->nbest = s->ntri;
    memcpy(s->best, s->tri, sizeof s->tri);
}

/* Every triangulation of the polygon, each once: the pending sub-polygons (i..j, chord i-j)
 * are split by choosing the apex k of the triangle on chord i-j. */
static void enumerate(TriangulationSearch *s, int pending[][2], int npending)
{
    while (npending > 0 && pending[npending - 1][1] - pending[npending - 1][0] < 2) npending--;
    if (npending == 0) { consider(s); return; }
    int i = pending[npending - 1][0], j = pending[npending - 1][1];
    for (int k = i + 1; k < j; k++) {
        int next[MAX_POLYGON * 2][2];
        memcpy(next, pending, sizeof(int[2]) * (size_t)(npending - 1));
        next[npending - 1][0] = i; next[npending - 1][1] = k;
        next[npending][0] = k; next[npending][1] = j;
        s->tri[s->ntri][0] = i; s->tri[s->ntri][1] = k; s->tri[s->ntri][2] = j;
        s->ntri++;
        enumerate(s, next, npending + 1);
        s->ntri--;
    }
}

static void code_triangles(int code, SurfaceTriangles *out)
{
    out->count = 0;
    int popcount = 0;
    for (int c = 0; c < CUBE_CORNERS; c++) popcount += corner_inside(code, c);
    if (popcount > CUBE_CORNERS / 2) code = (NEIGHBOUR_CODES - 1) ^ code;

    int edge_corners[CUBE_EDGES][2], faces[CUBE_FACES][4];
    cube_edges(edge_corners);
    cube_faces(faces);
    int adj[CUBE_EDGES][2], degree[CUBE_EDGES] = {0};
    for (int f = 0; f < CUBE_FACES; f++) {
        int in[4], cut[4], ncut = 0;
        for (int k = 0; k < 4; k++) in[k] = corner_inside(code, faces[f][k]);
        for (int k = 0; k < 4; k++)
            if (in[k] != in[(k + 1) % 4]) cut[ncut++] = edge_of(edge_corners, faces[f][k], faces[f][(k + 1) % 4]);
        int pairs[2][2], npairs = 0;
        if (ncut == 2) {
            pairs[0][0] = cut[0]; pairs[0][1] = cut[1]; npairs = 1;
        } else if (ncut == 4) {
            for (int k = 0; k < 4; k++)
                if (in[k]) {
                    pairs[npairs][0] = edge_of(edge_corners, faces[f][k], faces[f][(k + 1) % 4]);
                    pairs[npairs][1] = edge_of(edge_corners, faces[f][k], faces[f][(k + 3) % 4]);
                    npairs++;
                }
        }
        for (int p = 0; p < npairs; p++) {
            int a = pairs[p][0], b = pairs[p][1];
            adj[a][degree[a]++] = b;
            adj[b][degree[b]++] = a;
        }
    }
    int used[CUBE_EDGES] = {0};
    for (int start = 0; start < CUBE_EDGES; start++) {
        if (degree[start] == 0 || used[start]) continue;
        TriangulationSearch s = {0};
        int prev = -1, cur = start;
        while (!used[cur]) {
            used[cur] = 1;
            edge_midpoint(edge_corners, cur, s.vertex[s.n++]);
            int nxt = adj[cur][0] == prev ? adj[cur][1] : adj[cur][0];
            prev = cur;
            cur = nxt;
        }
        int pending[MAX_POLYGON * 2][2] = {{0, s.n - 1}};
        enumerate(&s, pending, 1);
        for (int t = 0; t < s.nbest && out->count < MAX_TRIANGLES; t++)
            triangle_normal(s.vertex[s.best[t][0]], s.vertex[s.best[t][1]], s.vertex[s.best[t][2]],
                            out->normal[out->count++]);
    }
}

void surface_area_table(const double spacing[3], double area[NEIGHBOUR_CODES])
{
    const double scale[3] = {spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]};
    for (int code = 0; code < NEIGHBOUR_CODES; code++) {
        SurfaceTriangles tris;
        code_triangles(code, &tris);
        double sum = 0;
        for (int t = 0; t < tris.count; t++) {
            double n[3];
            for (int k = 0; k < 3; k++) n[k] = tris.normal[t][k] * scale[k];
            sum += norm3(n);
        }
        area[code] = sum;
    }
}

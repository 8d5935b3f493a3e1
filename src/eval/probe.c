#include "eval/probe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/check.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/crop.h"
#include "models/vit.h"
#include "nn/layers.h"
#include "train/checkpoint.h"
#include "train/data_source.h"

#define PROBE_MAX_CLASSES 256

/* Majority label of every patch of a label crop [X, Y, Z]. */
static void patch_labels(const int32_t *label, const int dim[3], int p, int *out)
{
    int g[3] = {dim[0] / p, dim[1] / p, dim[2] / p}, n = 0;
    int counts[PROBE_MAX_CLASSES];
    for (int gx = 0; gx < g[0]; gx++)
        for (int gy = 0; gy < g[1]; gy++)
            for (int gz = 0; gz < g[2]; gz++, n++) {
                memset(counts, 0, sizeof counts);
                for (int x = 0; x < p; x++)
                    for (int y = 0; y < p; y++)
                        for (int z = 0; z < p; z++) {
                            int32_t l = label[volume_index(dim, gx * p + x, gy * p + y, gz * p + z)];
                            if (l >= 0 && l < PROBE_MAX_CLASSES) counts[l]++;
                        }
                int best = 0;
                for (int c = 1; c < PROBE_MAX_CLASSES; c++) if (counts[c] > counts[best]) best = c;
                out[n] = best;
            }
}

ProbeResult probe_knn(const Config *cfg, const char *checkpoint, int cases, int crops_per_case, int k)
{
    const AliceBackend *be = backend_cpu();
    ParamSet ps;
    params_init_registry(&ps);
    VitEncoder enc;
    vit_encoder_register(&enc, &ps, "encoder", cfg->patch, cfg->embed_dim, cfg->heads, cfg->mlp_dim, cfg->depth);
    params_allocate(&ps, be, 0);
    params_initialize(&ps, (uint64_t)cfg->seed);
    if (checkpoint) checkpoint_load_encoder(checkpoint, &ps, "encoder.", cfg);
    int grid[3], N = 1;
    for (int a = 0; a < 3; a++) { grid[a] = cfg->crop[a] / cfg->patch; N *= grid[a]; }
    const int E = cfg->embed_dim;
    Arena arena;
    VitEncoderActs acts;
    arena_plan(&arena, be, DTYPE_F32);
    vit_encoder_layout(&enc, &acts, &arena, 1, N, TSTACK_FORWARD_ONLY);
    float *pos = arena_floats(&arena, (size_t)N * E);
    int *ident = arena_ints(&arena, (size_t)N);
    float *patches = arena_floats(&arena, (size_t)N * enc.P);
    float *vol = arena_floats(&arena, (size_t)N * enc.P);
    arena_commit(&arena);
    vit_encoder_layout(&enc, &acts, &arena, 1, N, TSTACK_FORWARD_ONLY);
    pos = arena_floats(&arena, (size_t)N * E);
    ident = arena_ints(&arena, (size_t)N);
    patches = arena_floats(&arena, (size_t)N * enc.P);
    vol = arena_floats(&arena, (size_t)N * enc.P);
    float *host_pos = xmalloc((size_t)N * E * sizeof(float));
    sincos_position_embedding_3d(host_pos, grid, E);
    be->upload(pos, host_pos, (size_t)N * E * sizeof(float));
    free(host_pos);
    int *host_ident = xmalloc((size_t)N * sizeof(int));
    for (int n = 0; n < N; n++) host_ident[n] = n;
    be->upload(ident, host_ident, (size_t)N * sizeof(int));
    free(host_ident);

    LoaderSource src = data_source_open(cfg);
    int labelled = 0;   /* the buffers hold what the data has, not what was asked */
    for (int c = 0; c < src.num_cases; c++) labelled += src.case_has_label(src.ctx, c) != 0;
    if (labelled < 2)
        alice_die("probe: %s has %d labelled case(s); the leave-one-case-out probe needs 2",
                  cfg->data, labelled);
    if (checkpoint && cases > labelled)
        log_warn("probe: --cases %d, but %s has %d labelled cases: probing those %d", cases,
                 cfg->data, labelled, labelled);
    if (cases > labelled) cases = labelled;
    long cap = (long)cases * crops_per_case * N, count = 0;
    float *feat = xmalloc((size_t)cap * E * sizeof(float));
    int *label = xmalloc((size_t)cap * sizeof(int)), *owner = xmalloc((size_t)cap * sizeof(int));
    float *crop = xmalloc((size_t)N * enc.P * sizeof(float));
    int32_t *crop_label = xmalloc((size_t)N * enc.P * sizeof(int32_t));
    HuWindow w = {cfg->window_lo, cfg->window_hi};
    int used = 0;
    for (int c = 0; c < src.num_cases && used < cases; c++) {
        if (!src.case_has_label(src.ctx, c)) continue;
        Volume v;
        src.read_case(src.ctx, c, &v, NULL);
        for (int j = 0; j < crops_per_case; j++) {
            RngStream rng;
            rng_init(&rng, (uint64_t)cfg->seed, 0, (uint32_t)(c * crops_per_case + j), RNG_CROP);
            int center[3], start[3];
            crop_random_body_center(&v, cfg->crop, &rng, center);
            crop_start_for_center(v.dim, cfg->crop, center, start);
            crop_extract(&v, w, start, cfg->crop, crop, crop_label);
            be->upload(vol, crop, (size_t)N * enc.P * sizeof(float));
            be->patchify(patches, vol, 1, cfg->crop[0], cfg->crop[1], cfg->crop[2], cfg->patch);
            vit_encoder_forward(&enc, &acts, &ps, patches, N, ident, N, pos);
            be->download(feat + (size_t)count * E, acts.st.out, (size_t)N * E * sizeof(float));
            patch_labels(crop_label, cfg->crop, cfg->patch, label + count);
            for (int n = 0; n < N; n++) owner[count + n] = c;
            count += N;
        }
        volume_free(&v);
        used++;
    }
    ALICE_ASSERT(used == cases, "probed %d of %d labelled cases", used, cases);
    /* Cosine similarity: normalise once. */
    for (long i = 0; i < count; i++) {
        double s = 0;
        for (int e = 0; e < E; e++) s += (double)feat[i * E + e] * feat[i * E + e];
        float inv = (float)(1.0 / sqrt(s + 1e-12));
        for (int e = 0; e < E; e++) feat[i * E + e] *= inv;
    }
    long hits_class[PROBE_MAX_CLASSES] = {0}, total_class[PROBE_MAX_CLASSES] = {0}, hits = 0;
    #pragma omp parallel for schedule(dynamic, 16) reduction(+ : hits)
    for (long i = 0; i < count; i++) {
        float best_s[64];
        int best_l[64], have = 0;
        for (long j = 0; j < count; j++) {
            if (owner[j] == owner[i]) continue;
            float s = 0;
            for (int e = 0; e < E; e++) s += feat[i * E + e] * feat[j * E + e];
            if (have < k || s > best_s[have - 1]) {
                int at = have < k ? have++ : k - 1;
                while (at > 0 && best_s[at - 1] < s) { best_s[at] = best_s[at - 1]; best_l[at] = best_l[at - 1]; at--; }
                best_s[at] = s;
                best_l[at] = label[j];
            }
        }
        int votes[PROBE_MAX_CLASSES] = {0}, pred = 0;
        for (int t = 0; t < have; t++) votes[best_l[t]]++;
        for (int c = 1; c < PROBE_MAX_CLASSES; c++) if (votes[c] > votes[pred]) pred = c;
        int ok = pred == label[i];
        hits += ok;
        #pragma omp atomic
        total_class[label[i]]++;
        if (ok) {
            #pragma omp atomic
            hits_class[label[i]]++;
        }
    }
    ProbeResult r = {0, (double)hits / (double)count, count, 0};
    for (int c = 0; c < PROBE_MAX_CLASSES; c++)
        if (total_class[c]) { r.classes++; r.balanced_accuracy += (double)hits_class[c] / total_class[c]; }
    if (r.classes < 2)
        alice_die("probe: the %ld tokens of %d case(s) hold %d class: a k-NN probe of one class "
                  "scores 1 whatever the encoder; give crops that reach organs (a larger crop, "
                  "more --crops or --cases)", count, used, r.classes);
    r.balanced_accuracy /= r.classes;
    src.close(src.ctx);
    free(feat); free(label); free(owner); free(crop); free(crop_label);
    arena_free(&arena);
    params_free(&ps);
    return r;
}

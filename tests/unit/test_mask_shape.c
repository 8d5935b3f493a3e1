/* The masks pretrain_model_draw_masks draws (CPU backend), per masked view of every sample:
 *  - mask_shape = tokens: perm is the permutation(N) of the documented stream (seed, step,
 *    2g + v, RNG_MASK), as before the option existed;
 *  - mask_shape = z_tubes: perm is a permutation of 0..N-1 whose visible part perm[:nvis]
 *    covers whole z-columns (the gz tokens (ix*gy + iy)*gz + iz of one in-plane position),
 *    nvis / gz columns in the order a permutation of the columns from the same stream gives;
 *    the mask upload marks exactly the other tokens; the views and samples get different
 *    columns;
 *  - a mask_ratio whose masked tokens are not whole columns is refused by the configuration
 *    check (tested end to end in tests/train/test_pretrain_bad_input.sh). */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "core/rng.h"
#include "models/pretrain_model.h"
#include "ops/backend.h"
#include "test.h"
#include "test_config.h"

static const char *const tiny[][2] = {
    {"method", "alice"}, {"crop", "16,16,12"}, {"patch", "4"}, {"embed_dim", "12"},
    {"depth", "1"}, {"heads", "2"}, {"mlp_dim", "16"}, {"dec_dim", "12"}, {"dec_depth", "1"},
    {"dec_heads", "2"}, {"dec_mlp_dim", "16"}, {"head_hidden", "8"},
    {"head_bottleneck", "6"}, {"head_out", "8"}, {"casa_dim", "6"}, {"batch", "3"},
    {"mask_ratio", "0.75"},
};

enum { STEP = 7, FIRST_SAMPLE = 5 };

static int check_shape(const char *shape)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    config_set(&cfg, "mask_shape", shape, "test", 0);
    const int tubes = !strcmp(shape, "z_tubes");
    PretrainModel m;
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    pretrain_model_draw_masks(&m, STEP, FIRST_SAMPLE);
    const int N = m.N, gz = m.grid[2], columns = N / gz, nvis = m.nvis;
    TEST_CHECK(N == 48 && gz == 3 && nvis == 12, "grid: N %d, gz %d, nvis %d", N, gz, nvis);
    float *mask = xmalloc((size_t)MASKED_VIEWS * m.B * N * sizeof(float));
    m.be->download(mask, m.masked.mask, (size_t)MASKED_VIEWS * m.B * N * sizeof(float));
    int *want = xmalloc((size_t)N * sizeof(int)), *seen = xmalloc((size_t)N * sizeof(int));
    int first_columns[MASKED_VIEWS * 3], same_as_first = 0;
    for (int s = 0; s < MASKED_VIEWS * m.B; s++) {
        const int *perm = m.perm_host + (size_t)s * N;
        RngStream rng;
        rng_init(&rng, (uint64_t)cfg.seed, STEP, (uint32_t)(2 * (FIRST_SAMPLE + s % m.B) + s / m.B),
                 RNG_MASK);
        rng_permutation(&rng, want, tubes ? columns : N);
        memset(seen, 0, (size_t)N * sizeof(int));
        int bad = 0;
        for (int j = 0; j < N; j++) {
            bad += perm[j] < 0 || perm[j] >= N || seen[perm[j]]++;
            const int expect = tubes ? want[j / gz] * gz + j % gz : want[j];
            bad += perm[j] != expect;
            bad += mask[(size_t)s * N + perm[j]] != (j >= nvis ? 1.0f : 0.0f);
        }
        TEST_CHECK(bad == 0, "%s, masked sample %d: %d tokens off the documented draw", shape, s,
                   bad);
        if (tubes) {
            /* every column all visible or all masked */
            int mixed = 0;
            for (int c = 0; c < columns; c++) {
                int visible = 0;
                for (int z = 0; z < gz; z++) visible += mask[(size_t)s * N + c * gz + z] == 0.0f;
                mixed += visible != 0 && visible != gz;
            }
            TEST_CHECK(mixed == 0, "z_tubes, sample %d: %d columns partly masked", s, mixed);
            first_columns[s] = perm[0] / gz;
            same_as_first += s > 0 && first_columns[s] == first_columns[0];
        }
    }
    if (tubes)
        TEST_CHECK(same_as_first < MASKED_VIEWS * m.B - 1, "every masked view starts with column "
                   "%d: the views share one draw", first_columns[0]);
    free(mask);
    free(want);
    free(seen);
    pretrain_model_free(&m);
    return 0;
}

static int test_tokens(void) { return check_shape("tokens"); }
static int test_z_tubes(void) { return check_shape("z_tubes"); }

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_tokens);
    TEST_RUN(test_z_tubes);
    MPI_Finalize();
    return test_finish();
}

/* It learns: on a fixed small synthetic set (two phantom crops, windowed to [0, 1]) the MAE's
 * masked reconstruction loss (raw intensities, norm_pix = 0) falls at least 5x within 300
 * AdamW steps; masks are drawn anew every step as in training. */
#include <mpi.h>
#include <string.h>

#include "core/check.h"
#include "data/phantom.h"
#include "models/pretrain_model.h"
#include "test.h"
#include "test_config.h"
#include "train/optim.h"

static const char *const tiny[][2] = {
    {"method", "mae"}, {"crop", "32,32,16"}, {"patch", "8"}, {"embed_dim", "48"}, {"depth", "2"},
    {"heads", "4"}, {"mlp_dim", "96"}, {"dec_dim", "24"}, {"dec_depth", "1"}, {"dec_heads", "2"},
    {"dec_mlp_dim", "48"}, {"batch", "2"}, {"norm_pix", "0"}, {"lr", "3e-3"}, {"warmup", "10"},
    {"steps", "300"}, {"clip", "3"},
};

static int test_mae_loss_falls_5x(void)
{
    Config cfg;
    TEST_CONFIG(&cfg, tiny);
    PretrainModel m;
    pretrain_model_init(&m, &cfg, backend_cpu(), cfg.batch);
    const int X = 32, Y = 32, Z = 16;
    float *crops = xmalloc(sizeof(float) * 2 * X * Y * Z);
    for (int b = 0; b < 2; b++) {
        Volume v;
        phantom_generate(11, b, PHANTOM_SMALL, &v, NULL);
        /* A crop through the middle of the abdomen, window [-125, 225] HU -> [0, 1]. */
        int o[3] = {v.dim[0] / 2 - X / 2, v.dim[1] / 2 - Y / 2, v.dim[2] / 2 - Z / 2};
        for (int x = 0; x < X; x++)
            for (int y = 0; y < Y; y++)
                for (int z = 0; z < Z; z++) {
                    float hu = v.image[volume_index(v.dim, o[0] + x, o[1] + y, o[2] + z)];
                    float w = (hu + 125.0f) / 350.0f;
                    crops[(((size_t)b * X + x) * Y + y) * Z + z] = w < 0 ? 0 : (w > 1 ? 1 : w);
                }
        volume_free(&v);
    }
    const float *views[VIEW_COUNT] = {crops, NULL, NULL, NULL};
    pretrain_model_set_views(&m, views);
    double first = 0, last = 0;
    for (long s = 0; s < cfg.steps; s++) {
        pretrain_model_draw_masks(&m, s, 0);
        LossTerms t = pretrain_model_forward_backward(&m);
        if (s < 5) first += t.l_r / 5;
        if (s >= cfg.steps - 20) last += t.l_r / 20;
        optimizer_update(&m.online, &cfg, schedule_lr(&cfg, s, cfg.batch), s + 1,
                         grad_global_norm(&m.online), NULL);
    }
    printf("  MAE masked reconstruction loss: first 5 steps %.4f, last 20 steps %.4f (%.1fx)\n",
           first, last, first / last);
    TEST_CHECK(first / last >= 5.0, "loss fell only %.2fx (need 5x)", first / last);
    free(crops);
    pretrain_model_free(&m);
    return 0;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    TEST_RUN(test_mae_loss_falls_5x);
    MPI_Finalize();
    return test_finish();
}

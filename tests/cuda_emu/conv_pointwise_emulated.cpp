/* The own pointwise convolution kernels (cuda/cuda_conv_pointwise.cu) on the host through
 * emu_cuda.h (test_conv_pointwise_emulated.sh cuts them into conv_pointwise_kernels.inc), for
 * UNETR's shapes (1 -> 16, 32 -> 16, 16 -> 14 with a bias) and the limits (32 -> 32, 1 -> 1),
 * batches of 1 and 2, volumes that leave a ragged last tile:
 *  - forward y = bias + W x and data gradient dx = W^T dy within 1e-5 relative of a double
 *    reference (fp32 sums of at most 32 terms), every element written (NaN-poisoned first);
 *  - weight gradient dW += sum dy x^T onto non-zero starting values, within 1e-5 of the scale
 *    of the sum of |terms|, and bit-identical when run twice (fixed reduction order); the bias
 *    gradient through the backend's channel sums (a host stand-in here, tested elsewhere);
 *  - NULL dx, dW or db leave the others right; cuda_pointwise_conv_runs only for 1x1x1,
 *    stride 1, no padding, channels within kPointwiseMaxChannels, with pointwise_conv = own. */
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "emu_cuda.h"
#include "emu_test_util.h"

/* What the cut file calls outside itself. */
enum GpuPointwiseConv { POINTWISE_CONV_CUDNN, POINTWISE_CONV_OWN };
static int g_pointwise = POINTWISE_CONV_OWN;
static int gpu_pointwise_conv() { return g_pointwise; }
static void cuda_channel_sums_accumulate(float *target, const float *x, int B, int C, long V)
{
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int b = 0; b < B; b++)
            for (long v = 0; v < V; v++) s += x[((size_t)b * C + c) * V + v];
        target[c] += (float)s;
    }
}
#include "cuda/cuda_conv_pointwise.h"
#include "conv_pointwise_kernels.inc"  /* cut out of cuda/ by the .sh */

static EmuLcg rng{20261128u};
static std::vector<float> randoms(size_t n, float scale)
{
    std::vector<float> v(n);
    for (float &x : v) x = rng.uniform(-scale, scale);
    return v;
}

static double worst_relative(const std::vector<float> &got, const std::vector<double> &want,
                             const std::vector<double> &scale)
{
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        const double err = std::fabs(got[i] - want[i]) / (scale[i] + 1e-30);
        if (!(err <= worst)) worst = err;  /* NaN (an unwritten element) wins */
    }
    return worst;
}

/* The map's double reference: out[b, o, v] = bias[o] + sum_i Wm[o, i] in[b, i, v] with
 * Wm = W [nout, nin] or, transposed, W^T (the data gradient); scale = the sum of |terms|. */
static void map_reference(std::vector<double> &out, std::vector<double> &scale,
                          const std::vector<float> &in, const std::vector<float> &W,
                          const float *bias, int B, int nin, int nout, long V, bool transposed)
{
    out.assign((size_t)B * nout * V, 0.0);
    scale.assign(out.size(), 0.0);
    for (int b = 0; b < B; b++)
        for (long v = 0; v < V; v++)
            for (int o = 0; o < nout; o++) {
                double acc = bias ? bias[o] : 0.0, mag = std::fabs(acc);
                for (int i = 0; i < nin; i++) {
                    const float w = transposed ? W[(size_t)i * nout + o] : W[(size_t)o * nin + i];
                    const double t = (double)w * in[((size_t)b * nin + i) * V + v];
                    acc += t;
                    mag += std::fabs(t);
                }
                out[((size_t)b * nout + o) * V + v] = acc;
                scale[((size_t)b * nout + o) * V + v] = mag + 1e-6;
            }
}

static void pointwise_case(int B, int Cin, int Cout, long V, bool with_bias)
{
    const size_t nx = (size_t)B * Cin * V, ny = (size_t)B * Cout * V;
    const std::vector<float> x = randoms(nx, 1.0f), dy = randoms(ny, 1.0f);
    const std::vector<float> W = randoms((size_t)Cout * Cin, 0.5f), bias = randoms(Cout, 0.5f);
    const std::vector<float> dW0 = randoms((size_t)Cout * Cin, 2.0f), db0 = randoms(Cout, 2.0f);
    std::vector<float> y(ny, NAN), dx(nx, NAN), dW = dW0, db = db0;
    cuda_pointwise_conv_fwd(y.data(), x.data(), W.data(), with_bias ? bias.data() : nullptr, B,
                            Cin, Cout, V);
    cuda_pointwise_conv_bwd(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), B,
                            Cin, Cout, V);
    std::vector<double> ry, sy, rdx, sdx;
    std::vector<double> rdW((size_t)Cout * Cin), sdW((size_t)Cout * Cin);
    map_reference(ry, sy, x, W, with_bias ? bias.data() : nullptr, B, Cin, Cout, V, false);
    map_reference(rdx, sdx, dy, W, nullptr, B, Cout, Cin, V, true);
    for (int o = 0; o < Cout; o++)
        for (int i = 0; i < Cin; i++) {
            double acc = dW0[(size_t)o * Cin + i], mag = std::fabs(acc);
            for (int b = 0; b < B; b++)
                for (long v = 0; v < V; v++) {
                    const double t = (double)dy[((size_t)b * Cout + o) * V + v] *
                                     x[((size_t)b * Cin + i) * V + v];
                    acc += t;
                    mag += std::fabs(t);
                }
            rdW[(size_t)o * Cin + i] = acc;
            sdW[(size_t)o * Cin + i] = mag;
        }
    const double ey = worst_relative(y, ry, sy), edx = worst_relative(dx, rdx, sdx);
    const double edW = worst_relative(dW, rdW, sdW);
    EMU_CHECK(ey <= 1e-5 && edx <= 1e-5 && edW <= 1e-5, "pointwise B %d %d -> %d V %ld bias %d: "
              "y %.3g, dx %.3g, dW %.3g relative off the reference", B, Cin, Cout, V,
              (int)with_bias, ey, edx, edW);
    for (int o = 0; o < Cout; o++) {
        double s = db0[o];
        for (int b = 0; b < B; b++)
            for (long v = 0; v < V; v++) s += dy[((size_t)b * Cout + o) * V + v];
        EMU_CHECK(std::fabs(db[o] - s) <= 1e-5 * (1.0 + std::fabs(s)), "pointwise db[%d] = %.9g, "
                  "expected %.9g", o, db[o], s);
    }
    /* dW again from the same start, with dx and db not asked for: the same bits */
    std::vector<float> dW2 = dW0;
    cuda_pointwise_conv_bwd(nullptr, dW2.data(), nullptr, dy.data(), x.data(), W.data(), B, Cin,
                            Cout, V);
    EMU_CHECK(std::memcmp(dW2.data(), dW.data(), dW.size() * sizeof(float)) == 0,
              "pointwise %d -> %d: dW differs between two runs (or with dx and db NULL)", Cin,
              Cout);
    printf("  pointwise B %d %2d -> %2d V %5ld bias %d: y %.2g, dx %.2g, dW %.2g\n", B, Cin,
           Cout, V, (int)with_bias, ey, edx, edW);
}

int main()
{
    pointwise_case(2, 1, 16, 1000, false);   /* UNETR's input projection */
    pointwise_case(2, 32, 16, 700, false);   /* the last decoder block's projection */
    pointwise_case(1, 16, 14, 999, true);    /* the output layer, with its bias */
    pointwise_case(2, 32, 32, 130, true);    /* the limits */
    pointwise_case(1, 1, 1, 5, true);
    EMU_CHECK(cuda_pointwise_conv_runs(32, 16, 1, 1, 0) && cuda_pointwise_conv_runs(1, 16, 1, 1, 0),
              "UNETR's pointwise shapes must run on the own kernels");
    EMU_CHECK(!cuda_pointwise_conv_runs(64, 32, 1, 1, 0) &&
                  !cuda_pointwise_conv_runs(16, 16, 3, 1, 1) &&
                  !cuda_pointwise_conv_runs(16, 16, 1, 2, 0) &&
                  !cuda_pointwise_conv_runs(16, 16, 1, 1, 1),
              "only 1x1x1, stride 1, unpadded, <= 32 channels take the own kernels");
    g_pointwise = POINTWISE_CONV_CUDNN;
    EMU_CHECK(!cuda_pointwise_conv_runs(32, 16, 1, 1, 0),
              "pointwise_conv = cudnn: own kernels ran");
    printf("%s: own pointwise convolution kernels on the emulation\n", emu_fails ? "FAIL" : "ok");
    return emu_fails ? 1 : 0;
}

/* What the emulated-kernel test programs share beside the emulation itself: a reproducible
 * source of test inputs, a failure counter and main's ending. Used by
 * attention_gemm_path_emulated.cpp, attention_softmax_bwd_emulated.cpp, recon_rows_emulated.cpp,
 * plane_sums_emulated.cpp, layernorm_fwd_emulated.cpp and others. */
#ifndef ALICE_EMU_TEST_UTIL_H
#define ALICE_EMU_TEST_UTIL_H

#include <cstdarg>
#include <cstdint>
#include <cstdio>

/* A 64-bit LCG (Knuth's MMIX constants): uniform floats in [lo, hi) from the state's top 24
 * bits, the same sequence on every compiler and run for a given seed (the distributions of
 * <random> may differ between standard libraries). */
struct EmuLcg {
    uint64_t state;
    float uniform(float lo, float hi)
    {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        return lo + (hi - lo) * (float)((state >> 40) * (1.0 / 16777216.0));
    }
};

/* A failed check: counted in emu_fails, the first 20 printed (the format and its arguments). */
inline int emu_fails = 0;
#define EMU_CHECK(cond, ...)                                                                    \
    do {                                                                                        \
        if (!(cond) && emu_fails++ < 20) {                                                      \
            printf("FAIL: ");                                                                   \
            printf(__VA_ARGS__);                                                                \
            printf("\n");                                                                       \
        }                                                                                       \
    } while (0)

/* main's ending: with failures, their count on stderr and exit status 1; else the ok line
 * (printf format ok_fmt, a newline added) on stdout and 0. */
__attribute__((format(printf, 2, 3))) inline int emu_finish(int fails, const char *ok_fmt, ...)
{
    if (fails) {
        fprintf(stderr, "%d failures\n", fails);
        return 1;
    }
    va_list args;
    va_start(args, ok_fmt);
    vprintf(ok_fmt, args);
    va_end(args);
    putchar('\n');
    return 0;
}

#endif

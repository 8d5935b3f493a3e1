/* Fine-tuning's validation Dice (src/train/finetune.h case_mean_dice) against MONAI's
 * DiceMetric (include_background = False, ignore_empty = True, its default) on hand-made
 * cases of 12 voxels and 4 classes:
 *  - class 1: truth 4 voxels, prediction 3 of them + 1 elsewhere: 2*3/(4+4) = 0.75;
 *  - class 2: truth 2 voxels, predicted nowhere: 0;
 *  - class 3: not in the truth but predicted once: left out (MONAI gives NaN, not 0);
 *  mean (0.75 + 0) / 2 = 0.375. A case whose truth has no foreground: NaN. Labels outside
 *  0..K-1 in the prediction count for no class. */
#include <math.h>
#include <stdint.h>

#include "test.h"
#include "train/finetune.h"

static int test_against_monai_definition(void)
{
    /*                     0  1  2  3  4  5  6  7  8  9 10 11 */
    const int32_t truth[] = {1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0};
    const uint8_t pred[] = {1, 1, 1, 0, 0, 0, 1, 3, 0, 0, 9, 0};
    TEST_CLOSE(case_mean_dice(pred, truth, 12, 4), 0.375, 0, 1e-15,
               "classes 1 (0.75) and 2 (0); class 3 absent from the truth left out");
    const int32_t empty[12] = {0};
    TEST_CHECK(isnan(case_mean_dice(pred, empty, 12, 4)), "no foreground in the truth: NaN");
    const uint8_t perfect[] = {1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0};
    TEST_CLOSE(case_mean_dice(perfect, truth, 12, 4), 1.0, 0, 0, "a perfect prediction");
    return 0;
}

int main(void)
{
    TEST_RUN(test_against_monai_definition);
    return test_finish();
}

/* File-name suffix tests shared by the commands (core/strutil.h str_ends_with, nifti_io.h
 * nifti_name_stem), against stems worked out by hand:
 *  - "case_01.nii.gz" -> 7 ("case_01"), "case_01.nii" -> 7, "a.nii" -> 1;
 *  - neither suffix, a bare ".nii.gz" or ".nii" (nothing before it), ".gz" alone, "x.nii.gz.bak"
 *    -> 0; "x.img.nii" -> 5 (only the last suffix goes);
 *  - str_ends_with: the empty suffix always matches, a suffix longer than the string never,
 *    "_probs" ends "liver_probs" but not "liver_prob" or "probs". */
#include <stdio.h>

#include "core/strutil.h"
#include "nifti_io.h"
#include "test.h"

static int test_stems(void)
{
    static const struct { const char *name; size_t stem; } cases[] = {
        {"case_01.nii.gz", 7}, {"case_01.nii", 7}, {"a.nii", 1}, {"x.img.nii", 5},
        {"case_01.img", 0}, {".nii.gz", 0}, {".nii", 0}, {"x.gz", 0}, {"x.nii.gz.bak", 0}, {"", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        TEST_CHECK(nifti_name_stem(cases[i].name) == cases[i].stem,
                   "nifti_name_stem(\"%s\") = %zu, want %zu",
                   cases[i].name, nifti_name_stem(cases[i].name), cases[i].stem);
    return 0;
}

static int test_ends_with(void)
{
    TEST_CHECK(str_ends_with("abc", ""), "the empty suffix");
    TEST_CHECK(str_ends_with("", ""), "the empty suffix of the empty string");
    TEST_CHECK(!str_ends_with("bc", "abc"), "a suffix longer than the string");
    TEST_CHECK(str_ends_with("liver_probs", "_probs"), "liver_probs");
    TEST_CHECK(!str_ends_with("liver_prob", "_probs"), "liver_prob");
    TEST_CHECK(!str_ends_with("probs", "_probs"), "probs");
    TEST_CHECK(str_ends_with("_probs", "_probs"), "the whole string");
    return 0;
}

int main(void)
{
    TEST_RUN(test_stems);
    TEST_RUN(test_ends_with);
    return test_finish();
}

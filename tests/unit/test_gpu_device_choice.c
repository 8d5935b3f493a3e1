/* The rule by which a rank picks one of its visible GPUs (src/ops/gpu_device_choice.h), on the
 * launch layouts of a cluster, each against the devices a correct run must use: every rank of
 * a node on a different device whenever there are enough, and ranks sharing a device flagged.
 *  - mpirun, all 4 GPUs visible to 4 ranks: node rank r takes device r;
 *  - Slurm one GPU per task (--gpus-per-task=1 with binding): each rank sees one, takes it;
 *  - --gpu-bind=closest with block:cyclic tasks on 8 GPUs: ranks 0, 2, 4, 6 see GPUs 0-3 and
 *    ranks 1, 3, 5, 7 see 4-7; each group spreads over its four (node rank modulo the device
 *    count, the former rule, put ranks 0 and 4 both on device 0);
 *  - 2 ranks per GPU (tests on one GPU): both on it, flagged shared, the lower rank first;
 *  - 3 ranks on 2 GPUs: 0, 1, 0;
 *  - overlapping sets: {A} and {A, B} take A and B (the former rule, by equal sets, put both
 *    on A); {A, B} before {A} in rank order still does (the most constrained chooses first);
 *    {A, C}, {A, B}, {A, B} take C, B, A (rank 0 moved off A along an augmenting path: a
 *    greedy least-used choice put ranks 0 and 2 on A); {A, B}, {B, C}, {A, B}, {B, C}: 3 of
 *    4 ranks on their own device (B, C, A), the fourth on B beside rank 0;
 *  - ids compared whole: "A" is not "AB". */
#include <string.h>

#include "ops/gpu_device_choice.h"
#include "test.h"

enum { KEY = 32 };

/* keys[r] = sets[r], zero-padded records */
static void fill(char *keys, const char *const *sets, int n)
{
    memset(keys, 0, (size_t)n * KEY);
    for (int r = 0; r < n; r++) strncpy(keys + (size_t)r * KEY, sets[r], KEY - 1);
}

static void expect(const char *layout, const char *const *sets, int n, const int *count,
                   const int *index, const int *sharing)
{
    char keys[16 * KEY];
    fill(keys, sets, n);
    for (int r = 0; r < n; r++) {
        GpuDeviceChoice c = gpu_device_choice(keys, KEY, n, r, count[r]);
        TEST_CHECK(c.index == index[r] && c.sharing == sharing[r],
                   "%s: node rank %d took device %d with %d ranks on it, expected %d with %d",
                   layout, r, c.index, c.sharing, index[r], sharing[r]);
        /* first_on_device: exactly the lowest rank of each device's group (by its id) */
        const char *id = sets[r];
        int lower_same = 0;
        for (int q = 0; q < r; q++) {
            GpuDeviceChoice o = gpu_device_choice(keys, KEY, n, q, count[q]);
            const char *a = sets[q], *b = id;
            for (int k = 0; k < o.index; k++) a = strchr(a, ',') + 1;
            for (int k = 0; k < c.index; k++) b = strchr(b, ',') + 1;
            lower_same |= strcspn(a, ",") == strcspn(b, ",") && !strncmp(a, b, strcspn(a, ","));
        }
        TEST_CHECK(c.first_on_device == !lower_same, "%s: node rank %d first_on_device %d",
                   layout, r, c.first_on_device);
    }
}

static int test_layouts(void)
{
    const int four[] = {4, 4, 4, 4, 4, 4, 4, 4}, one[] = {1, 1, 1, 1}, two[] = {2, 2, 2, 2};
    const char *all4[] = {"A,B,C,D", "A,B,C,D", "A,B,C,D", "A,B,C,D"};
    expect("mpirun, all visible", all4, 4, four, (int[]){0, 1, 2, 3}, (int[]){1, 1, 1, 1});
    const char *bound[] = {"A", "B", "C", "D"};
    expect("one GPU per task", bound, 4, one, (int[]){0, 0, 0, 0}, (int[]){1, 1, 1, 1});
    const char *closest[] = {"A,B,C,D", "E,F,G,H", "A,B,C,D", "E,F,G,H",
                             "A,B,C,D", "E,F,G,H", "A,B,C,D", "E,F,G,H"};
    expect("gpu-bind=closest, block:cyclic", closest, 8, four, (int[]){0, 0, 1, 1, 2, 2, 3, 3},
           (int[]){1, 1, 1, 1, 1, 1, 1, 1});
    const char *shared[] = {"A", "A"};
    expect("2 ranks per GPU", shared, 2, one, (int[]){0, 0}, (int[]){2, 2});
    const char *three[] = {"A,B", "A,B", "A,B"};
    expect("3 ranks on 2 GPUs", three, 3, two, (int[]){0, 1, 0}, (int[]){2, 1, 2});
    const char *prefix[] = {"A", "A,B"};
    expect("a set and its prefix", prefix, 2, (int[]){1, 2}, (int[]){0, 1}, (int[]){1, 1});
    const char *prefix_after[] = {"A,B", "A"};
    expect("the larger set first", prefix_after, 2, (int[]){2, 1}, (int[]){1, 0}, (int[]){1, 1});
    const char *moved[] = {"A,C", "A,B", "A,B"};
    expect("an augmenting path", moved, 3, two, (int[]){1, 1, 0}, (int[]){1, 1, 1});
    const char *chain[] = {"A,B", "B,C", "A,B", "B,C"};
    expect("overlapping pairs", chain, 4, two, (int[]){1, 1, 0, 0}, (int[]){2, 1, 1, 2});
    const char *names[] = {"A", "AB"};
    expect("ids compared whole", names, 2, one, (int[]){0, 0}, (int[]){1, 1});
    return 0;
}

int main(void)
{
    TEST_RUN(test_layouts);
    return test_finish();
}

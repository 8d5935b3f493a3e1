/* The weight-copy bookkeeping of the CUDA backend's bf16 weight copies, on host addresses (the
 * map never dereferences them): which GEMM operands are weights, which writes make a copy stale.
 * Hand-computed cases on two buffers laid out in one array, so their relative addresses are
 * known. */
#include <string.h>

#include "ops/weight_copy_map.h"
#include "test.h"

static float arena[1000];  /* buffer A = arena[100, 300), buffer B = arena[500, 600) */
static float *const A = arena + 100, *const B = arena + 500;

static WeightCopyMap two_buffers(void)
{
    WeightCopyMap m;
    memset(&m, 0, sizeof m);
    weight_copy_map_add(&m, A, 200);
    weight_copy_map_add(&m, B, 100);
    for (int i = 0; i < m.count; i++) m.entry[i].current = 1;  /* as if copies were made */
    return m;
}

static int test_find(void)
{
    WeightCopyMap m = two_buffers();
    WeightCopy *a = weight_copy_map_find(&m, A, 200), *b = weight_copy_map_find(&m, B + 10, 90);
    TEST_CHECK(a && a->base == (uintptr_t)A && a->floats == 200, "all of A is in A");
    TEST_CHECK(b && b->base == (uintptr_t)B, "a tail of B is in B");
    TEST_CHECK(weight_copy_map_find(&m, A + 150, 50) == a, "a tensor at offset 150 of A");
    TEST_CHECK(!weight_copy_map_find(&m, A + 150, 51), "one element past A's end is not in A");
    TEST_CHECK(!weight_copy_map_find(&m, A - 1, 2), "one element before A is not in A");
    TEST_CHECK(!weight_copy_map_find(&m, arena + 300, 100), "the gap between A and B");
    TEST_CHECK(!weight_copy_map_find(&m, A, 450), "a span covering A, the gap and B");
    TEST_CHECK(!weight_copy_map_find(&m, (const float *)((const char *)A + 2), 4),
               "a misaligned pointer into A is no tensor of A");
    return 0;
}

static int stale_after(const void *dst, size_t bytes, int expect_a, int expect_b)
{
    WeightCopyMap m = two_buffers();
    weight_copy_map_written(&m, dst, bytes);
    const WeightCopy *a = weight_copy_map_find(&m, A, 1), *b = weight_copy_map_find(&m, B, 1);
    return (a->current == !expect_a) && (b->current == !expect_b);
}

static int test_written(void)
{
    TEST_CHECK(stale_after(A, 4, 1, 0), "the first element of A");
    TEST_CHECK(stale_after(A + 199, 4, 1, 0), "the last element of A");
    TEST_CHECK(stale_after(A - 10, 10 * sizeof(float), 0, 0), "the 10 floats just before A");
    TEST_CHECK(stale_after(A - 10, 11 * sizeof(float), 1, 0), "one float into A from before");
    TEST_CHECK(stale_after(A + 200, 200 * sizeof(float), 0, 0), "the gap exactly");
    TEST_CHECK(stale_after(A + 200, 201 * sizeof(float), 0, 1), "the gap and B's first float");
    TEST_CHECK(stale_after(arena, sizeof arena, 1, 1), "everything");
    TEST_CHECK(stale_after(B + 50, 0, 0, 0), "an empty write");
    return 0;
}

static int test_add_remove(void)
{
    WeightCopyMap m = two_buffers();
    weight_copy_map_add(&m, A, 200);  /* registering again: same entry, copy stale */
    TEST_CHECK(m.count == 2, "re-registering A adds no entry (%d)", m.count);
    TEST_CHECK(!weight_copy_map_find(&m, A, 1)->current, "re-registered A is stale");
    int marker;
    weight_copy_map_find(&m, B, 1)->copy = &marker;
    WeightCopy gone = weight_copy_map_remove(&m, B);
    TEST_CHECK(gone.base == (uintptr_t)B && gone.copy == &marker,
               "remove hands back B's entry with its copy for the caller to free");
    TEST_CHECK(m.count == 1 && !weight_copy_map_find(&m, B, 1), "B is gone");
    TEST_CHECK(weight_copy_map_find(&m, A + 5, 5) != NULL, "A is still there");
    TEST_CHECK(weight_copy_map_remove(&m, B).base == 0, "removing B twice finds nothing");
    return 0;
}

int main(void)
{
    TEST_RUN(test_find);
    TEST_RUN(test_written);
    TEST_RUN(test_add_remove);
    return test_finish();
}

/* The convolution and pooling ops at their edges: a 0-image batch goes
 * through every op, and misuse (wrong shapes, channels, bias, output
 * padding, geometry whose size overflows, NULL) dies with a message naming
 * the op and the shapes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

#define TEST_SEED 20261202
#include "conv_common.h"

/* A 0-image batch goes through every op; parameter gradients stay zero
 * (the bias's too: a sum over no images). */

static void test_empty_batch(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new(4, (int[]){0, 2, 8, 6});
    tg_tensor *p[4] = {rand4(3, 2, 3, 3), rand1(3), rand4(3, 2, 4, 4),
                       rand1(2)};
    for (int i = 0; i < 4; i++)
        tg_tensor_require_grad(p[i]);
    for (int fused = 0; fused < 2; fused++) { /* then with args.relu */
        tg_conv2d_args a1 = {.stride = {1, 1},
                             .padding = {1, 1},
                             .relu = fused},
                       a2 = {
                           .stride = {2, 2}, .padding = {1, 1}, .relu = fused};
        tg_tape *tp = tg_tape_new();
        tg_tensor *h = tg_conv2d_ex(tp, x, p[0], p[1], &a1);
        h = tg_max_pool2d(tp, h, 2, 2, 0);
        h = tg_conv_transpose2d_ex(tp, h, p[2], p[3], &a2);
        h = tg_upsample2d(tp, tg_avg_pool2d(tp, h, 2, 2, 0), 2);
        int want[] = {0, 2, 8, 6};
        for (int d = 0; d < 4; d++)
            assert_int_equal(h->shape[d], want[d]);
        tg_backward(tp, tg_sum(tp, h));
        for (int i = 0; i < 4; i++)
            for (size_t k = 0; k < p[i]->size; k++)
                assert_float_equal(p[i]->grad[k], 0.0f, 0.0f);
        tg_tape_free(tp);
    }
    tg_tensor_free(x);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(p[i]);
}

/* ---- misuse dies with a message naming the op and the shapes ------------ */

static void misuse_kernel_too_big(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 3, 3), rand4(4, 2, 5, 5), NULL, 1, 0, 1);
}

static void misuse_channels(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 3, 5, 5), rand4(4, 2, 3, 3), NULL, 1, 0, 1);
}

static void misuse_transpose_channels(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(4, 3, 3, 3), NULL, 1, 0, 0,
                        1);
}

static void misuse_output_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), NULL, 2, 0, 2,
                        1);
}

static void misuse_conv_output_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_args a = {.output_padding = {1, 0}};
    tg_conv2d_ex(tp, rand4(1, 3, 5, 5), rand4(2, 3, 3, 3), NULL, &a);
}

static void misuse_transpose_size(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 1, 1), rand4(3, 2, 1, 1), NULL, 1, 1, 0,
                        1);
}

static void misuse_bias(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), rand1(3), 1, 0, 1);
}

/* The right count in the wrong shape: PyTorch refuses a bias that is not
 * 1-D [OC] (a [OC, 1] column went through, read as [OC]). */
static tg_tensor *bias_column(int oc)
{
    tg_tensor *t = tg_tensor_new(2, (int[]){oc, 1});
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}

static void misuse_bias_column(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), bias_column(4), 1, 0,
              1);
}

static void misuse_bias_column_ex(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_ex(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), bias_column(4),
                 NULL);
}

static void misuse_transpose_bias_column(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3),
                        bias_column(2), 1, 0, 0, 1);
}

static void misuse_transpose_bias_row_ex(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *b = tg_tensor_new(2, (int[]){1, 2});
    tg_conv_transpose2d_ex(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), b, NULL);
}

static void misuse_pool_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_max_pool2d(tp, rand4(1, 2, 5, 5), 2, 2, 2);
}

static void misuse_pool_rank(void)
{
    tg_tape *tp = tg_tape_new();
    tg_avg_pool2d(tp, tg_tensor_new2(4, 4), 2, 2, 0);
}

/* Geometry whose output length overflows int: the size arithmetic was
 * signed-overflow UB, and in practice wrapped: a stride of 2^30 made
 * conv_transpose2d of a 5x5 input a 3x3 output without a word. */
static void misuse_huge_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), NULL, 1, 1 << 30, 1);
}

static void misuse_transpose_huge_stride(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), NULL, 1 << 30,
                        0, 0, 1);
}

/* one axis past INT_MAX, the other 1: the length's clamp to INT_MAX gave
 * N * OH * OW = INT_MAX, which passed (an output cut short) */
static void misuse_one_axis_huge(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_args a = {.padding = {1 << 30, 0}};
    tg_conv2d_ex(tp, rand4(1, 1, 10, 1), rand4(1, 1, 1, 1), NULL, &a);
}

static void misuse_null(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), NULL, NULL, 1, 0, 1);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_null, "conv2d", "NULL");
    expect_abort(misuse_kernel_too_big, "conv2d", "[1, 2, 3, 3]");
    expect_abort(misuse_channels, "conv2d", "[4, 2, 3, 3]");
    expect_abort(misuse_transpose_channels, "conv_transpose2d", "[1, 3, 5, 5]");
    expect_abort(misuse_output_padding, "conv_transpose2d", "output padding");
    expect_abort(
        misuse_conv_output_padding, "conv2d",
        "output_padding (1, 0) with x [1, 3, 5, 5] and W [2, 3, 3, 3]");
    expect_abort(misuse_transpose_size, "conv_transpose2d", "[3, 2, 1, 1]");
    expect_abort(misuse_bias, "conv2d", "bias [3]");
    expect_abort(misuse_bias_column, "tapegrad: conv2d: ", "bias [4, 1]",
                 "W [4, 2, 3, 3]", "[4]");
    expect_abort(misuse_bias_column_ex, "tapegrad: conv2d: ", "bias [4, 1]",
                 "W [4, 2, 3, 3]");
    expect_abort(misuse_transpose_bias_column,
                 "tapegrad: conv_transpose2d: ", "bias [2, 1]",
                 "W [3, 2, 3, 3]", "[2]");
    expect_abort(misuse_transpose_bias_row_ex,
                 "tapegrad: conv_transpose2d: ", "bias [1, 2]",
                 "W [3, 2, 3, 3]");
    expect_abort(misuse_pool_padding, "max_pool2d", "[1, 2, 5, 5]");
    expect_abort(misuse_pool_rank, "avg_pool2d", "[4, 4]");
    expect_abort(misuse_huge_padding, "conv2d", "too many output positions");
    expect_abort(misuse_transpose_huge_stride, "conv_transpose2d",
                 "too many output positions");
    expect_abort(misuse_one_axis_huge, "conv2d", "too many output positions");
}

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests_name("conv_edges", tests, NULL, NULL);
}

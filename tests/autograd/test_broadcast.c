/* The broadcasting rule of add, sub and mul (tg_autograd.h): the first
 * operand sets the shape; a 1-D operand is a row, also when rows == cols;
 * one value per row is [R, 1] or a's leading dims then 1; the messages say
 * how to fix a misfit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

static tg_tensor *counting(int ndim, const int *shape, float start)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = start + (float)i;
    return t;
}

/* [3, 3] * [3] with rows == cols: b[j] scales column j (a row broadcast),
 * and db[j] sums column j of a. */
static void test_1d_operand_is_a_row_when_rows_equal_cols(void **state)
{
    (void)state;
    tg_tensor *a = counting(2, (int[]){3, 3}, 1.0f);
    tg_tensor *b = counting(1, (int[]){3}, 10.0f); /* 10, 11, 12 */
    tg_tensor_require_grad(a);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_mul(tp, a, b);
    assert_int_equal(y->ndim, 2);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            assert_float_equal(y->data[i * 3 + j],
                               a->data[i * 3 + j] * b->data[j], 0.0f);
    tg_backward(tp, tg_sum(tp, y));
    for (int j = 0; j < 3; j++) /* column sums of a: 12, 15, 18 */
        assert_float_equal(b->grad[j], (float)(12 + 3 * j), 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* One value per row is [R, 1], also when R == C. */
static void test_column_operand_is_per_row(void **state)
{
    (void)state;
    tg_tensor *a = counting(2, (int[]){3, 3}, 1.0f);
    tg_tensor *b = counting(2, (int[]){3, 1}, 10.0f);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_add(tp, a, b);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            assert_float_equal(y->data[i * 3 + j],
                               a->data[i * 3 + j] + b->data[i], 0.0f);
    tg_backward(tp, tg_sum(tp, y));
    for (int i = 0; i < 3; i++)
        assert_float_equal(b->grad[i], 3.0f, 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* A row [1, 1, C] fits a 3-D a [2, 3, C] as [C] does. */
static void test_row_with_leading_ones_fits_3d(void **state)
{
    (void)state;
    tg_tensor *a = counting(3, (int[]){2, 3, 4}, 0.0f);
    tg_tensor *b = counting(3, (int[]){1, 1, 4}, 100.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_sub(tp, a, b);
    for (size_t k = 0; k < a->size; k++)
        assert_float_equal(y->data[k], a->data[k] - b->data[k % 4], 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* One value per row of a 3-D a [2, 3, 4] as PyTorch spells it, [2, 3, 1]:
 * b[i, j] multiplies row (i, j), and db[i, j] is that row's sum of a. */
static void test_leading_dims_then_one_is_per_row(void **state)
{
    (void)state;
    tg_tensor *a = counting(3, (int[]){2, 3, 4}, 1.0f);
    tg_tensor *b = counting(3, (int[]){2, 3, 1}, 10.0f);
    tg_tensor_require_grad(a);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_mul(tp, a, b);
    assert_int_equal(y->ndim, 3);
    for (size_t k = 0; k < a->size; k++)
        assert_float_equal(y->data[k], a->data[k] * b->data[k / 4], 0.0f);
    tg_backward(tp, tg_sum(tp, y));
    for (int r = 0; r < 6; r++) /* a's row r: 4r+1 .. 4r+4, sum 16r + 10 */
        assert_float_equal(b->grad[r], (float)(16 * r + 10), 0.0f);
    for (size_t k = 0; k < a->size; k++)
        assert_float_equal(a->grad[k], b->data[k / 4], 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

static void misuse_per_row_1d(void)
{
    tg_tape *tp = tg_tape_new();
    tg_mul(tp, tg_tensor_new2(7, 9), tg_tensor_new(1, (int[]){7}));
}
static void misuse_swapped(void)
{
    tg_tape *tp = tg_tape_new();
    tg_add(tp, tg_tensor_new2(1, 2), tg_tensor_new2(4, 2));
}
static void misuse_no_fit(void)
{
    tg_tape *tp = tg_tape_new();
    tg_sub(tp, tg_tensor_new2(4, 3), tg_tensor_new2(2, 3));
}

static void misuse_middle_axis(void)
{
    tg_tape *tp = tg_tape_new();
    tg_add(tp, tg_tensor_new(3, (int[]){2, 3, 4}),
           tg_tensor_new(3, (int[]){2, 1, 4}));
}
static void misuse_other_leading_dims(void)
{
    tg_tape *tp = tg_tape_new();
    tg_add(tp, tg_tensor_new(3, (int[]){2, 3, 4}),
           tg_tensor_new(3, (int[]){3, 2, 1}));
}

static void test_misfits_say_how_to_fix_them(void **state)
{
    (void)state;
    expect_abort(misuse_per_row_1d, "mul", "[7]", "[7, 9]", "use [7, 1]");
    expect_abort(misuse_swapped, "add", "cannot broadcast [4, 2] to [1, 2]",
                 "swap the operands");
    expect_abort(misuse_no_fit, "sub", "[2, 3]", "[4, 3]", "[4, 1]");
    /* the rows of a 3-D a are counted for the message */
    expect_abort(misuse_middle_axis, "add", "[2, 1, 4]", "row [4]",
                 "one value per row [6, 1]");
    expect_abort(misuse_other_leading_dims, "add", "[3, 2, 1]", "[6, 1]");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_1d_operand_is_a_row_when_rows_equal_cols),
        cmocka_unit_test(test_column_operand_is_per_row),
        cmocka_unit_test(test_row_with_leading_ones_fits_3d),
        cmocka_unit_test(test_leading_dims_then_one_is_per_row),
        cmocka_unit_test(test_misfits_say_how_to_fix_them),
    };
    return cmocka_run_group_tests_name("autograd broadcast", tests, NULL, NULL);
}

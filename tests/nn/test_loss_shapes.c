/* The losses take a prediction and a target of one shape: a target that
 * broadcasting would stretch ([R, 1] against [R, C]) aborts, for mse as
 * for bce_with_logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"
#include "float_equal.h"

static void mse_column_target(void)
{
    tg_tape *tp = tg_tape_new();
    tg_loss_mse(tp, tg_tensor_new2(4, 3), tg_tensor_new2(4, 1));
}
static void mse_row_target(void)
{
    tg_tape *tp = tg_tape_new();
    tg_loss_mse(tp, tg_tensor_new2(4, 3), tg_tensor_new(1, (int[]){3}));
}
static void bce_column_target(void)
{
    tg_tape *tp = tg_tape_new();
    tg_loss_bce_with_logits(tp, tg_tensor_new2(4, 3), tg_tensor_new2(4, 1));
}

static void test_losses_require_equal_shapes(void **state)
{
    (void)state;
    expect_abort(mse_column_target, "loss_mse", "[4, 3]", "[4, 1]");
    expect_abort(mse_row_target, "loss_mse", "[4, 3]", "[3]");
    expect_abort(bce_column_target, "bce_with_logits", "[4, 3]", "[4, 1]");
}

static void test_mse_of_equal_shapes(void **state)
{
    (void)state;
    tg_tensor *p = tg_tensor_new2(2, 2), *t = tg_tensor_new2(2, 2);
    for (int i = 0; i < 4; i++)
        p->data[i] = (float)i, t->data[i] = 1.0f;
    tg_tape *tp = tg_tape_new();
    /* rows: (1 + 0) and (1 + 4): mean 3 */
    assert_float_equal(tg_loss_mse(tp, p, t)->data[0], 3.0f, 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(p);
    tg_tensor_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_losses_require_equal_shapes),
        cmocka_unit_test(test_mse_of_equal_shapes),
    };
    return cmocka_run_group_tests_name("nn loss shapes", tests, NULL, NULL);
}

/* NULL where the API needs an object: each was a segfault (or UBSan's
 * null-pointer report) somewhere inside; now an abort whose message names
 * the call, as for a NULL tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"

static void step_null_optimizer(void) { tg_optim_step(NULL); }

static tg_params *one_param(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "w", 1, (int[]){2});
    return ps;
}
static void save_null_path(void)
{
    tg_checkpoint_save(NULL, one_param(), NULL, NULL);
}
static void load_null_path(void)
{
    tg_checkpoint_load(NULL, one_param(), NULL, NULL);
}
static void gradcheck_no_graph(void)
{
    tg_gradcheck_report rep;
    tg_gradcheck(NULL, 0, NULL, NULL, NULL, &rep);
}

/* targets set without their width: batches of [n, 0] targets, silently */
static void batcher_y_without_dim(void)
{
    static float x[4], y[4];
    tg_array_batcher b;
    tg_array_batcher_init(&b, x, 4, 1, 2, 1);
    b.y = y;
    tg_array_batcher_start(&b, 0, 0);
    tg_tensor *xs, *ys;
    tg_array_batcher_next(&b, tg_tape_new(), &xs, &ys, NULL);
}

static void test_null_arguments_abort_with_a_message(void **state)
{
    (void)state;
    expect_abort(step_null_optimizer, "optim_step", "NULL");
    expect_abort(save_null_path, "checkpoint_save", "NULL path");
    expect_abort(load_null_path, "checkpoint_load", "NULL path");
    expect_abort(gradcheck_no_graph, "gradcheck", "n_inputs 0");
    expect_abort(batcher_y_without_dim, "array_batcher_next", "y_dim 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_arguments_abort_with_a_message),
    };
    return cmocka_run_group_tests_name("nn NULL arguments", tests, NULL, NULL);
}

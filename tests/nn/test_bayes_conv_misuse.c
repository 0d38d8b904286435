/* The variational Conv2d layer's misuse: a bad kernel or prior at init,
 * inputs of the wrong channels, noise of the wrong shape, a NULL rng and
 * args.relu (not supported there) die with a message naming the layer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"

#include "bayes_conv_common.h"

/* ---- misuse ------------------------------------------------------------- */

static void init_bad_kernel(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "conv7", 2, 3, 0, 1, 0, 1.0f, -3.0f, &rng);
}

static void init_zero_prior(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "conv7", 2, 3, 3, 1, 1, 0.0f, -3.0f, &rng);
}

static void apply_wrong_channels(void)
{
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 1);
    tg_tape *tp = tg_tape_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_conv2d_apply(
        tp, &l, tg_tape_tensor(tp, 4, (int[]){1, 3, 5, 5}, true), &rng);
}

static void apply_eps_wrong_shape(void)
{
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){1, 2, 5, 5}, true);
    tg_tensor *eps = tg_tape_tensor(tp, 4, (int[]){1, 3, 5, 5}, true);
    tg_bayes_conv2d_apply_eps(tp, &l, x, eps);
}

static void apply_kl_null_rng(void)
{
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *kl;
    tg_bayes_conv2d_apply_kl(
        tp, &l, tg_tape_tensor(tp, 4, (int[]){1, 2, 5, 5}, true), NULL, &kl);
}

static void apply_fused_relu(void)
{
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 1);
    l.args.relu = true;
    tg_tape *tp = tg_tape_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_conv2d_apply(
        tp, &l, tg_tape_tensor(tp, 4, (int[]){1, 2, 5, 5}, true), &rng);
}

static void misuse_aborts_naming_the_layer(void **state)
{
    (void)state;
    expect_abort(init_bad_kernel, "bayes_conv2d_init", "conv7: bad size",
                 "kernel=0");
    expect_abort(init_zero_prior, "bayes_conv2d_init", "conv7",
                 "prior_scale 0 must be finite and > 0");
    expect_abort(apply_wrong_channels, "bayes_conv2d",
                 "x [1, 3, 5, 5] must be [B, 2, H, W]");
    expect_abort(apply_eps_wrong_shape, "bayes_conv2d",
                 "eps [1, 3, 5, 5] must be the output's shape [1, 3, 3, 3]");
    expect_abort(apply_kl_null_rng, "bayes_conv2d_apply_kl", "NULL rng");
    expect_abort(apply_fused_relu, "bayes_conv2d",
                 "args.relu is not supported here");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(misuse_aborts_naming_the_layer),
    };
    return cmocka_run_group_tests_name("bayes_conv_misuse", tests, NULL, NULL);
}

/* The variational Dense layer's prediction without a tape: the variances
 * are softplus(rho)^2, tg_bayes_draw the same bits as the tape's ops,
 * tg_bayes_mlp_sample the same as passes on the tape (1 and 2 threads),
 * and misuse aborts naming the call. */
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

#include "bayes_common.h"

/* ---- prediction without a tape ------------------------------------------ */

/* Layer name in -> out with means N(0, 0.3) and rho uniform in [-6, 1]
 * (sigma 0.0025 to 1.3), a few below RHO_TINY. */
static tg_bayes_dense wide_layer(tg_params *ps, const char *name, int in,
                                 int out, tg_rng *rng)
{
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, name, in, out, 1.0f, -3.0f, rng);
    return l;
}

static void randomise(tg_bayes_dense *l, tg_rng *rng)
{
    tg_rng_fill_normal(rng, l->W_mu->data, l->W_mu->size, 0.0f, 0.3f);
    tg_rng_fill_normal(rng, l->b_mu->data, l->b_mu->size, 0.0f, 0.3f);
    tg_rng_fill_uniform(rng, l->W_rho->data, l->W_rho->size, -6.0f, 1.0f);
    tg_rng_fill_uniform(rng, l->b_rho->data, l->b_rho->size, -6.0f, 1.0f);
    l->W_rho->data[0] = -25.0f;
    l->b_rho->data[0] = -40.0f;
}

static void variances_are_softplus_squared(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 11, 0);
    tg_bayes_dense l = wide_layer(ps, "v", 70, 90, &rng); /* 6300 > a block */
    tg_params_seal(ps);
    randomise(&l, &rng);
    float *vW = malloc(sizeof(float) * 70 * 90), vb[90];
    tg_bayes_dense_variances(&l, vW, vb);
    for (size_t i = 0; i < l.W_rho->size; i++) {
        double want = pow(softplus(l.W_rho->data[i]), 2);
        assert_true(fabs(vW[i] - want) <= 1e-5 * want);
    }
    for (int j = 0; j < 90; j++) {
        double want = pow(softplus(l.b_rho->data[j]), 2);
        assert_true(fabs(vb[j] - want) <= 1e-5 * want);
    }
    free(vW);
    tg_params_free(ps);
}

/* tg_bayes_draw against the ops it replaces, on n values over several
 * noise blocks and an odd tail: the same bits, and rng left where
 * tg_rng_fill_normal_bulk leaves it. */
static void draw_is_the_tape_ops(int threads, bool relu)
{
    tg_set_threads(threads);
    const int n = 2 * 4096 + 37;
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    tg_tensor *mean = tg_tape_tensor2(tp, 1, n, false);
    tg_tensor *var = tg_tape_tensor2(tp, 1, n, false);
    tg_rng rng;
    tg_rng_seed(&rng, 21, 0);
    tg_rng_fill_normal(&rng, mean->data, n, 0.0f, 1.0f);
    tg_rng_fill_uniform(&rng, var->data, n, 0.0f, 2.0f);
    tg_rng a = rng, b = rng;
    float *y = malloc(sizeof(float) * n), *y_sq = malloc(sizeof(float) * n);
    tg_bayes_draw(&a, mean->data, var->data, n, relu, y, relu ? y_sq : NULL);
    tg_tensor *eps = tg_tape_tensor2(tp, 1, n, false);
    tg_rng_fill_normal_bulk(&b, eps->data, n);
    tg_tensor *want = tg_add(tp, mean, tg_mul(tp, tg_sqrt(tp, var), eps));
    if (relu)
        want = tg_relu(tp, want);
    assert_memory_equal(y, want->data, sizeof(float) * n);
    if (relu) {
        assert_memory_equal(y_sq, tg_square(tp, want)->data, sizeof(float) * n);
        int zeros = 0; /* the ReLU did something */
        for (int i = 0; i < n; i++)
            zeros += y[i] == 0.0f;
        assert_true(zeros > n / 10 && zeros < n - n / 10);
    }
    assert_true(tg_rng_u64(&a) == tg_rng_u64(&b));
    free(y);
    free(y_sq);
    tg_tape_free(tp);
    tg_set_threads(0);
}

static void draw_matches_sqrt_mul_add_relu(void **state)
{
    (void)state;
    for (int t = 1; t <= 2; t++) {
        draw_is_the_tape_ops(t, true);
        draw_is_the_tape_ops(t, false);
    }
}

/* tg_bayes_mlp_sample against S passes of tg_bayes_dense_apply and tg_relu
 * on the tape with the same rng, 30 -> h1 -> h2 -> n (n_layers 3) or its
 * first layer alone (1), on 1 and 2 threads, for 100 rows and 40 (the GEMM
 * reads a small M's B in place): the same bits, and rng left in the same
 * state. 30-400-256-10 (layers of 256 inputs or more into a few outputs,
 * as bnn_mnist's 784-400-400-10) had 75-85% of the outputs a few ulp off,
 * when the sampler multiplied by W transposed. */
static void mlp_sample_case(int threads, int n_layers, int rows, int h1, int h2,
                            int n)
{
    enum { S = 6 };
    tg_set_threads(threads);
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 31, 0);
    tg_bayes_dense L[3] = {wide_layer(ps, "a", 30, h1, &rng),
                           wide_layer(ps, "b", h1, h2, &rng),
                           wide_layer(ps, "c", h2, n, &rng)};
    tg_params_seal(ps);
    for (int l = 0; l < 3; l++)
        randomise(&L[l], &rng);
    int n_out = L[n_layers - 1].out;
    float *x = malloc(sizeof(float) * rows * 30);
    tg_rng_fill_uniform(&rng, x, rows * 30, 0.0f, 1.0f);
    float *out = malloc(sizeof(float) * S * rows * n_out);
    tg_rng a = rng, b = rng;
    tg_bayes_mlp_sample(L, n_layers, x, rows, S, &a, out);
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    for (int s = 0; s < S; s++) {
        tg_tape_reset(tp);
        tg_tensor *h = tg_tape_view2(tp, x, rows, 30);
        for (int l = 0; l < n_layers; l++) {
            h = tg_bayes_dense_apply(tp, &L[l], h, &b);
            if (l < n_layers - 1)
                h = tg_relu(tp, h);
        }
        assert_memory_equal(out + (size_t)s * rows * n_out, h->data,
                            sizeof(float) * rows * n_out);
    }
    /* the passes differ (the noise is not reused) */
    assert_memory_not_equal(out, out + rows * n_out,
                            sizeof(float) * rows * n_out);
    assert_true(tg_rng_u64(&a) == tg_rng_u64(&b));
    tg_tape_free(tp);
    free(x);
    free(out);
    tg_params_free(ps);
    tg_set_threads(0);
}

static void mlp_sample_matches_passes_on_the_tape(void **state)
{
    (void)state;
    for (int t = 1; t <= 2; t++)
        for (int rows = 100; rows > 0; rows -= 60) {
            mlp_sample_case(t, 3, rows, 120, 90, 7);
            mlp_sample_case(t, 1, rows, 120, 90, 7);
            mlp_sample_case(t, 3, rows, 400, 256, 10);
        }
}

static void mlp_sample_mismatched_layers(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense L[2] = {wide_layer(ps, "a", 4, 5, &rng),
                           wide_layer(ps, "b", 6, 2, &rng)};
    tg_params_seal(ps);
    float x[4] = {0}, out[2];
    tg_bayes_mlp_sample(L, 2, x, 1, 1, &rng, out);
}

static void mlp_sample_no_passes(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense l = wide_layer(ps, "a", 4, 5, &rng);
    tg_params_seal(ps);
    float x[4] = {0}, out[5];
    tg_bayes_mlp_sample(&l, 1, x, 1, 0, &rng, out);
}

static void mlp_sample_null_rng(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense l = wide_layer(ps, "a", 4, 5, &rng);
    tg_params_seal(ps);
    float x[4] = {0}, out[5];
    tg_bayes_mlp_sample(&l, 1, x, 1, 1, NULL, out);
}

static void draw_null_var(void)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    float m[2] = {0}, y[2];
    tg_bayes_draw(&rng, m, NULL, 2, false, y, NULL);
}

static void variances_null_out(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense l = wide_layer(ps, "a", 4, 5, &rng);
    tg_params_seal(ps);
    float vb[5];
    tg_bayes_dense_variances(&l, NULL, vb);
}

/* the wrong width named the dense op and W_mu, not the layer's call */
static void apply_wrong_width(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense l = wide_layer(ps, "a", 4, 5, &rng);
    tg_tape *tp = tg_tape_new();
    tg_bayes_dense_apply(tp, &l, tg_tape_tensor2(tp, 2, 3, false), &rng);
}

static void prediction_misuse_aborts_naming_the_call(void **state)
{
    (void)state;
    expect_abort(mlp_sample_mismatched_layers, "bayes_mlp_sample",
                 "layer 1's input 6 is not layer 0's output 5");
    expect_abort(mlp_sample_no_passes, "bayes_mlp_sample", "S = 0");
    expect_abort(mlp_sample_null_rng, "bayes_mlp_sample", "NULL rng");
    expect_abort(draw_null_var, "bayes_draw", "NULL var");
    expect_abort(variances_null_out, "bayes_dense_variances", "NULL var_W");
    expect_abort(apply_wrong_width,
                 "bayes_dense:", "x [2, 3] must be [B, 4] (the layer's in)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(variances_are_softplus_squared),
        cmocka_unit_test(draw_matches_sqrt_mul_add_relu),
        cmocka_unit_test(mlp_sample_matches_passes_on_the_tape),
        cmocka_unit_test(prediction_misuse_aborts_naming_the_call),
    };
    return cmocka_run_group_tests_name("bayes_predict", tests, NULL, NULL);
}

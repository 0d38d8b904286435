/* The variational Dense layer's parameters, KL and samples: names, shapes
 * and rho at init, the KL against the closed form (exact for very negative
 * rho) and a Monte Carlo estimate, finite gradients where the variance
 * overflows or underflows, and the sampled pre-activations' moments
 * against the local reparameterization formula. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"

#include "bayes_common.h"

/* KL(N(mu, s^2) || N(0, p^2)) summed over one pair, in double. */
static double kl_closed(const tg_tensor *mu, const tg_tensor *rho, double p)
{
    double kl = 0.0;
    for (size_t i = 0; i < mu->size; i++) {
        double s = softplus(rho->data[i]), m = mu->data[i];
        kl += log(p / s) + (s * s + m * m) / (2 * p * p) - 0.5;
    }
    return kl;
}

static void init_names_shapes_and_rho(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 7, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "fc1", 5, 2, 1.0f, -5.0f, &rng);
    assert_int_equal(tg_params_count(ps), 4);
    assert_ptr_equal(tg_params_find(ps, "fc1.weight_mu"), l.W_mu);
    assert_ptr_equal(tg_params_find(ps, "fc1.weight_rho"), l.W_rho);
    assert_ptr_equal(tg_params_find(ps, "fc1.bias_mu"), l.b_mu);
    assert_ptr_equal(tg_params_find(ps, "fc1.bias_rho"), l.b_rho);
    assert_int_equal(l.W_mu->shape[0], 2);
    assert_int_equal(l.W_mu->shape[1], 5);
    for (size_t i = 0; i < l.W_rho->size; i++)
        assert_true(l.W_rho->data[i] == -5.0f);
    for (size_t i = 0; i < l.W_mu->size; i++)
        assert_true(fabsf(l.W_mu->data[i]) <= 1.0f / sqrtf(5.0f));
    /* the means fill PyTorch's range +-1/sqrt(in), the bias's too: of 5000
     * and 50 uniform draws the largest |value| is above 0.8 of the bound */
    tg_bayes_dense wide;
    tg_bayes_dense_init(&wide, ps, "wide", 100, 50, 1.0f, -5.0f, &rng);
    const tg_tensor *mus[2] = {wide.W_mu, wide.b_mu};
    for (int t = 0; t < 2; t++) {
        float maxabs = 0.0f;
        for (size_t i = 0; i < mus[t]->size; i++)
            maxabs = fmaxf(maxabs, fabsf(mus[t]->data[i]));
        assert_true(maxabs <= 0.1f && maxabs > 0.08f);
    }
    tg_params_free(ps);
}

static void kl_matches_closed_form(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *kl = tg_bayes_dense_kl(tp, &l);
    double want =
        kl_closed(l.W_mu, l.W_rho, 0.5) + kl_closed(l.b_mu, l.b_rho, 0.5);
    assert_int_equal(kl->size, 1);
    assert_true(fabs(kl->data[0] - want) < 1e-5 * fabs(want) + 1e-5);
    /* the KL taken twice adds its gradient twice into the means: d/dmu of
     * 2 KL = 2 mu / p^2 = 8 mu */
    tg_params_zero_grad(ps);
    tg_backward(tp, tg_add(tp, kl, tg_bayes_dense_kl(tp, &l)));
    for (size_t i = 0; i < l.W_mu->size; i++)
        assert_true(fabs(l.W_mu->grad[i] - 8.0 * l.W_mu->data[i]) <
                    1e-5 * (1 + fabs(8.0 * l.W_mu->data[i])));
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* Very negative rho (sigma = softplus(rho) ~ e^rho, denormal in float below
 * rho = -87, 0 below -104): the KL still matches the closed form, log sigma
 * being rho, and its gradient in rho is sig (s / p^2 - 1 / s) ~ -1 (the
 * layer used to keep sigma >= FLT_MIN, which put log sigma at -87.3 and the
 * gradient at ~1e-6 for rho = -100). */
static void kl_exact_for_very_negative_rho(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 3);
    const float rho[] = {-110, -100, -90, -50, -21, -19};
    for (int i = 0; i < 6; i++)
        l.W_rho->data[i] = rho[i];
    l.b_rho->data[0] = -95;
    tg_tape *tp = tg_tape_new();
    tg_tensor *kl = tg_bayes_dense_kl(tp, &l);
    double want =
        kl_closed(l.W_mu, l.W_rho, 0.5) + kl_closed(l.b_mu, l.b_rho, 0.5);
    assert_true(fabs(kl->data[0] - want) < 1e-6 * fabs(want));
    tg_backward(tp, kl);
    for (int i = 0; i < 7; i++) {
        double r = i < 6 ? rho[i] : -95;
        float got = i < 6 ? l.W_rho->grad[i] : l.b_rho->grad[0];
        double s = softplus(r), sig = 1 / (1 + exp(-r));
        double g = sig * (s / 0.25) - sig / s;
        if (!(fabs(got - g) < 1e-6 * fabs(g))) {
            print_error("rho %g: dKL/drho %.9g, want %.9g\n", r, got, g);
            fail();
        }
    }
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* A huge rho (softplus 2e38): the standard deviation overflows to inf, so
 * d sum(sd) / d var is 0; the rho gradient must stay the KL's finite one
 * (torch: 2e38), where 2 * s overflowed first and inf * 0 gave NaN. */
static void rho_gradient_finite_when_variance_overflows(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 5);
    l.W_rho->data[0] = 2e38f;
    tg_tensor *x = tg_tensor_new2(1, 3);
    x->data[0] = 1.0f;
    tg_tape *tp = tg_tape_new();
    tg_tensor *mean, *sd;
    tg_bayes_dense_moments(tp, &l, x, &mean, &sd);
    assert_true(isinf(sd->data[0]));
    tg_backward(tp, tg_add(tp, tg_bayes_dense_kl(tp, &l), tg_sum(tp, sd)));
    /* dKL/drho = sig (s / p^2 - 1 / s) = 2e38 / 0.25 overflows float: the
     * KL term alone is +inf, not NaN */
    float g = l.W_rho->grad[0];
    if (isnan(g)) {
        print_error("dL/drho at rho 2e38 is NaN\n");
        fail();
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_params_free(ps);
}

/* rho = -60 everywhere (an init tg_bayes_dense_init accepts): sigma^2 =
 * e^-120 underflows float, so a row of x that is all zeros (a dead ReLU
 * layer's output) had var = 0, sd's gradient 1 / (2 sqrt 0) = inf and NaN
 * in every rho and x gradient (torch, in double: all finite). The rho
 * gradients are the KL's, sig (s / p^2 - 1 / s) ~ -1. */
static void gradients_finite_when_the_variance_underflows(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "u", 3, 4, 0.5f, -60.0f, &rng);
    tg_tensor *x = tg_params_add(ps, "x", 2, (int[]){2, 3});
    tg_params_seal(ps);
    const float xv[] = {0.5f, -1.0f, 2.0f, 0.0f, 0.0f, 0.0f};
    memcpy(x->data, xv, sizeof xv);
    tg_tape *tp = tg_tape_new();
    tg_tensor *eps = tg_tape_tensor2(tp, 2, 4, false);
    for (size_t i = 0; i < eps->size; i++)
        eps->data[i] = 1.0f;
    tg_tensor *y = tg_bayes_dense_apply_eps(tp, &l, x, eps);
    tg_backward(tp, tg_add(tp, tg_sum(tp, y), tg_bayes_dense_kl(tp, &l)));
    const tg_tensor *t[] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho, x};
    for (int k = 0; k < 5; k++)
        for (size_t i = 0; i < t[k]->size; i++)
            if (!isfinite(t[k]->grad[i])) {
                print_error("tensor %d, gradient %zu is %g\n", k, i,
                            (double)t[k]->grad[i]);
                fail();
            }
    for (size_t i = 0; i < l.W_rho->size; i++)
        assert_true(fabsf(l.W_rho->grad[i] + 1.0f) < 1e-6f);
    for (size_t i = 0; i < l.b_rho->size; i++)
        assert_true(fabsf(l.b_rho->grad[i] + 1.0f) < 1e-6f);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* KL = E_q[log q(w) - log p(w)]: the mean over 50,000 draws from q is
 * within 5 standard errors of the graph's value. */
static void kl_matches_monte_carlo(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 2);
    tg_tape *tp = tg_tape_new();
    double graph = tg_bayes_dense_kl(tp, &l)->data[0];
    const tg_tensor *pairs[2][2] = {{l.W_mu, l.W_rho}, {l.b_mu, l.b_rho}};
    tg_rng rng;
    tg_rng_seed(&rng, 99, 0);
    const int draws = 50000;
    const double p = 0.5;
    double sum = 0.0, sum2 = 0.0;
    for (int d = 0; d < draws; d++) {
        double log_ratio = 0.0;
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < pairs[t][0]->size; i++) {
                double s = softplus(pairs[t][1]->data[i]);
                double z = tg_rng_normal(&rng);
                double w = pairs[t][0]->data[i] + s * z;
                /* log N(w; mu, s^2) - log N(w; 0, p^2) */
                log_ratio +=
                    -log(s) - 0.5 * z * z + log(p) + 0.5 * w * w / (p * p);
            }
        sum += log_ratio;
        sum2 += log_ratio * log_ratio;
    }
    double mean = sum / draws, var = sum2 / draws - mean * mean;
    double se = sqrt(var / draws);
    assert_true(fabs(mean - graph) < 5 * se);
    assert_true(se < 0.02 * fabs(graph)); /* the check has teeth */
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* Over 30,000 draws the output of one row has mean x.W_mu^T + b_mu and
 * variance (x*x).(sigma_W^2)^T + sigma_b^2, per unit (5 standard errors). */
static void samples_have_the_local_reparameterization_moments(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 3);
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    float xrow[3] = {0.5f, -1.0f, 2.0f};
    const int rows = 1000, reps = 30;
    float *x = malloc(sizeof(float) * rows * 3);
    for (int r = 0; r < rows; r++)
        memcpy(x + r * 3, xrow, sizeof xrow);
    double sum[4] = {0}, sum2[4] = {0};
    tg_rng rng;
    tg_rng_seed(&rng, 5, 0);
    for (int rep = 0; rep < reps; rep++) {
        tg_tape_reset(tp);
        tg_tensor *y =
            tg_bayes_dense_apply(tp, &l, tg_tape_view2(tp, x, rows, 3), &rng);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < 4; j++) {
                double v = y->data[r * 4 + j];
                sum[j] += v;
                sum2[j] += v * v;
            }
    }
    double n = (double)rows * reps;
    for (int j = 0; j < 4; j++) {
        double mean = l.b_mu->data[j], var = pow(softplus(l.b_rho->data[j]), 2);
        for (int k = 0; k < 3; k++) {
            mean += xrow[k] * l.W_mu->data[j * 3 + k];
            var +=
                xrow[k] * xrow[k] * pow(softplus(l.W_rho->data[j * 3 + k]), 2);
        }
        double m = sum[j] / n, v = sum2[j] / n - m * m;
        assert_true(fabs(m - mean) < 5 * sqrt(var / n));
        /* the variance of a sample variance is 2 var^2 / n for a Gaussian */
        assert_true(fabs(v - var) < 5 * var * sqrt(2.0 / n));
    }
    /* without an rng: the posterior mean's output, exactly tg_dense's */
    tg_tape_reset(tp);
    tg_tensor *xs = tg_tape_view2(tp, x, 2, 3);
    tg_tensor *a = tg_bayes_dense_apply(tp, &l, xs, NULL);
    tg_tensor *b = tg_dense(tp, xs, l.W_mu, l.b_mu);
    assert_memory_equal(a->data, b->data, sizeof(float) * 8);
    free(x);
    tg_tape_free(tp);
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_names_shapes_and_rho),
        cmocka_unit_test(kl_matches_closed_form),
        cmocka_unit_test(kl_exact_for_very_negative_rho),
        cmocka_unit_test(rho_gradient_finite_when_variance_overflows),
        cmocka_unit_test(gradients_finite_when_the_variance_underflows),
        cmocka_unit_test(kl_matches_monte_carlo),
        cmocka_unit_test(samples_have_the_local_reparameterization_moments),
    };
    return cmocka_run_group_tests_name("bayes_kl", tests, NULL, NULL);
}

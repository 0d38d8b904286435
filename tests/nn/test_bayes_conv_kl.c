/* The variational Conv2d layer's parameters, KL and samples: names, shapes
 * and rho at init, the KL against the closed form and a Monte Carlo
 * estimate, the deterministic conv2d when sigma ~ 0, finite gradients when
 * the variance underflows, and the sampled outputs' moments against a
 * naive convolution in double. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"

#include "bayes_conv_common.h"

static double softplus(double r)
{
    return r > 0 ? r + log1p(exp(-r)) : log1p(exp(r));
}

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

/* y [B, O, OH, OW] = b + sum over c, i, j of f(x[b, c, oh*s - p + i,
 * ow*s - p + j]) w[o, c, i, j] (zero outside x), f(v) = v or v^2 when
 * square: PyTorch's Conv2d written out, in double. */

static void conv_naive(const geom *g, const float *x, const double *w,
                       const double *b, bool square, double *y)
{
    int OH = out_size(g->H, g), OW = out_size(g->W, g);
    for (int n = 0; n < g->B; n++)
        for (int o = 0; o < g->O; o++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b[o];
                    for (int c = 0; c < g->C; c++)
                        for (int i = 0; i < g->k; i++)
                            for (int j = 0; j < g->k; j++) {
                                int h = oh * g->s - g->p + i,
                                    v = ow * g->s - g->p + j;
                                if (h < 0 || h >= g->H || v < 0 || v >= g->W)
                                    continue;
                                double xv =
                                    x[((n * g->C + c) * g->H + h) * g->W + v];
                                acc +=
                                    (square ? xv * xv : xv) *
                                    w[((o * g->C + c) * g->k + i) * g->k + j];
                            }
                    y[((n * g->O + o) * OH + oh) * OW + ow] = acc;
                }
}

static void init_names_shapes_and_rho(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 7, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "conv1", 3, 5, 4, 2, 1, 1.0f, -5.0f, &rng);
    assert_int_equal(tg_params_count(ps), 4);
    assert_ptr_equal(tg_params_find(ps, "conv1.weight_mu"), l.W_mu);
    assert_ptr_equal(tg_params_find(ps, "conv1.weight_rho"), l.W_rho);
    assert_ptr_equal(tg_params_find(ps, "conv1.bias_mu"), l.b_mu);
    assert_ptr_equal(tg_params_find(ps, "conv1.bias_rho"), l.b_rho);
    const int want[4] = {5, 3, 4, 4};
    assert_int_equal(l.W_mu->ndim, 4);
    assert_int_equal(l.W_rho->ndim, 4);
    assert_memory_equal(l.W_mu->shape, want, sizeof want);
    assert_memory_equal(l.W_rho->shape, want, sizeof want);
    assert_int_equal(l.b_mu->shape[0], 5);
    assert_int_equal(l.b_rho->shape[0], 5);
    for (size_t i = 0; i < l.W_rho->size; i++)
        assert_true(l.W_rho->data[i] == -5.0f);
    for (size_t i = 0; i < l.b_rho->size; i++)
        assert_true(l.b_rho->data[i] == -5.0f);
    /* PyTorch's bound 1/sqrt(fan_in), fan_in = 3 * 4 * 4 = 48, and used */
    float a = 1.0f / sqrtf(48.0f), wmax = 0.0f, bmax = 0.0f;
    for (size_t i = 0; i < l.W_mu->size; i++)
        wmax = fmaxf(wmax, fabsf(l.W_mu->data[i]));
    for (size_t i = 0; i < l.b_mu->size; i++)
        bmax = fmaxf(bmax, fabsf(l.b_mu->data[i]));
    assert_true(wmax <= a && wmax > 0.8f * a);
    assert_true(bmax <= a && bmax > 0.0f);
    /* the same draws as tg_conv2d_layer's TG_INIT_TORCH from this seed */
    tg_params *ps2 = tg_params_new();
    tg_rng_seed(&rng, 7, 0);
    tg_conv2d_layer c;
    tg_conv2d_layer_init(&c, ps2, "c", 3, 5, 4, 2, 1, TG_INIT_TORCH, &rng);
    assert_memory_equal(c.W->data, l.W_mu->data, c.W->size * sizeof(float));
    assert_memory_equal(c.b->data, l.b_mu->data, c.b->size * sizeof(float));
    /* field by field: the struct's padding (after relu) is not compared */
    for (int d = 0; d < 2; d++) {
        assert_int_equal(c.args.stride[d], l.args.stride[d]);
        assert_int_equal(c.args.padding[d], l.args.padding[d]);
        assert_int_equal(c.args.dilation[d], l.args.dilation[d]);
        assert_int_equal(c.args.output_padding[d], l.args.output_padding[d]);
    }
    assert_true(c.args.relu == l.args.relu);
    tg_params_free(ps2);
    tg_params_free(ps);
}

static void kl_matches_closed_form(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *kl = tg_bayes_conv2d_kl(tp, &l);
    double want =
        kl_closed(l.W_mu, l.W_rho, 0.5) + kl_closed(l.b_mu, l.b_rho, 0.5);
    print_message("  kl %.7g, closed form %.7g\n", kl->data[0], want);
    assert_int_equal(kl->size, 1);
    assert_true(fabs(kl->data[0] - want) < 1e-5 * fabs(want) + 1e-5);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* KL = E_q[log q(w) - log p(w)]: the mean over 20,000 draws from q is
 * within 5 standard errors of the graph's value. */
static void kl_matches_monte_carlo(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 2);
    tg_tape *tp = tg_tape_new();
    double graph = tg_bayes_conv2d_kl(tp, &l)->data[0];
    const tg_tensor *pairs[2][2] = {{l.W_mu, l.W_rho}, {l.b_mu, l.b_rho}};
    tg_rng rng;
    tg_rng_seed(&rng, 99, 0);
    const int draws = 20000;
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
    print_message("  kl %.5g, Monte Carlo %.5g +- %.3g (1 se)\n", graph, mean,
                  se);
    assert_true(fabs(mean - graph) < 5 * se);
    assert_true(se < 0.02 * fabs(graph)); /* the check has teeth */
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* ---- sampled outputs ---------------------------------------------------- */

/* sigma ~ 0 (rho = -30, sigma = 9e-14): a sample is conv2d(x, W_mu) + b_mu
 * to float precision, and apply without an rng is exactly that conv2d. */
static void sigma_near_zero_is_the_deterministic_conv(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 3);
    for (size_t i = 0; i < l.W_rho->size; i++)
        l.W_rho->data[i] = -30.0f;
    for (size_t i = 0; i < l.b_rho->size; i++)
        l.b_rho->data[i] = -30.0f;
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){3, 2, 7, 6}, false);
    tg_rng rng;
    tg_rng_seed(&rng, 4, 0);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 2.0f);
    tg_tensor *y = tg_bayes_conv2d_apply(tp, &l, x, &rng);
    tg_tensor *det = tg_conv2d(tp, x, l.W_mu, l.b_mu, 2, 1, 1);
    tg_tensor *mean = tg_bayes_conv2d_apply(tp, &l, x, NULL);
    assert_int_equal(y->size, det->size);
    assert_int_equal(y->size, (size_t)3 * 3 * 4 * 3);
    assert_memory_equal(mean->data, det->data, det->size * sizeof(float));
    double worst = 0.0;
    for (size_t i = 0; i < y->size; i++) {
        double d = fabs((double)y->data[i] - det->data[i]);
        worst = fmax(worst, d / (1.0 + fabs(det->data[i])));
    }
    print_message("  worst |sample - conv2d| / (1 + |conv2d|) = %.3g\n", worst);
    assert_true(worst <= 1e-6);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* A blank image (MNIST's background: every window all zeros) and bias rho
 * -60: var = conv2d(0, sigma_W^2) + sigma_b^2 with sigma_b^2 = e^-120,
 * 0 in float, so sd's gradient was inf and the rho and x gradients NaN
 * (torch, in double: all finite). */
static void gradients_finite_when_the_variance_underflows(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 9);
    for (size_t i = 0; i < l.b_rho->size; i++)
        l.b_rho->data[i] = -60.0f;
    tg_params *xs = tg_params_new(); /* x too, for its gradient */
    tg_tensor *x = tg_params_add(xs, "x", 4, (int[]){1, 2, 5, 5});
    tg_tape *tp = tg_tape_new();
    tg_tensor *eps = tg_tape_tensor(tp, 4, (int[]){1, 3, 3, 3}, false);
    for (size_t i = 0; i < eps->size; i++)
        eps->data[i] = 1.0f;
    tg_tensor *y = tg_bayes_conv2d_apply_eps(tp, &l, x, eps);
    tg_backward(tp, tg_add(tp, tg_sum(tp, y), tg_bayes_conv2d_kl(tp, &l)));
    const tg_tensor *t[] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho, x};
    for (int k = 0; k < 5; k++)
        for (size_t i = 0; i < t[k]->size; i++)
            if (!isfinite(t[k]->grad[i])) {
                print_error("tensor %d, gradient %zu is %g\n", k, i,
                            (double)t[k]->grad[i]);
                fail();
            }
    tg_tape_free(tp);
    tg_params_free(xs);
    tg_params_free(ps);
}

/* Over 20,000 draws (500 copies of one image, 40 calls) each output element
 * has mean conv2d(x, W_mu) + b_mu and variance conv2d(x*x, sigma_W^2) +
 * sigma_b^2, computed by the naive convolution in double (5 standard
 * errors). */
static void samples_have_the_local_reparameterization_moments(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 3);
    const geom g = {1, 2, 5, 6, 3, 3, 2, 1}; /* out 3x3 */
    enum { COPIES = 500, REPS = 40, PER = 3 * 3 * 3, IMG = 2 * 5 * 6 };
    double w_mu[54], w_var[54], b_mu[3], b_var[3];
    for (int i = 0; i < 54; i++) {
        w_mu[i] = l.W_mu->data[i];
        w_var[i] = pow(softplus(l.W_rho->data[i]), 2);
    }
    for (int o = 0; o < 3; o++) {
        b_mu[o] = l.b_mu->data[o];
        b_var[o] = pow(softplus(l.b_rho->data[o]), 2);
    }
    float img[IMG];
    tg_rng rng;
    tg_rng_seed(&rng, 6, 0);
    tg_rng_fill_normal(&rng, img, IMG, 0.0f, 1.0f);
    double want_mean[PER], want_var[PER];
    conv_naive(&g, img, w_mu, b_mu, false, want_mean);
    conv_naive(&g, img, w_var, b_var, true, want_var);
    float *x = malloc(sizeof(float) * COPIES * IMG);
    for (int c = 0; c < COPIES; c++)
        memcpy(x + c * IMG, img, sizeof img);
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    double sum[PER] = {0}, sum2[PER] = {0};
    for (int rep = 0; rep < REPS; rep++) {
        tg_tape_reset(tp);
        tg_tensor *xs = tg_tape_tensor(tp, 4, (int[]){COPIES, 2, 5, 6}, false);
        memcpy(xs->data, x, sizeof(float) * COPIES * IMG);
        tg_tensor *y = tg_bayes_conv2d_apply(tp, &l, xs, &rng);
        assert_int_equal(y->size, (size_t)COPIES * PER);
        for (int c = 0; c < COPIES; c++)
            for (int j = 0; j < PER; j++) {
                double v = y->data[c * PER + j];
                sum[j] += v;
                sum2[j] += v * v;
            }
    }
    double n = (double)COPIES * REPS, worst_m = 0.0, worst_v = 0.0;
    for (int j = 0; j < PER; j++) {
        double m = sum[j] / n, v = sum2[j] / n - m * m;
        double zm = fabs(m - want_mean[j]) / sqrt(want_var[j] / n);
        /* the variance of a sample variance is 2 var^2 / n for a Gaussian */
        double zv = fabs(v - want_var[j]) / (want_var[j] * sqrt(2.0 / n));
        worst_m = fmax(worst_m, zm);
        worst_v = fmax(worst_v, zv);
    }
    print_message("  %d outputs, %.0f draws: worst mean %.2f se, worst "
                  "variance %.2f se\n",
                  PER, n, worst_m, worst_v);
    assert_true(worst_m < 5.0);
    assert_true(worst_v < 5.0);
    /* the posterior mean's output is the naive convolution too */
    tg_tape_reset(tp);
    tg_tensor *x1 = tg_tape_tensor(tp, 4, (int[]){1, 2, 5, 6}, false);
    memcpy(x1->data, img, sizeof img);
    tg_tensor *y1 = tg_bayes_conv2d_apply(tp, &l, x1, NULL);
    for (int j = 0; j < PER; j++)
        assert_true(fabs(y1->data[j] - want_mean[j]) < 1e-5);
    free(x);
    tg_tape_free(tp);
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(init_names_shapes_and_rho),
        cmocka_unit_test(kl_matches_closed_form),
        cmocka_unit_test(kl_matches_monte_carlo),
        cmocka_unit_test(sigma_near_zero_is_the_deterministic_conv),
        cmocka_unit_test(gradients_finite_when_the_variance_underflows),
        cmocka_unit_test(samples_have_the_local_reparameterization_moments),
    };
    return cmocka_run_group_tests_name("bayes_conv_kl", tests, NULL, NULL);
}

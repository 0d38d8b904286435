/* The variational Dense layer: its KL against the closed form and a Monte
 * Carlo estimate, the sampled pre-activations' moments against the local
 * reparameterization formula, gradient checks with fixed noise, the same bits
 * on 1 and 2 threads, and a checkpoint round trip. */
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
#include "tmpdir.h"

static double softplus(double r)
{
    return r > 0 ? r + log1p(exp(-r)) : log1p(exp(r));
}

/* A layer in=3, out=4 with random means and rho in [-3, 0] (sigma from
 * 0.05 to 0.7), prior scale 0.5, in a sealed set. */
static tg_bayes_dense small_layer(tg_params *ps, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "bfc", 3, 4, 0.5f, -5.0f, &rng);
    tg_params_seal(ps);
    tg_rng_fill_uniform(&rng, l.W_rho->data, l.W_rho->size, -3.0f, 0.0f);
    tg_rng_fill_uniform(&rng, l.b_rho->data, l.b_rho->size, -3.0f, 0.0f);
    tg_rng_fill_normal(&rng, l.W_mu->data, l.W_mu->size, 0.0f, 0.5f);
    tg_rng_fill_normal(&rng, l.b_mu->data, l.b_mu->size, 0.0f, 0.5f);
    return l;
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

/* ---- gradient checks with fixed noise --------------------------------- */

typedef struct fixed {
    tg_tensor *eps;
    float prior_scale;
} fixed;

/* inputs: x [5, 3], W_mu [4, 3], W_rho [4, 3], b_mu [4], b_rho [4] */
static tg_bayes_dense from_inputs(tg_tensor **in, float prior_scale)
{
    return (tg_bayes_dense){.W_mu = in[1],
                            .W_rho = in[2],
                            .b_mu = in[3],
                            .b_rho = in[4],
                            .in = 3,
                            .out = 4,
                            .prior_scale = prior_scale};
}

static tg_tensor *f_sample(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    return tg_bayes_dense_apply_eps(tp, &l, in[0], f->eps);
}

static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    return tg_bayes_dense_kl(tp, &l);
}

/* A whole negative ELBO: softmax NLL of relu(sample) through a second
 * variational layer would need more inputs; one layer's NLL + KL / N. */
static tg_tensor *f_elbo(tg_tape *tp, tg_tensor **in, void *ctx)
{
    static const int labels[5] = {0, 3, 1, 2, 3};
    tg_tensor *nll = tg_loss_softmax_xent(tp, f_sample(tp, in, ctx), labels);
    return tg_add(tp, nll, tg_scale(tp, f_kl(tp, in, ctx), 1.0f / 50.0f));
}

/* The training path: sample and KL from one pass; the noise from an rng
 * seeded afresh on every call, so every evaluation sees the same eps. */
static tg_tensor *f_apply_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    tg_rng rng;
    tg_rng_seed(&rng, 21, 0);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_dense_apply_kl(tp, &l, in[0], &rng, &kl);
    return tg_add(tp, y, tg_scale(tp, kl, 0.3f));
}

static void gradients_with_fixed_noise(void **state)
{
    (void)state;
    const int shapes[5][2] = {{5, 3}, {4, 3}, {4, 3}, {4, 0}, {4, 0}};
    tg_tensor *in[5];
    tg_rng rng;
    tg_rng_seed(&rng, 11, 0);
    for (int i = 0; i < 5; i++) {
        in[i] = shapes[i][1] ? tg_tensor_new2(shapes[i][0], shapes[i][1])
                             : tg_tensor_new(1, shapes[i]);
        tg_rng_fill_normal(&rng, in[i]->data, in[i]->size, 0.0f, 0.7f);
        tg_tensor_require_grad(in[i]);
    }
    /* rho in [-2, 0.5]: sigma from 0.13 to 0.97 */
    tg_rng_fill_uniform(&rng, in[2]->data, in[2]->size, -2.0f, 0.5f);
    tg_rng_fill_uniform(&rng, in[4]->data, in[4]->size, -2.0f, 0.5f);
    fixed f = {.eps = tg_tensor_new2(5, 4), .prior_scale = 0.7f};
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    const struct {
        const char *name;
        tg_graph_fn fn;
    } cases[] = {{"bayes sample", f_sample},
                 {"bayes kl", f_kl},
                 {"bayes nll + kl / N", f_elbo},
                 {"bayes apply_kl", f_apply_kl}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_gradcheck_report rep;
        bool ok = tg_gradcheck(cases[c].fn, 5, in, &f, NULL, &rep);
        tg_gradcheck_print(&rep, cases[c].name);
        assert_true(ok);
    }
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(f.eps);
}

/* apply_kl gives apply's sample (same rng state) and kl's value. */
static void apply_kl_matches_apply_and_kl(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 6);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 7, 3, false);
    tg_rng a, b;
    tg_rng_seed(&a, 1, 0);
    tg_rng_fill_normal(&a, x->data, x->size, 0.0f, 1.0f);
    tg_rng_seed(&a, 2, 0);
    tg_rng_seed(&b, 2, 0);
    tg_tensor *kl;
    tg_tensor *y1 = tg_bayes_dense_apply_kl(tp, &l, x, &a, &kl);
    tg_tensor *y2 = tg_bayes_dense_apply(tp, &l, x, &b);
    assert_memory_equal(y1->data, y2->data, 28 * sizeof(float));
    assert_true(kl->data[0] == tg_bayes_dense_kl(tp, &l)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* ---- threads and persistence ------------------------------------------ */

typedef struct run {
    float y[64 * 300];
    float grad[300 * 200];
    float kl;
} run;

/* One step of a 200-300 layer on 64 rows (60,000 weights: enough for the
 * parallel loops): the sample, the KL and W_rho's gradient. */
static void one_step(int threads, run *out)
{
    tg_set_threads(threads);
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "b", 200, 300, 1.0f, -3.0f, &rng);
    tg_params_zero_grad(ps);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 64, 200, false);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_dense_apply_kl(tp, &l, x, &rng, &kl);
    memcpy(out->y, y->data, sizeof out->y);
    out->kl = kl->data[0];
    tg_backward(tp, tg_add(tp, tg_sum(tp, tg_square(tp, y)), kl));
    memcpy(out->grad, l.W_rho->grad, sizeof out->grad);
    tg_tape_free(tp);
    tg_params_free(ps);
}

static void same_bits_on_one_and_two_threads(void **state)
{
    (void)state;
    run *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    one_step(1, a);
    one_step(2, b);
    tg_set_threads(0);
    assert_memory_equal(a, b, sizeof *a);
    free(a);
    free(b);
}

static void checkpoint_round_trip(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 4);
    assert_int_equal(
        tg_checkpoint_save(in_dir("bnn.safetensors"), ps, NULL, NULL), TG_OK);
    tg_params *ps2 = tg_params_new();
    tg_bayes_dense l2 = small_layer(ps2, 5); /* different values */
    assert_true(memcmp(l.W_rho->data, l2.W_rho->data, 12 * sizeof(float)));
    assert_int_equal(
        tg_checkpoint_load(in_dir("bnn.safetensors"), ps2, NULL, NULL), TG_OK);
    const tg_tensor *a[4] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho};
    const tg_tensor *b[4] = {l2.W_mu, l2.W_rho, l2.b_mu, l2.b_rho};
    for (int i = 0; i < 4; i++)
        assert_memory_equal(a[i]->data, b[i]->data, a[i]->size * sizeof(float));
    /* the same noise gives the same outputs and KL */
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 2, 3, false);
    tg_tensor *eps = tg_tape_tensor2(tp, 2, 4, false);
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, eps->data, eps->size, 0.0f, 1.0f);
    tg_tensor *y1 = tg_bayes_dense_apply_eps(tp, &l, x, eps);
    tg_tensor *y2 = tg_bayes_dense_apply_eps(tp, &l2, x, eps);
    assert_memory_equal(y1->data, y2->data, 8 * sizeof(float));
    assert_true(tg_bayes_dense_kl(tp, &l)->data[0] ==
                tg_bayes_dense_kl(tp, &l2)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
    tg_params_free(ps2);
}

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
        cmocka_unit_test(init_names_shapes_and_rho),
        cmocka_unit_test(kl_matches_closed_form),
        cmocka_unit_test(kl_exact_for_very_negative_rho),
        cmocka_unit_test(rho_gradient_finite_when_variance_overflows),
        cmocka_unit_test(gradients_finite_when_the_variance_underflows),
        cmocka_unit_test(kl_matches_monte_carlo),
        cmocka_unit_test(samples_have_the_local_reparameterization_moments),
        cmocka_unit_test(gradients_with_fixed_noise),
        cmocka_unit_test(apply_kl_matches_apply_and_kl),
        cmocka_unit_test(same_bits_on_one_and_two_threads),
        cmocka_unit_test(checkpoint_round_trip),
        cmocka_unit_test(variances_are_softplus_squared),
        cmocka_unit_test(draw_matches_sqrt_mul_add_relu),
        cmocka_unit_test(mlp_sample_matches_passes_on_the_tape),
        cmocka_unit_test(prediction_misuse_aborts_naming_the_call),
    };
    return cmocka_run_group_tests_name("bayes", tests, setup, teardown);
}

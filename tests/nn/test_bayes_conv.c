/* The variational Conv2d layer: its KL against the closed form and a Monte
 * Carlo estimate, gradient checks with fixed noise on two geometries, the
 * deterministic conv2d when sigma ~ 0, the sampled outputs' moments against
 * a naive convolution in double, the same bits on 1 and 2 threads, a
 * checkpoint round trip, and the messages misuse dies with. */
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

/* A layer 2 -> 3, kernel 3, stride 2, padding 1 with means N(0, 0.5) and
 * rho in [-3, 0] (sigma from 0.05 to 0.7), prior scale 0.5, in a sealed
 * set. */
static tg_bayes_conv2d small_layer(tg_params *ps, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "bconv", 2, 3, 3, 2, 1, 0.5f, -5.0f, &rng);
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

/* y [B, O, OH, OW] = b + sum over c, i, j of f(x[b, c, oh*s - p + i,
 * ow*s - p + j]) w[o, c, i, j] (zero outside x), f(v) = v or v^2 when
 * square: PyTorch's Conv2d written out, in double. */
typedef struct geom {
    int B, C, H, W, O, k, s, p;
} geom;

static int out_size(int n, const geom *g)
{
    return (n + 2 * g->p - g->k) / g->s + 1;
}

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

/* ---- gradient checks with fixed noise --------------------------------- */

typedef struct fixed {
    geom g;
    tg_tensor *eps;
    float prior_scale;
    tg_rng *fresh; /* f_fresh_noise: advances on every evaluation */
} fixed;

/* inputs: x [B, C, H, W], W_mu and W_rho [O, C, k, k], b_mu and b_rho [O] */
static tg_bayes_conv2d from_inputs(tg_tensor **in, const fixed *f)
{
    return (tg_bayes_conv2d){.W_mu = in[1],
                             .W_rho = in[2],
                             .b_mu = in[3],
                             .b_rho = in[4],
                             .in = f->g.C,
                             .out = f->g.O,
                             .kernel = f->g.k,
                             .args = {.stride = {f->g.s, f->g.s},
                                      .padding = {f->g.p, f->g.p},
                                      .dilation = {1, 1}},
                             .prior_scale = f->prior_scale};
}

static tg_tensor *f_sample(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_apply_eps(tp, &l, in[0], f->eps);
}

static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_kl(tp, &l);
}

/* The training path: sample and KL from one pass; the noise from an rng
 * seeded afresh on every call, so every evaluation sees the same eps. */
static tg_tensor *f_apply_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    tg_rng rng;
    tg_rng_seed(&rng, 21, 0);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_conv2d_apply_kl(tp, &l, in[0], &rng, &kl);
    return tg_add(tp, y, tg_scale(tp, kl, 0.3f));
}

/* New noise on every evaluation: the finite differences see a different
 * function each time, so a check that can fail must fail here. */
static tg_tensor *f_fresh_noise(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_apply(tp, &l, in[0], f->fresh);
}

static void gradcheck_geometry(const geom *g, uint64_t seed)
{
    int OH = out_size(g->H, g), OW = out_size(g->W, g);
    const int shapes[5][4] = {{g->B, g->C, g->H, g->W},
                              {g->O, g->C, g->k, g->k},
                              {g->O, g->C, g->k, g->k},
                              {g->O},
                              {g->O}};
    tg_tensor *in[5];
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    for (int i = 0; i < 5; i++) {
        in[i] = tg_tensor_new(i < 3 ? 4 : 1, shapes[i]);
        tg_rng_fill_normal(&rng, in[i]->data, in[i]->size, 0.0f, 0.7f);
        tg_tensor_require_grad(in[i]);
    }
    /* rho in [-2, 0.5]: sigma from 0.13 to 0.97 */
    tg_rng_fill_uniform(&rng, in[2]->data, in[2]->size, -2.0f, 0.5f);
    tg_rng_fill_uniform(&rng, in[4]->data, in[4]->size, -2.0f, 0.5f);
    tg_rng fresh;
    tg_rng_seed(&fresh, 5, 0);
    fixed f = {.g = *g,
               .eps = tg_tensor_new(4, (int[]){g->B, g->O, OH, OW}),
               .prior_scale = 0.7f,
               .fresh = &fresh};
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    /* The KL is a sum of ~130 terms of about 0.5: in float its value has
     * an ulp near 1e-5, which the default step 2^-6 turns into ~1e-4 of
     * noise in the numeric derivative (the default atol). A step of 2^-4
     * quarters that; the truncation error of the fourth-order differences
     * stays far below it for these smooth functions. */
    const tg_gradcheck_opts wide = {0x1p-4, 1e-4, 1e-3, 42};
    const struct {
        const char *name;
        tg_graph_fn fn;
        const tg_gradcheck_opts *opts;
    } cases[] = {{"bayes_conv2d sample", f_sample, NULL},
                 {"bayes_conv2d kl", f_kl, &wide},
                 {"bayes_conv2d apply_kl", f_apply_kl, &wide}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_gradcheck_report rep;
        bool ok = tg_gradcheck(cases[c].fn, 5, in, &f, cases[c].opts, &rep);
        tg_gradcheck_print(&rep, cases[c].name);
        assert_true(ok);
        assert_false(rep.all_zero);
    }
    /* every input's gradient is non-zero somewhere (the check reaches it) */
    tg_tape *tp = tg_tape_new();
    for (int i = 0; i < 5; i++)
        memset(in[i]->grad, 0, in[i]->size * sizeof(float));
    tg_backward(tp, tg_sum(tp, f_sample(tp, in, &f)));
    for (int i = 0; i < 5; i++) {
        float m = 0.0f;
        for (size_t j = 0; j < in[i]->size; j++)
            m = fmaxf(m, fabsf(in[i]->grad[j]));
        assert_true(m > 1e-3f);
    }
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_fresh_noise, 5, in, &f, NULL, &rep);
    tg_gradcheck_print(&rep, "bayes_conv2d, new noise per evaluation "
                             "(must fail)");
    assert_false(ok);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(f.eps);
}

static void gradients_with_fixed_noise(void **state)
{
    (void)state;
    /* 1 -> 3, k3 s1 p1 on 5x5 (same size out), batch 2 */
    gradcheck_geometry(&(geom){2, 1, 5, 5, 3, 3, 1, 1}, 11);
    /* 2 -> 4, k4 s2 p1 on 6x7 (3x3 out, odd sizes, a column unused) */
    gradcheck_geometry(&(geom){1, 2, 6, 7, 4, 4, 2, 1}, 12);
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

/* apply_kl gives apply's sample (same rng state) and kl's value. */
static void apply_kl_matches_apply_and_kl(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 6);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){2, 2, 6, 5}, false);
    tg_rng a, b;
    tg_rng_seed(&a, 1, 0);
    tg_rng_fill_normal(&a, x->data, x->size, 0.0f, 1.0f);
    tg_rng_seed(&a, 2, 0);
    tg_rng_seed(&b, 2, 0);
    tg_tensor *kl;
    tg_tensor *y1 = tg_bayes_conv2d_apply_kl(tp, &l, x, &a, &kl);
    tg_tensor *y2 = tg_bayes_conv2d_apply(tp, &l, x, &b);
    assert_int_equal(y1->size, y2->size);
    assert_memory_equal(y1->data, y2->data, y1->size * sizeof(float));
    assert_true(kl->data[0] == tg_bayes_conv2d_kl(tp, &l)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* ---- threads and persistence ------------------------------------------ */

enum { T_B = 4, T_C = 64, T_HW = 12, T_O = 64 };

typedef struct run {
    float y[T_B * T_O * T_HW * T_HW];
    float grad_rho[T_O * T_C * 9];
    float grad_mu[T_O * T_C * 9];
    float kl;
} run;

/* One step of a 64 -> 64, k3 p1 layer on [4, 64, 12, 12] (36,864 weights
 * and outputs: enough for the parallel loops): the sample, the KL and the
 * weights' gradients. */
static void one_step(int threads, run *out)
{
    tg_set_threads(threads);
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "b", T_C, T_O, 3, 1, 1, 1.0f, -3.0f, &rng);
    tg_params_zero_grad(ps);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){T_B, T_C, T_HW, T_HW}, false);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_conv2d_apply_kl(tp, &l, x, &rng, &kl);
    assert_int_equal(y->size, sizeof out->y / sizeof(float));
    memcpy(out->y, y->data, sizeof out->y);
    out->kl = kl->data[0];
    tg_backward(tp, tg_add(tp, tg_sum(tp, tg_square(tp, y)), kl));
    memcpy(out->grad_rho, l.W_rho->grad, sizeof out->grad_rho);
    memcpy(out->grad_mu, l.W_mu->grad, sizeof out->grad_mu);
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
    tg_bayes_conv2d l = small_layer(ps, 4);
    assert_int_equal(
        tg_checkpoint_save(in_dir("bcnn.safetensors"), ps, NULL, NULL), TG_OK);
    tg_params *ps2 = tg_params_new();
    tg_bayes_conv2d l2 = small_layer(ps2, 5); /* different values */
    assert_true(memcmp(l.W_rho->data, l2.W_rho->data, 54 * sizeof(float)));
    assert_int_equal(
        tg_checkpoint_load(in_dir("bcnn.safetensors"), ps2, NULL, NULL), TG_OK);
    const tg_tensor *a[4] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho};
    const tg_tensor *b[4] = {l2.W_mu, l2.W_rho, l2.b_mu, l2.b_rho};
    for (int i = 0; i < 4; i++)
        assert_memory_equal(a[i]->data, b[i]->data, a[i]->size * sizeof(float));
    /* the same noise gives the same outputs and KL */
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){2, 2, 5, 5}, false);
    tg_tensor *eps = tg_tape_tensor(tp, 4, (int[]){2, 3, 3, 3}, false);
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, eps->data, eps->size, 0.0f, 1.0f);
    tg_tensor *y1 = tg_bayes_conv2d_apply_eps(tp, &l, x, eps);
    tg_tensor *y2 = tg_bayes_conv2d_apply_eps(tp, &l2, x, eps);
    assert_memory_equal(y1->data, y2->data, y1->size * sizeof(float));
    assert_true(tg_bayes_conv2d_kl(tp, &l)->data[0] ==
                tg_bayes_conv2d_kl(tp, &l2)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
    tg_params_free(ps2);
}

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
        cmocka_unit_test(init_names_shapes_and_rho),
        cmocka_unit_test(kl_matches_closed_form),
        cmocka_unit_test(kl_matches_monte_carlo),
        cmocka_unit_test(gradients_with_fixed_noise),
        cmocka_unit_test(sigma_near_zero_is_the_deterministic_conv),
        cmocka_unit_test(gradients_finite_when_the_variance_underflows),
        cmocka_unit_test(samples_have_the_local_reparameterization_moments),
        cmocka_unit_test(apply_kl_matches_apply_and_kl),
        cmocka_unit_test(same_bits_on_one_and_two_threads),
        cmocka_unit_test(checkpoint_round_trip),
        cmocka_unit_test(misuse_aborts_naming_the_layer),
    };
    return cmocka_run_group_tests_name("bayes_conv", tests, setup, teardown);
}

/* The VAE with the continuous Bernoulli decoder (likelihood = TG_VAE_CB):
 * its -ELBO is the Bernoulli one minus sum log C(lambda), with C computed
 * here from its definition in lambda; its gradient passes a
 * finite-difference check; tg_cb_mean against the mean from the definition
 * and from the integral of t p(t) dt; the decoder's pictures are that
 * mean; the importance-weighted log p(x) uses the CB density. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"
#include "float_equal.h"

enum { B = 4, IN = 12, LATENT = 3 };

typedef struct fixture {
    tg_vae *vae;
    tg_tensor *x, *eps; /* long-lived: [B, IN], [B, LATENT] */
} fixture;

/* Same seed, same weights, x and eps for either likelihood. */
static fixture make(int hidden, tg_vae_likelihood lik, uint64_t seed)
{
    fixture f;
    f.vae =
        tg_vae_new((tg_vae_config){IN, hidden, LATENT, TG_VAE_MLP, lik}, seed);
    f.x = tg_tensor_new2(B, IN);
    f.eps = tg_tensor_new2(B, LATENT);
    tg_rng rng;
    tg_rng_seed(&rng, seed, 99);
    tg_rng_fill_uniform(&rng, f.x->data, f.x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    return f;
}

static void unmake(fixture *f)
{
    tg_vae_free(f->vae);
    tg_tensor_free(f->x);
    tg_tensor_free(f->eps);
}

/* log C(lambda) = log(2 atanh(1 - 2 lambda) / (1 - 2 lambda)) from the
 * definition, in long double; log 2 + d^2/3 (atanh d / d = 1 + d^2/3 + ...)
 * where d = 1 - 2 lambda is too small for the quotient. */
static double log_c(double logit)
{
    long double lam = 1.0L / (1.0L + expl(-(long double)logit));
    long double d = 1.0L - 2.0L * lam;
    if (fabsl(d) < 1e-6L)
        return (double)(logl(2.0L) + d * d / 3.0L);
    return (double)logl(2.0L * atanhl(d) / d);
}

static void elbo_is_bernoulli_plus_log_normaliser(int hidden)
{
    fixture fb = make(hidden, TG_VAE_BERNOULLI, 7);
    fixture fc = make(hidden, TG_VAE_CB, 7);
    tg_tape *tp = tg_tape_new();
    tg_vae_out ob = tg_vae_forward_eps(tp, fb.vae, fb.x, fb.eps);
    tg_vae_out oc = tg_vae_forward_eps(tp, fc.vae, fc.x, fc.eps);
    assert_memory_equal(ob.logits->data, oc.logits->data,
                        ob.logits->size * sizeof(float));
    double mean_sum_log_c = 0;
    for (int r = 0; r < B; r++) {
        double sum_log_c = 0;
        for (int j = 0; j < IN; j++)
            sum_log_c += log_c(ob.logits->data[r * IN + j]);
        mean_sum_log_c += sum_log_c / B;
        /* rec = -log p(x|z): the normaliser lowers it */
        double want = ob.rec->data[r] - sum_log_c;
        if (fabs(oc.rec->data[r] - want) > 1e-5 * fmax(1, fabs(want)))
            fail_msg("row %d: cb rec %.7g, bernoulli rec %.7g - sum log C "
                     "%.7g = %.7g",
                     r, oc.rec->data[r], ob.rec->data[r], sum_log_c, want);
        assert_true(oc.kl->data[r] == ob.kl->data[r]);
    }
    double want = ob.loss->data[0] - mean_sum_log_c;
    assert_true(fabs(oc.loss->data[0] - want) < 1e-5 * fabs(want));
    /* log C >= log 2 for every pixel: the CB's -ELBO is lower by at least
     * IN log 2 */
    assert_true(oc.loss->data[0] <= ob.loss->data[0] - IN * 0.6931);
    tg_tape_free(tp);
    unmake(&fb);
    unmake(&fc);
}

static void elbo_hidden(void **state)
{
    (void)state;
    elbo_is_bernoulli_plus_log_normaliser(5);
}

static void elbo_no_hidden(void **state)
{
    (void)state;
    elbo_is_bernoulli_plus_log_normaliser(0);
}

static tg_tensor *vae_loss(tg_tape *tp, tg_tensor **inputs, void *ctx)
{
    (void)inputs; /* the parameters, read through the model */
    fixture *f = ctx;
    return tg_vae_forward_eps(tp, f->vae, f->x, f->eps).loss;
}

/* hidden = 0: no ReLU, so no kink for a finite difference to cross. */
static void gradcheck_every_parameter(void **state)
{
    (void)state;
    fixture f = make(0, TG_VAE_CB, 3);
    tg_params *ps = tg_vae_params(f.vae);
    int n = tg_params_count(ps);
    assert_int_equal(n, 4);
    tg_tensor *inputs[4];
    for (int i = 0; i < n; i++)
        inputs[i] = tg_params_get(ps, i);
    tg_gradcheck_report rep;
    tg_gradcheck_opts opts = {
        .eps = 0x1p-8, .atol = 2e-4, .rtol = 1e-3, .seed = 1};
    bool ok = tg_gradcheck(vae_loss, n, inputs, &f, &opts, &rep);
    tg_gradcheck_print(&rep, "cb vae 12-0-3");
    assert_true(ok);
    assert_true(rep.checked == tg_params_numel(ps));
    unmake(&f);
}

/* ---- the mean ------------------------------------------------------------ */

/* E[x] = lambda / (2 lambda - 1) + 1 / (2 atanh(1 - 2 lambda)), the
 * definition in long double: for 0.25 <= |x| <= 20. */
static double mean_from_lambda(double logit)
{
    long double lam = 1.0L / (1.0L + expl(-(long double)logit));
    return (double)(lam / (2.0L * lam - 1.0L) +
                    1.0L / (2.0L * atanhl(1.0L - 2.0L * lam)));
}

/* int_0^1 t p(t) dt / int_0^1 p(t) dt with p(t) = lambda^t (1-lambda)^(1-t),
 * Simpson's rule on 2000 intervals. */
static double mean_from_integral(double logit)
{
    double lam = 1.0 / (1.0 + exp(-logit));
    double l1 = log(lam), l0 = log1p(-lam);
    enum { N = 2000 };
    double s0 = 0, s1 = 0;
    for (int i = 0; i <= N; i++) {
        double t = (double)i / N, w = i == 0 || i == N ? 1 : (i % 2 ? 4 : 2);
        double p = exp(t * l1 + (1 - t) * l0);
        s0 += w * p;
        s1 += w * t * p;
    }
    return s1 / s0;
}

static void cb_mean_matches_definition_and_integral(void **state)
{
    (void)state;
    enum { N = 2001 };
    float *x = malloc(N * sizeof *x), *m = malloc(N * sizeof *m);
    for (int i = 0; i < N; i++)
        x[i] = -20.0f + 40.0f * i / (N - 1); /* step 0.02: 0, +-0.1 in it */
    tg_cb_mean(x, m, N);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double a = fabs(x[i]);
        assert_true(m[i] >= 0.0f && m[i] <= 1.0f);
        if (i > 0)
            assert_true(m[i] >= m[i - 1]); /* increasing in the logit */
        /* E(-x) = 1 - E(x) */
        assert_float_equal(m[i] + m[N - 1 - i], 1.0, 2 * FLT_EPSILON);
        if (a >= 0.25 && a <= 20) {
            double want = mean_from_lambda(x[i]);
            worst = fmax(worst, fabs(m[i] - want));
            assert_float_equal(m[i], want, FLT_EPSILON);
        }
        if (a <= 6) {
            double want = mean_from_integral(x[i]);
            worst = fmax(worst, fabs(m[i] - want));
            assert_float_equal(m[i], want, FLT_EPSILON);
        }
    }
    printf("tg_cb_mean: max |error| %.3g\n", worst);
    free(x);
    free(m);
}

static void cb_mean_edges(void **state)
{
    (void)state;
    /* the switch to the series at |x| = 0.1, both sides */
    const float x[] = {
        0.0f,   0.1f,     nextafterf(0.1f, 0), -0.1f, 80.0f, -80.0f, 1e30f,
        -1e30f, INFINITY, -INFINITY,           1e-30f};
    enum { N = sizeof x / sizeof x[0] };
    float m[N];
    tg_cb_mean(x, m, N);
    assert_true(m[0] == 0.5f);
    assert_float_equal(m[1], mean_from_integral(0.1), 1e-7);
    assert_float_equal(m[2], mean_from_integral(0.1), 1e-7);
    assert_float_equal(m[3], mean_from_integral(-0.1), 1e-7);
    assert_float_equal(m[4], 1.0 - 1.0 / 80, 1e-7);
    assert_float_equal(m[5], 1.0 / 80, 1e-9);
    assert_true(m[6] == 1.0f && m[7] == 1e-30f);
    assert_true(m[8] == 1.0f && m[9] == 0.0f);
    assert_true(m[10] == 0.5f);
    float nan = NAN, out;
    tg_cb_mean(&nan, &out, 1);
    assert_true(isnan(out));
}

/* cmocka's assert_float_equal compares in float */
#define assert_near(a, b, tol)                                                 \
    do {                                                                       \
        double a_ = (a), b_ = (b);                                             \
        if (!(fabs(a_ - b_) <= (tol)))                                         \
            fail_msg("%s = %.15g, want %.15g", #a, a_, b_);                    \
    } while (0)

/* tg_cb_logit_of_mean inverts the mean; tg_vae_pixel_loglik is the
 * Bernoulli's log probability, plus log C for the CB (from the definition
 * here), and the CB's integrates to 1 over [0, 1]. */
static void logit_of_mean_and_pixel_loglik(void **state)
{
    (void)state;
    const double m[] = {1e-4, 0.01, 0.2, 0.5, 0.7, 0.999};
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        double eta = tg_cb_logit_of_mean(m[i]);
        if (fabs(eta) < 30)
            assert_near(mean_from_integral(eta), m[i], 1e-9);
        else if (eta < 0) /* E(x) = -1/x + O(e^x), x very negative */
            assert_near(eta, -1.0 / m[i], 1e-9 / m[i]);
        else /* E(x) = 1 - 1/x + O(e^-x), x very positive */
            assert_near(eta, 1.0 / (1.0 - m[i]), 1e-9 / (1.0 - m[i]));
        float e = (float)eta, back;
        tg_cb_mean(&e, &back, 1);
        assert_near(back, m[i], 4 * FLT_EPSILON);
    }
    assert_true(tg_cb_logit_of_mean(0.5) == 0.0 ||
                fabs(tg_cb_logit_of_mean(0.5)) < 1e-12);
    assert_true(isinf(tg_cb_logit_of_mean(1.0)) &&
                tg_cb_logit_of_mean(1.0) > 0);
    assert_true(isnan(tg_cb_logit_of_mean(1.5)));
    const double logits[] = {-30, -3, -0.2, 0.7, 4, 25};
    for (size_t i = 0; i < sizeof logits / sizeof logits[0]; i++) {
        double eta = logits[i], lam = 1 / (1 + exp(-eta));
        for (double x = 0; x <= 1.0; x += 0.25) {
            double bern = x * log(lam) + (1 - x) * log1p(-lam);
            if (fabs(eta) > 20) /* log1p(-lam) loses digits there */
                bern =
                    x * -log1p(exp(-eta)) + (1 - x) * (-eta - log1p(exp(-eta)));
            assert_near(tg_vae_pixel_loglik(TG_VAE_BERNOULLI, eta, x), bern,
                        1e-9 * fmax(1, fabs(bern)));
            if (fabs(eta) <= 20)
                assert_near(tg_vae_pixel_loglik(TG_VAE_CB, eta, x),
                            bern + log_c(eta), 1e-9 * fmax(1, fabs(bern)));
        }
        double s = 0; /* Simpson over [0, 1] */
        for (int k = 0; k <= 1000; k++)
            s += exp(tg_vae_pixel_loglik(TG_VAE_CB, eta, k / 1000.0)) *
                 (k == 0 || k == 1000 ? 1 : (k % 2 ? 4 : 2));
        assert_near(s / 3000.0, 1.0, 1e-6);
    }
}

/* At an infinite logit, the limits: the Bernoulli's 0 where it predicts
 * the pixel exactly, -Inf elsewhere; the CB's +Inf (its normaliser grows
 * as |logit|) or -Inf. It gave NaN (0 * -Inf, Inf - Inf). */
static void pixel_loglik_at_infinite_logits(void **state)
{
    (void)state;
    const tg_vae_likelihood B = TG_VAE_BERNOULLI, C = TG_VAE_CB;
    assert_true(tg_vae_pixel_loglik(B, -INFINITY, 0.0) == 0.0);
    assert_true(tg_vae_pixel_loglik(B, INFINITY, 1.0) == 0.0);
    const double far[] = {0.0, 0.5, 1.0};
    for (int i = 0; i < 3; i++) {
        double x = far[i], lp = tg_vae_pixel_loglik(B, INFINITY, x),
               ln = tg_vae_pixel_loglik(B, -INFINITY, x);
        assert_true(x == 1.0 ? lp == 0.0 : isinf(lp) && lp < 0);
        assert_true(x == 0.0 ? ln == 0.0 : isinf(ln) && ln < 0);
        double cp = tg_vae_pixel_loglik(C, INFINITY, x),
               cn = tg_vae_pixel_loglik(C, -INFINITY, x);
        assert_true(isinf(cp) && (cp > 0) == (x == 1.0));
        assert_true(isinf(cn) && (cn > 0) == (x == 0.0));
    }
    assert_true(isnan(tg_vae_pixel_loglik(B, NAN, 0.5)));
}

/* decode / reconstruct / sample give the CB mean of the logits. */
static void pictures_are_the_cb_mean(void **state)
{
    (void)state;
    fixture f = make(5, TG_VAE_CB, 4);
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    tg_tensor *logits = tg_vae_decode_logits(tp, f.vae, f.eps);
    tg_tensor *d = tg_vae_decode(tp, f.vae, f.eps);
    assert_int_equal(d->shape[0], B);
    assert_int_equal(d->shape[1], IN);
    float want[B * IN];
    tg_cb_mean(logits->data, want, logits->size);
    assert_memory_equal(d->data, want, sizeof want);
    /* and not the Bernoulli's lambda */
    bool differs = false;
    for (size_t i = 0; i < d->size; i++)
        differs |= fabsf(d->data[i] - 1 / (1 + expf(-logits->data[i]))) > 1e-3f;
    assert_true(differs);
    tg_tape_free(tp);
    unmake(&f);
}

/* log p(x) at k = 1 is one draw's log w: with the same draw, the CB's is
 * the Bernoulli's plus sum log C of that draw's logits (the prior and q
 * terms are the same), so the difference lies between IN log 2 and
 * IN max log C. At large k both stay finite and the CB's is higher. */
static void iwae_uses_the_cb_density(void **state)
{
    (void)state;
    fixture fb = make(5, TG_VAE_BERNOULLI, 11);
    fixture fc = make(5, TG_VAE_CB, 11);
    tg_tape *tp = tg_tape_new();
    tg_iw_opts o = {.k = 64, .seed = 3};
    double lb[B], lc[B], eb[B], ec[B];
    tg_vae_iwae(tp, fb.vae, fb.x->data, B, &o, lb, eb);
    tg_vae_iwae(tp, fc.vae, fc.x->data, B, &o, lc, ec);
    for (int r = 0; r < B; r++) {
        assert_true(isfinite(lb[r]) && isfinite(lc[r]));
        assert_true(lc[r] > lb[r] + IN * 0.6931);
        assert_true(ec[r] > eb[r] + IN * 0.6931);
        assert_true(ec[r] <= lc[r] + 1e-9);
    }
    tg_tape_free(tp);
    unmake(&fb);
    unmake(&fc);
}

/* A one-pixel model (input 1, latent 1): the CB's p(x), estimated by
 * importance weighting at k = 4096, integrates to 1 over [0, 1] (Simpson
 * on 101 points); the Bernoulli's does not (for grey levels it is not a
 * density: its integral is E_z[1/C] < 1). */
static void cb_log_px_is_a_density_on_the_unit_interval(void **state)
{
    (void)state;
    enum { G = 101 };
    float x[G];
    for (int i = 0; i < G; i++)
        x[i] = (float)i / (G - 1);
    tg_tape *tp = tg_tape_new();
    double integral[2];
    for (int l = 0; l < 2; l++) {
        tg_vae *v =
            tg_vae_new((tg_vae_config){1, 0, 1, TG_VAE_MLP,
                                       l ? TG_VAE_CB : TG_VAE_BERNOULLI},
                       5);
        tg_iw_opts o = {.k = 4096, .seed = 2};
        double lp[G];
        tg_vae_iwae(tp, v, x, G, &o, lp, NULL);
        double s = 0;
        for (int i = 0; i < G; i++)
            s += exp(lp[i]) * (i == 0 || i == G - 1 ? 1 : (i % 2 ? 4 : 2));
        integral[l] = s / (3.0 * (G - 1));
        tg_vae_free(v);
    }
    printf("integral of p(x) over [0, 1]: bernoulli %.4f, cb %.4f\n",
           integral[0], integral[1]);
    assert_true(fabs(integral[1] - 1.0) < 0.01);
    assert_true(integral[0] < 0.95);
    tg_tape_free(tp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(elbo_hidden),
        cmocka_unit_test(elbo_no_hidden),
        cmocka_unit_test(gradcheck_every_parameter),
        cmocka_unit_test(cb_mean_matches_definition_and_integral),
        cmocka_unit_test(cb_mean_edges),
        cmocka_unit_test(logit_of_mean_and_pixel_loglik),
        cmocka_unit_test(pixel_loglik_at_infinite_logits),
        cmocka_unit_test(pictures_are_the_cb_mean),
        cmocka_unit_test(iwae_uses_the_cb_density),
        cmocka_unit_test(cb_log_px_is_a_density_on_the_unit_interval),
    };
    return cmocka_run_group_tests_name("models_vae_cb", tests, NULL, NULL);
}

/* tg_cb_log_norm, the continuous Bernoulli's log normaliser of a logit:
 * finite-difference gradients (near 0, across the series threshold at
 * |x| = 1, at large |x|), forward values against references computed here
 * in other ways (the definition in lambda in long double, and the integral
 * 1/C = int_0^1 lambda^t (1 - lambda)^(1 - t) dt by Simpson's rule), the
 * gradient against 1/x - 1/sinh x in long double, continuity across the
 * threshold, the extremes (+-80, +-FLT_MAX, +-Inf, NaN), and the same bits
 * on 1 and 2 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "tg_autograd.h"
#include "float_equal.h"

#define TEST_SEED 19
#include "test_random.h"

#define LN2 0.69314718055994530942

static tg_tensor *from(int n, const float *v)
{
    tg_tensor *t = tg_tensor_new2(1, n);
    for (int i = 0; i < n; i++)
        t->data[i] = v[i];
    return t;
}

/* y = cb_log_norm(x) and dy/dx elementwise (backward of sum(y)). */
static void eval(int n, const float *x, float *y, float *dx)
{
    tg_tensor *t = from(n, x);
    tg_tensor_require_grad(t);
    tg_tape *tp = tg_tape_new();
    tg_tensor *out = tg_cb_log_norm(tp, t);
    assert_int_equal(out->ndim, 2);
    assert_int_equal(out->shape[1], n);
    for (int i = 0; i < n; i++)
        y[i] = out->data[i];
    tg_backward(tp, tg_sum(tp, out));
    for (int i = 0; i < n; i++)
        dx[i] = t->grad[i];
    tg_tape_free(tp);
    tg_tensor_free(t);
}

/* ---- gradient checks ----------------------------------------------------- */

static tg_tensor *f_cb(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_cb_log_norm(tp, in[0]);
}

/* n values with |x| in [lo, hi], random signs */
static tg_tensor *rand_abs(int rows, int cols, float lo, float hi)
{
    tg_tensor *t = tg_tensor_new2(rows, cols);
    for (size_t i = 0; i < t->size; i++) {
        float v = lo + (float)uniform() * (hi - lo);
        t->data[i] = uniform() < 0.5 ? -v : v;
    }
    return t;
}

static void gradcheck_in_every_region(void **state)
{
    (void)state;
    const struct {
        const char *name;
        float lo, hi, eps;
    } regions[] = {
        {"|x| in [0, 3]", 0.0f, 3.0f, 0},
        /* the gradient is about x/6 here: small, not zero */
        {"near 0, |x| in [0.01, 0.1]", 0.01f, 0.1f, 0},
        /* the stencil (+-2 eps) straddles the series/closed-form switch */
        {"across |x| = 1, |x| in [0.98, 1.02]", 0.98f, 1.02f, 0},
        {"large, |x| in [10, 80]", 10.0f, 80.0f, 0},
    };
    int failures = 0;
    for (size_t k = 0; k < sizeof regions / sizeof regions[0]; k++) {
        for (int trial = 0; trial < 3; trial++) {
            tg_tensor *x =
                rand_abs(2 + trial, 3 + trial, regions[k].lo, regions[k].hi);
            tg_gradcheck_report rep;
            tg_gradcheck_opts opts = {regions[k].eps, 1e-4, 1e-3, 7};
            bool ok = tg_gradcheck(f_cb, 1, &x, NULL,
                                   regions[k].eps > 0 ? &opts : NULL, &rep);
            tg_gradcheck_print(&rep, regions[k].name);
            if (!ok)
                failures++;
            tg_tensor_free(x);
        }
    }
    assert_int_equal(failures, 0);
}

/* cb_log_norm's output and then x, flattened and joined: x's gradient holds
 * the check's weights before cb_log_norm's backward runs, which must add to
 * them (dx = dy g(x) had passed the checks of the op alone). */
static tg_tensor *f_cb_fan_out(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *y = tg_cb_log_norm(tp, in[0]);
    tg_tensor *parts[2] = {
        tg_reshape(tp, y, 2, (int[]){1, (int)y->size}),
        tg_reshape(tp, in[0], 2, (int[]){1, (int)in[0]->size})};
    return tg_concat(tp, 2, parts);
}

static void gradient_adds_to_what_dx_holds(void **state)
{
    (void)state;
    tg_tensor *x = rand_abs(3, 5, 0.0f, 3.0f);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_cb_fan_out, 1, &x, NULL, NULL, &rep);
    tg_gradcheck_print(&rep, "cb_log_norm, fan-out");
    assert_true(ok);
    tg_tensor_free(x);
}

/* ---- forward values ------------------------------------------------------ */

/* log C from the definition in lambda, in long double: away from
 * lambda = 1/2 (|x| >= 0.25), and for |x| <= 20, where 1 - 2 lambda still
 * holds e^-|x| to 10 digits (at |x| = 40 only to 2). */
static long double ref_from_lambda(double x)
{
    long double lam = 1.0L / (1.0L + expl(-(long double)x));
    long double d = 1.0L - 2.0L * lam;
    return logl(2.0L * atanhl(d) / d);
}

/* 1/C = int_0^1 lambda^t (1 - lambda)^(1 - t) dt by Simpson's rule on 2000
 * intervals (the integrand is exp of a linear function of t: smooth). */
static double ref_from_integral(double x)
{
    double lam = 1.0 / (1.0 + exp(-x));
    double l1 = log(lam), l0 = log1p(-lam);
    enum { N = 2000 };
    double s = 0;
    for (int i = 0; i <= N; i++) {
        double t = (double)i / N, f = exp(t * l1 + (1 - t) * l0);
        s += f * (i == 0 || i == N ? 1 : (i % 2 ? 4 : 2));
    }
    return -log(s / (3.0 * N));
}

static void forward_matches_two_references(void **state)
{
    (void)state;
    enum { N = 801 };
    float x[N], y[N], dx[N];
    for (int i = 0; i < N; i++)
        x[i] = -20.0f + 40.0f * i / (N - 1); /* includes 0 and +-1 */
    eval(N, x, y, dx);
    double worst_lam = 0, worst_int = 0;
    for (int i = 0; i < N; i++) {
        double tol = 3.0 * FLT_EPSILON * fmax(1.0, fabs(y[i]));
        if (fabs(x[i]) >= 0.25f && fabs(x[i]) <= 20.0f) {
            double e = fabs(y[i] - (double)ref_from_lambda(x[i]));
            worst_lam = fmax(worst_lam, e);
            if (e > tol)
                fail_msg("x = %g: y = %.9g, from lambda %.12Lg", x[i], y[i],
                         ref_from_lambda(x[i]));
        }
        if (fabs(x[i]) <= 6.0f) {
            double e = fabs(y[i] - ref_from_integral(x[i]));
            worst_int = fmax(worst_int, e);
            if (e > tol)
                fail_msg("x = %g: y = %.9g, from the integral %.12g", x[i],
                         y[i], ref_from_integral(x[i]));
        }
    }
    printf("max |error|: %.3g against lambda's definition, %.3g against the "
           "integral\n",
           worst_lam, worst_int);
    float zero = 0.0f;
    eval(1, &zero, y, dx);
    assert_true(y[0] == (float)LN2);
    assert_true(dx[0] == 0.0f);
}

/* 1/x - 1/sinh x in long double: |x| >= 1e-3 loses at most 22 of its 64
 * bits to cancellation. */
static void gradient_matches_long_double(void **state)
{
    (void)state;
    enum { N = 1000 };
    float x[N], y[N], dx[N];
    for (int i = 0; i < N; i++) { /* |x| from 1e-3 to 80, both signs */
        float a = (float)(1e-3 * pow(8e4, (double)(i / 2) / (N / 2 - 1)));
        x[i] = i % 2 ? -a : a;
    }
    eval(N, x, y, dx);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        long double v = x[i];
        double ref = (double)(1.0L / v - 1.0L / sinhl(v));
        double e = fabs(dx[i] - ref) / fabs(ref);
        worst = fmax(worst, e);
        if (e > 2e-6)
            fail_msg("x = %g: dy/dx = %.9g, 1/x - 1/sinh x = %.12g", x[i],
                     dx[i], ref);
    }
    printf("max relative error of the gradient: %.3g\n", worst);
}

/* Just below, at and just above the switch at |x| = 1, value and gradient
 * move by no more than their slope over one float step and a few ulp. */
static void continuous_across_the_series_threshold(void **state)
{
    (void)state;
    for (int sign = -1; sign <= 1; sign += 2) {
        float x[5];
        x[2] = (float)sign;
        x[1] = nextafterf(x[2], 0.0f);
        x[0] = nextafterf(x[1], 0.0f);
        x[3] = nextafterf(x[2], 2.0f * sign);
        x[4] = nextafterf(x[3], 2.0f * sign);
        float y[5], dx[5];
        eval(5, x, y, dx);
        for (int i = 0; i + 1 < 5; i++) {
            double step = fabs((double)x[i + 1] - x[i]);
            assert_true(fabs(y[i + 1] - y[i]) <=
                        step * 0.2 + 4.0 * FLT_EPSILON * fabs(y[i]));
            assert_true(fabs(dx[i + 1] - dx[i]) <=
                        step * 0.2 + 16.0 * FLT_EPSILON * fabs(dx[i]));
        }
        /* the value itself, against the definition */
        assert_true(fabs(y[2] - (double)ref_from_lambda(x[2])) <
                    2.0 * FLT_EPSILON);
    }
}

static void extremes_are_finite_or_infinite_never_nan(void **state)
{
    (void)state;
    const float x[] = {80.0f,  -80.0f,  1e30f,    -1e30f,    FLT_MAX, -FLT_MAX,
                       1e-30f, -1e-30f, INFINITY, -INFINITY, 88.0f,   -104.0f};
    enum { N = sizeof x / sizeof x[0] };
    float y[N], dx[N];
    eval(N, x, y, dx);
    for (int i = 0; i < 8; i++) {
        assert_true(isfinite(y[i]) && isfinite(dx[i]));
        /* log C = log|x| + 2 atanh(e^-|x|): log|x| itself for |x| >= 80 */
        double a = fabs(x[i]);
        double ref = a >= 1 ? log(a) + 2.0 * atanh(exp(-a)) : LN2;
        assert_float_equal(y[i], ref, 4.0 * FLT_EPSILON * fabs(ref));
        double gref = a >= 1 ? 1.0 / x[i] : x[i] / 6.0;
        assert_float_equal(dx[i], gref, 4.0 * FLT_EPSILON * fabs(gref) + 1e-45);
    }
    for (int i = 8; i < 10; i++) {
        assert_true(isinf(y[i]) && y[i] > 0);
        assert_true(dx[i] == 0.0f);
    }
    for (int i = 10; i < N; i++)
        assert_true(isfinite(y[i]) && isfinite(dx[i]) && dx[i] != 0.0f);
    float nan = NAN;
    eval(1, &nan, y, dx);
    assert_true(isnan(y[0]) && isnan(dx[0]));
}

/* Elementwise, in blocks: the same bits on 1 and 2 threads (a VAE batch's
 * worth of logits, enough to run in parallel). */
static void same_on_one_and_two_threads(void **state)
{
    (void)state;
    enum { N = 128 * 784 };
    float *x = malloc(N * sizeof *x), *y[2], *dx[2];
    for (int i = 0; i < N; i++)
        x[i] = (float)(40.0 * uniform() - 20.0);
    int old = tg_get_threads();
    for (int t = 0; t < 2; t++) {
        y[t] = malloc(N * sizeof(float));
        dx[t] = malloc(N * sizeof(float));
        tg_set_threads(t + 1);
        eval(N, x, y[t], dx[t]);
    }
    tg_set_threads(old);
    assert_memory_equal(y[0], y[1], N * sizeof(float));
    assert_memory_equal(dx[0], dx[1], N * sizeof(float));
    for (int t = 0; t < 2; t++) {
        free(y[t]);
        free(dx[t]);
    }
    free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gradcheck_in_every_region),
        cmocka_unit_test(gradient_adds_to_what_dx_holds),
        cmocka_unit_test(forward_matches_two_references),
        cmocka_unit_test(gradient_matches_long_double),
        cmocka_unit_test(continuous_across_the_series_threshold),
        cmocka_unit_test(extremes_are_finite_or_infinite_never_nan),
        cmocka_unit_test(same_on_one_and_two_threads),
    };
    return cmocka_run_group_tests_name("autograd: continuous Bernoulli "
                                       "log normaliser",
                                       tests, NULL, NULL);
}

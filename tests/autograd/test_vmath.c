/* The vectorisable exp, log1p and sigmoid of autograd/vmath.h against libm
 * in double over the whole float range: a sweep of every 12289th float bit
 * pattern plus the edges (the overflow threshold ln FLT_MAX, the denormal
 * range, +-0, +-Inf, NaN), each within an ulp bound. Runs in the UBSan
 * build too: NaN in must give NaN out with no undefined behaviour (the old
 * exp converted NaN to int and shifted a negative value). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "autograd/vmath.h"
#include "tg_autograd.h"

static float from_bits(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static unsigned bits_of(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return (unsigned)b;
}

/* |got - want| in units of the float spacing at want (denormal spacing
 * 2^-149 below FLT_MIN). Inf/NaN handled by the caller. */
static double ulp_err(float got, double want)
{
    double a = fabs(want);
    int e;
    frexp(a < FLT_MIN ? FLT_MIN : a, &e);
    double ulp = ldexp(1.0, e - 24);
    return fabs((double)got - want) / ulp;
}

typedef struct sweep {
    const char *name;
    double max_ulp;
    float worst_x;
    size_t n, bad;
} sweep;

/* One value: got = f(x) against want (exact, in double). */
static void check(sweep *s, float x, float got, double want, double bound)
{
    s->n++;
    bool ok;
    double err = 0.0;
    if (isnan(want))
        ok = isnan(got);
    else if ((float)want == INFINITY || (float)want == -INFINITY)
        ok = got == (float)want;
    else if (isinf(got))
        /* an overflow a few ulp early, at the very edge of the range */
        ok = fabs(want) > FLT_MAX * (1.0 - bound * 0x1p-23);
    else {
        err = ulp_err(got, want);
        ok = err <= bound;
    }
    if (err > s->max_ulp) {
        s->max_ulp = err;
        s->worst_x = x;
    }
    if (!ok && s->bad++ < 5)
        printf("  %s(%.9g = 0x%08x): %.9g, libm %.9g (%.2f ulp)\n", s->name,
               (double)x, bits_of(x), (double)got, want, err);
}

static double sigmoid_ref(double x) { return 1.0 / (1.0 + exp(-x)); }

enum { STRIDE = 12289 }; /* prime: about 350,000 values */

static const float edges[] = {
    0.0f,      -0.0f,      1e-45f,    -1e-45f, 1e-38f,  -1e-38f,  FLT_MIN,
    -FLT_MIN,  1.0f,       -1.0f,     88.3f,   88.5f,   88.72f,   88.7228f,
    88.72283f, 88.722832f, 88.72284f, 88.73f,  89.0f,   100.0f,   -87.3f,
    -87.33f,   -87.34f,    -87.35f,   -88.0f,  -95.0f,  -100.0f,  -103.0f,
    -103.97f,  -103.98f,   -104.0f,   -110.0f, FLT_MAX, -FLT_MAX, INFINITY,
    -INFINITY, NAN,        -NAN,
};

static void run(sweep *s, int which, float x, double bound)
{
    switch (which) {
    case 0:
        check(s, x, vexpf(x), exp((double)x), bound);
        break;
    case 1:
        if (!(x >= 0.0f) && !isnan(x))
            return; /* vlog1pf's domain: y >= 0 */
        check(s, x, vlog1pf(x), log1p((double)x), bound);
        break;
    case 3:
        if (!(x >= 0.0f && x <= 1.0f) && !isnan(x))
            return; /* vlog1p_unit's domain: [0, 1] */
        check(s, x, vlog1p_unit(x), log1p((double)x), bound);
        break;
    default:
        check(s, x, vsigmoidf(x), sigmoid_ref((double)x), bound);
    }
}

static void sweep_one(const char *name, int which, double bound)
{
    sweep s = {name, 0.0, 0.0f, 0, 0};
    for (uint64_t b = 0; b <= 0xffffffffu; b += STRIDE)
        run(&s, which, from_bits((uint32_t)b), bound);
    for (size_t k = 0; k < sizeof edges / sizeof edges[0]; k++)
        for (int d = -3; d <= 3; d++) { /* the edge and its neighbours */
            float x = edges[k];
            for (int i = 0; i < (d < 0 ? -d : d) && isfinite(x); i++)
                x = nextafterf(x, d < 0 ? -INFINITY : INFINITY);
            run(&s, which, x, bound);
        }
    /* Densely through the range where exp overflows or goes denormal. */
    for (float x = 88.6f; x < 88.8f; x = nextafterf(x, 100.0f))
        run(&s, which, x, bound);
    for (float x = -104.5f; x < -86.0f; x += 0x1p-10f)
        run(&s, which, x, bound);
    printf("%-8s %9zu values, max %.2f ulp at %.9g, %zu beyond %.0f ulp\n",
           name, s.n, s.max_ulp, (double)s.worst_x, s.bad, bound);
    assert_int_equal(s.bad, 0);
}

static void test_exp_matches_libm(void **state)
{
    (void)state;
    sweep_one("exp", 0, 2.0);
}
static void test_log1p_matches_libm(void **state)
{
    (void)state;
    sweep_one("log1p", 1, 5.0);
}
/* The softplus tail log1p(e^-|x|): the stride sweep, then every 61st float
 * of [0, 1] (1.7e7 values; 1.7e5 under valgrind, TG_TEST_QUICK), where all
 * its inputs lie. */
static void test_log1p_unit_matches_libm(void **state)
{
    (void)state;
    sweep_one("log1p01", 3, 2.5);
    sweep s = {"log1p01", 0.0, 0.0f, 0, 0};
    const char *quick = getenv("TG_TEST_QUICK");
    uint32_t step = quick && *quick && *quick != '0' ? 6101 : 61;
    for (uint32_t b = 0; b <= 0x3f800000u; b += step)
        run(&s, 3, from_bits(b), 2.5);
    run(&s, 3, 1.0f, 2.5);
    printf("%-8s %9zu values in [0, 1], max %.2f ulp at %.9g\n", s.name, s.n,
           s.max_ulp, (double)s.worst_x);
    assert_int_equal(s.bad, 0);
}
static void test_sigmoid_matches_libm(void **state)
{
    (void)state;
    sweep_one("sigmoid", 2, 3.0);
}

/* NaN in, NaN out, through the public op too; and tg_exp on the interval
 * (88.3, 88.72] the old clamp got wrong by up to 34%. */
static void test_exp_op_at_the_edges(void **state)
{
    (void)state;
    const float xs[] = {88.31f, 88.5f,     88.7f,    88.72f, 88.723f,
                        NAN,    -INFINITY, INFINITY, -90.0f};
    int n = (int)(sizeof xs / sizeof xs[0]);
    tg_tensor *x = tg_tensor_new2(1, n);
    memcpy(x->data, xs, sizeof xs);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_exp(tp, x);
    for (int i = 0; i < n; i++) {
        double want = exp((double)xs[i]);
        printf("  exp(%g) = %.9g (libm %.9g)\n", (double)xs[i],
               (double)y->data[i], want);
        if (isnan(want))
            assert_true(isnan(y->data[i]));
        else if (isinf((float)want))
            assert_true(isinf(y->data[i]));
        else
            assert_true(ulp_err(y->data[i], want) <= 2.0);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_matches_libm),
        cmocka_unit_test(test_log1p_matches_libm),
        cmocka_unit_test(test_log1p_unit_matches_libm),
        cmocka_unit_test(test_sigmoid_matches_libm),
        cmocka_unit_test(test_exp_op_at_the_edges),
    };
    return cmocka_run_group_tests_name("autograd vmath", tests, NULL, NULL);
}

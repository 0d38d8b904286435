/* tg_rng: determinism per (seed, stream), independence of streams, and the
 * statistics of uniform and normal samples within bounds that a correct
 * generator violates with probability far below 1e-6. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"

static void same_seed_and_stream_same_sequence(void **state)
{
    (void)state;
    tg_rng a, b;
    tg_rng_seed(&a, 42, 7);
    tg_rng_seed(&b, 42, 7);
    for (int i = 0; i < 1000; i++)
        assert_true(tg_rng_u64(&a) == tg_rng_u64(&b));
    tg_rng_seed(&a, 42, 7);
    tg_rng_seed(&b, 42, 7);
    for (int i = 0; i < 100; i++)
        assert_true(tg_rng_normal(&a) == tg_rng_normal(&b));
}

/* Counts equal outputs at equal positions: two independent 64-bit streams
 * agree nowhere in 1000 draws. */
static int agreements(uint64_t s1, uint64_t t1, uint64_t s2, uint64_t t2)
{
    tg_rng a, b;
    int same = 0;
    tg_rng_seed(&a, s1, t1);
    tg_rng_seed(&b, s2, t2);
    for (int i = 0; i < 1000; i++)
        same += tg_rng_u64(&a) == tg_rng_u64(&b);
    return same;
}

static void streams_and_seeds_differ(void **state)
{
    (void)state;
    assert_int_equal(agreements(1, 0, 1, 1), 0);
    assert_int_equal(agreements(1, 0, 2, 0), 0);
    assert_int_equal(agreements(3, 5, 5, 3), 0); /* not symmetric */
    assert_int_equal(agreements(0, 0, 0, 1), 0);
    /* A stream is not the seed's sequence shifted by a few steps. */
    tg_rng a, b;
    tg_rng_seed(&a, 9, 0);
    tg_rng_seed(&b, 9, 1);
    uint64_t first = tg_rng_u64(&b);
    for (int i = 0; i < 10000; i++)
        assert_true(tg_rng_u64(&a) != first);
}

static void uniform_in_unit_interval_with_right_mean(void **state)
{
    (void)state;
    tg_rng r;
    tg_rng_seed(&r, 1, 2);
    const int n = 1000000;
    double sum = 0, lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        float u = tg_rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    /* mean of U(0,1): 1/2, sd of the sample mean sqrt(1/12/n); 6 sd. */
    assert_true(fabs(sum / n - 0.5) < 6 * sqrt(1.0 / 12 / n));
    assert_true(lo < 1e-4 && hi > 1 - 1e-4);

    float x[1000];
    tg_rng_fill_uniform(&r, x, 1000, -3.0f, 2.0f);
    for (int i = 0; i < 1000; i++)
        assert_true(x[i] >= -3.0f && x[i] <= 2.0f);
}

static void below_is_uniform_over_its_range(void **state)
{
    (void)state;
    tg_rng r;
    tg_rng_seed(&r, 5, 0);
    enum { K = 7 };
    const int n = 700000;
    int count[K] = {0};
    for (int i = 0; i < n; i++) {
        uint32_t v = tg_rng_below(&r, K);
        assert_true(v < K);
        count[v]++;
    }
    /* Pearson chi-square, 6 degrees of freedom: P(X > 40) < 1e-6. */
    double chi2 = 0, expect = (double)n / K;
    for (int k = 0; k < K; k++)
        chi2 += (count[k] - expect) * (count[k] - expect) / expect;
    assert_true(chi2 < 40);
    assert_int_equal(tg_rng_below(&r, 1), 0);
    /* Large n: the top half of the range is reached. */
    int high = 0;
    for (int i = 0; i < 1000; i++)
        high += tg_rng_below(&r, 3000000000u) >= 1500000000u;
    assert_true(high > 400 && high < 600);
}

/* Sample mean, variance, skewness and kurtosis of n normals against N(0,1),
 * each within 6 of its standard errors (sqrt(1/n), sqrt(2/n), sqrt(6/n),
 * sqrt(24/n)). */
static void check_moments(const float *x, int n, double mean, double std)
{
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    for (int i = 0; i < n; i++) {
        double z = (x[i] - mean) / std;
        m1 += z;
        m2 += z * z;
        m3 += z * z * z;
        m4 += z * z * z * z;
    }
    m1 /= n, m2 /= n, m3 /= n, m4 /= n;
    assert_true(fabs(m1) < 6 * sqrt(1.0 / n));
    assert_true(fabs(m2 - 1) < 6 * sqrt(2.0 / n));
    assert_true(fabs(m3) < 6 * sqrt(6.0 / n));
    assert_true(fabs(m4 - 3) < 6 * sqrt(96.0 / n)); /* var of z^4: 96 */
}

static void normal_has_standard_moments(void **state)
{
    (void)state;
    const int n = 400000;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    tg_rng r;
    tg_rng_seed(&r, 11, 3);
    for (int i = 0; i < n; i++) {
        x[i] = tg_rng_normal(&r);
        assert_true(isfinite(x[i]));
    }
    check_moments(x, n, 0, 1);
    tg_rng_fill_normal(&r, x, (size_t)n, 2.0f, 0.5f);
    check_moments(x, n, 2, 0.5);
    /* Odd length: the last element is filled too. */
    x[2] = NAN;
    tg_rng_fill_normal(&r, x, 3, 0.0f, 1.0f);
    assert_true(isfinite(x[2]));
    free(x);
}

/* Fraction beyond 3 sigma: 0.0027 for N(0,1); a generator with wrong tails
 * (e.g. a sum of few uniforms) fails this. */
static void normal_tails(void **state)
{
    (void)state;
    tg_rng r;
    tg_rng_seed(&r, 2024, 0);
    const int n = 1000000;
    int beyond = 0;
    for (int i = 0; i < n; i++)
        beyond += fabsf(tg_rng_normal(&r)) > 3.0f;
    double p = 0.0026998, sd = sqrt(p * (1 - p) / n);
    assert_true(fabs((double)beyond / n - p) < 6 * sd);
}

/* ---- tg_rng_fill_normal_bulk ------------------------------------------- */

/* Standard normal CDF. */
static double phi(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }

/* Moments, the CDF at eleven points, the 3-sigma tail, the bound |x| <=
 * 6.56, and the two values of each Box-Muller pair uncorrelated with each
 * other and independent in sign: over 1,000,003 values (245 blocks and an
 * odd tail), each within 6 standard errors. */
static void bulk_normal_distribution(void **state)
{
    (void)state;
    const int n = 1000003;
    float *x = malloc((size_t)n * sizeof *x);
    assert_non_null(x);
    tg_rng r;
    tg_rng_seed(&r, 5, 9);
    tg_rng_fill_normal_bulk(&r, x, (size_t)n);
    float biggest = 0.0f;
    for (int i = 0; i < n; i++) {
        assert_true(isfinite(x[i]));
        biggest = fabsf(x[i]) > biggest ? fabsf(x[i]) : biggest;
    }
    assert_true(biggest <= 6.57f && biggest > 4.0f);
    check_moments(x, n, 0, 1);
    const double at[] = {-3, -2, -1.5, -1, -0.5, 0, 0.3, 0.8, 1.2, 2, 2.5};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        int below = 0;
        for (int i = 0; i < n; i++)
            below += x[i] <= at[k];
        double p = phi(at[k]), sd = sqrt(p * (1 - p) / n);
        assert_true(fabs((double)below / n - p) < 6 * sd);
    }
    int pairs = n / 2, both_pos = 0;
    double xy = 0.0;
    for (int j = 0; j < pairs; j++) {
        xy += (double)x[2 * j] * x[2 * j + 1];
        both_pos += x[2 * j] > 0 && x[2 * j + 1] > 0;
    }
    assert_true(fabs(xy / pairs) < 6 * sqrt(1.0 / pairs));
    assert_true(fabs((double)both_pos / pairs - 0.25) <
                6 * sqrt(0.25 * 0.75 / pairs));
    free(x);
}

/* The same bits on 1 and 2 threads; exactly one draw taken from the rng;
 * a fill of n values is a prefix of a longer fill with the same key (the
 * values do not depend on n); blocks are not copies of each other; other
 * seeds give other values. */
static void bulk_normal_determinism(void **state)
{
    (void)state;
    const size_t n = 300001, short_n = 5001;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    float *c = malloc(short_n * sizeof *c);
    assert_true(a && b && c);
    tg_rng r1, r2, r3, after;
    tg_rng_seed(&r1, 77, 1);
    r2 = r3 = after = r1;
    tg_set_threads(1);
    tg_rng_fill_normal_bulk(&r1, a, n);
    tg_set_threads(2);
    tg_rng_fill_normal_bulk(&r2, b, n);
    tg_set_threads(0);
    assert_memory_equal(a, b, n * sizeof *a);
    tg_rng_u64(&after);
    assert_memory_equal(&r1, &after, sizeof after);
    assert_memory_equal(&r2, &after, sizeof after);
    tg_rng_fill_normal_bulk(&r3, c, short_n);
    assert_memory_equal(a, c, short_n * sizeof *a);
    assert_true(memcmp(a, a + 4096, 4096 * sizeof *a) != 0);
    tg_rng other;
    tg_rng_seed(&other, 78, 1);
    tg_rng_fill_normal_bulk(&other, b, n);
    int same = 0;
    for (size_t i = 0; i < n; i++)
        same += a[i] == b[i];
    assert_true(same < 100);
    tg_rng_fill_normal_bulk(&other, NULL, 0); /* nothing to fill */
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_seed_and_stream_same_sequence),
        cmocka_unit_test(streams_and_seeds_differ),
        cmocka_unit_test(uniform_in_unit_interval_with_right_mean),
        cmocka_unit_test(below_is_uniform_over_its_range),
        cmocka_unit_test(normal_has_standard_moments),
        cmocka_unit_test(normal_tails),
        cmocka_unit_test(bulk_normal_distribution),
        cmocka_unit_test(bulk_normal_determinism),
    };
    return cmocka_run_group_tests_name("nn_rng", tests, NULL, NULL);
}

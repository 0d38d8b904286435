/* Private to autograd: exp and log1p written so that the compiler can
 * vectorise loops over them (no calls, no branches), accurate to a few ulp
 * over the whole float range: measured against libm in double
 * (tests/autograd/test_vmath.c), exp within 1.2 ulp, sigmoid 2.4, log1p
 * 3.6, with Inf, NaN and denormals as libm. libm's expf/log1pf are scalar calls
 * and were the largest cost of the VAE step after the GEMMs. Loops over them
 * vectorise when compiled with -fno-trapping-math (meson.build sets it for
 * the library; it changes no result, only lets comparisons be if-converted). */
#ifndef TG_VMATH_H
#define TG_VMATH_H

#include <stdint.h>

typedef union {
    float f;
    int32_t i;
} f32_bits;

/* e^x = 2^n * e^r with n = round(x / ln 2), |r| <= ln2 / 2; e^r by its
 * Taylor series to degree 7 (truncation < 7e-9 relative). 2^n is applied as
 * two factors 2^(n/2) and 2^(n - n/2), each a normal float, so n can reach
 * 128 (x up to ln FLT_MAX = 88.7228) and -150 (denormal results down to
 * x = -103.97), and the one rounding happens in the last product: as libm,
 * Inf above 88.7228, denormals below -87.34, 0 below -103.97, NaN for NaN.
 * The input is clamped to [-104, 88.8] first with comparisons that send NaN
 * to a bound, so the float-to-int conversion never sees NaN or Inf (that
 * would be undefined behaviour) and every shift is of a positive value. */
static inline float vexpf(float x)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    float xc = x > -104.0f ? x : -104.0f; /* NaN -> -104 */
    xc = xc < 88.8f ? xc : 88.8f;
    /* round to nearest: adding 1.5 * 2^23 pushes the fraction out */
    float n = (xc * log2e + 12582912.0f) - 12582912.0f;
    float r = (xc - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ni = (int32_t)n; /* in [-150, 128] */
    int32_t n1 = ni / 2, n2 = ni - n1;
    f32_bits s1 = {.i = (n1 + 127) << 23}, s2 = {.i = (n2 + 127) << 23};
    float y = (p * s1.f) * s2.f; /* overflows to Inf above ln FLT_MAX */
    return x != x ? x : y;
}

/* ln(u) for u in [1, 2^127) (also right for any normal float u > 0, as
 * the bulk normal generator uses it): u = m * 2^e with m in [sqrt(1/2),
 * sqrt(2)); ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its odd
 * series to s^13 (truncation < 2e-11). */
static inline float vlogf_ge1(float u)
{
    f32_bits b = {.f = u};
    int32_t e = ((b.i >> 23) & 0xff) - 127;
    b.i = (b.i & 0x007fffff) | 0x3f800000; /* m in [1, 2) */
    float m = b.f;
    int big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e += big;
    float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
    float q = 2.0f / 13.0f;
    q = q * s2 + 2.0f / 11.0f;
    q = q * s2 + 2.0f / 9.0f;
    q = q * s2 + 2.0f / 7.0f;
    q = q * s2 + 2.0f / 5.0f;
    q = q * s2 + 2.0f / 3.0f;
    q = q * s2 + 2.0f;
    return s * q + (float)e * 0.693147180559945309f;
}

/* ln(1 + y) for y >= 0 (+Inf gives +Inf, NaN gives NaN). 1 + y rounds
 * away y's low bits; the factor y / ((1 + y) - 1) puts them back
 * (Goldberg's trick), and for y so small that 1 + y == 1 the answer is y
 * itself. */
static inline float vlog1pf(float y)
{
    float u = 1.0f + y, d = u - 1.0f;
    float l = vlogf_ge1(u);
    float v = d == 0.0f ? y : l * (y / d);
    return y == __builtin_inff() ? y : v;
}

/* The sum of n floats in double, in one fixed order for any n and any
 * thread count: element j into partial sum j % 8, the eight combined
 * pairwise. One running sum is a chain of dependent additions (4 cycles
 * each: a 784-pixel row of the BCE took ~3,100 cycles, a quarter of its
 * time); eight chains vectorise and overlap. */
static inline double vsum_f64(const float *t, int n)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            s[l] += t[j + l];
    for (int l = 0; j + l < n; l++)
        s[l] += t[j + l];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* ln(1 + e) for e in [0, 1] (NaN gives NaN): the softplus tail
 * log1p(e^-|x|). ln(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3],
 * by its odd series to s^15 (truncation < 2e-8 relative): one division and
 * no exponent split, where vlog1pf needs two divisions and a split. Exact
 * for tiny e (s = e / 2, the result 2s), so no digits are lost as e -> 0. */
static inline float vlog1p_unit(float e)
{
    float s = e / (2.0f + e), w = s * s;
    float q = 1.0f / 15.0f;
    q = q * w + 1.0f / 13.0f;
    q = q * w + 1.0f / 11.0f;
    q = q * w + 1.0f / 9.0f;
    q = q * w + 1.0f / 7.0f;
    q = q * w + 1.0f / 5.0f;
    q = q * w + 1.0f / 3.0f;
    return (2.0f * s) * (q * w) + 2.0f * s;
}

/* sigmoid(x) given e = e^-|x| in (0, 1] (the BCE's backward keeps e from
 * its forward). */
static inline float vsigmoid_from_exp(float x, float e)
{
    float p = 1.0f / (1.0f + e);
    return x >= 0 ? p : e * p;
}

/* 1 / (1 + e^-x) without overflow for either sign. */
static inline float vsigmoidf(float x)
{
    return vsigmoid_from_exp(x, vexpf(-(x < 0 ? -x : x)));
}

#endif

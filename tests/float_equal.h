/* assert_float_equal as cmocka 1.1.5 defines it passes whenever a value is
 * NaN or infinite: its relative test, |a - b| > max(|a|, |b|) FLT_EPSILON,
 * is Inf > Inf or a NaN comparison, both false. So a check that a gradient
 * was 0 passed on -Inf, and one against a reference passed on NaN. Here it
 * fails unless a == b, or both are finite and within epsilon (or within
 * cmocka's relative FLT_EPSILON); as cmocka's, the values are compared as
 * floats. Include after cmocka.h. */
#ifndef TG_TEST_FLOAT_EQUAL_H
#define TG_TEST_FLOAT_EQUAL_H

#include <float.h>
#include <math.h>

static inline void tg_float_equal(float a, float b, float epsilon,
                                  const char *file, int line)
{
    float d = fabsf(a - b);
    if (a == b ||
        (isfinite(d) &&
         (d <= epsilon || d <= fmaxf(fabsf(a), fabsf(b)) * FLT_EPSILON)))
        return;
    print_error("%.9g != %.9g (epsilon %g)\n", (double)a, (double)b,
                (double)epsilon);
    _fail(file, line);
}

#undef assert_float_equal
#define assert_float_equal(a, b, epsilon)                                      \
    tg_float_equal((float)(a), (float)(b), (float)(epsilon), __FILE__, __LINE__)

#endif

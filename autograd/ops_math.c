/* Unary math: neg, abs, sqrt, pow with a scalar exponent, leaky_relu, gelu,
 * the continuous Bernoulli's log normaliser.
 * Every op maps x [any shape] to y of the same shape; each backward comes
 * just before its forward and adds into dx. Loops read and write through
 * local pointers so that they vectorise (see ops_elementwise.c). */
#include "ops_unary.h"
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#include <math.h>

/* clang-format off */
/* y = -x; dx += -dy */
TG_UNARY_OP(neg, -x_, -g_)

/* y = |x|; dx += sign(x) dy, with sign(0) = 0 (the subgradient PyTorch
 * uses: at the kink no direction is preferred). */
TG_UNARY_OP(abs, fabsf(x_), x_ > 0.0f ? g_ : (x_ < 0.0f ? -g_ : 0.0f))

/* y = sqrt(x); dx += dy / (2 y). At x = 0 the gradient is +Inf (as in
 * PyTorch); x < 0 gives NaN in both. */
TG_UNARY_OP(sqrt, sqrtf(x_), 0.5f * g_ / y_)
/* clang-format on */

/* y = x^p for a constant p; dx += p x^(p-1) dy. The derivative is computed
 * as powf(x, p - 1), not p y / x, so that it stays right at x = 0 (p = 2:
 * 0; p = 1: 1). p = 0 gives y = 1 and dx += 0 everywhere, 0^0 included.
 * Non-integer p needs x >= 0 (otherwise NaN, as powf). */
static void pow_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *x = r->in[0]->data, *dy = r->out->grad;
    const float p = r->f[0];
    size_t n = r->out->size;
    if (p == 0.0f)
        return;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        dx[i] += dy[i] * p * powf(x[i], p - 1.0f);
}

tg_tensor *tg_pow(tg_tape *tp, tg_tensor *x, float p)
{
    check_inputs("pow", x);
    if (!isfinite(p))
        tg_fatal("pow", "exponent %g is not finite", (double)p);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        y[i] = powf(xd[i], p);
    tg_record *r = record(tp, "pow", pow_backward, out, 1, &x);
    if (r)
        r->f[0] = p;
    return out;
}

/* y = x for x > 0, slope * x otherwise; dx += dy or slope * dy (at x = 0 the
 * slope side, as PyTorch). */
static void leaky_relu_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *x = r->in[0]->data, *dy = r->out->grad;
    const float slope = r->f[0];
    size_t n = r->out->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++) {
        float g = dy[i];
        dx[i] += x[i] > 0.0f ? g : slope * g;
    }
}

tg_tensor *tg_leaky_relu(tg_tape *tp, tg_tensor *x, float slope)
{
    check_inputs("leaky_relu", x);
    if (!isfinite(slope))
        tg_fatal("leaky_relu", "slope %g is not finite", (double)slope);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        y[i] = xd[i] > 0.0f ? xd[i] : slope * xd[i];
    tg_record *r = record(tp, "leaky_relu", leaky_relu_backward, out, 1, &x);
    if (r)
        r->f[0] = slope;
    return out;
}

/* The exact GELU (PyTorch's default, approximate='none'):
 * y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),
 * dx += dy (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
 * Below x = -1, Phi(x) = 0.5 erfc(-x / sqrt 2): 1 + erf there cancels (at
 * x = -5 Phi was 4% off, from -5.55 on 0, so gelu(-7) was -0 for -9e-12).
 * erff is a libm call, so these loops stay scalar; neither form overflows
 * (for x -> -Inf, x phi(x) -> 0 and erfc -> 0). */
#define TG_SQRT1_2 0.70710678118654752440f
#define TG_INV_SQRT_2PI 0.39894228040143267794f

static inline float gelu_cdf(float v)
{
    return v < -1.0f ? 0.5f * erfcf(-v * TG_SQRT1_2)
                     : 0.5f * (1.0f + erff(v * TG_SQRT1_2));
}

static void gelu_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *x = r->in[0]->data, *dy = r->out->grad;
    size_t n = r->out->size;
    TG_PARALLEL_FOR(n, 8)
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float cdf = gelu_cdf(v);
        float pdf = TG_INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] += dy[i] * (cdf + v * pdf);
    }
}

tg_tensor *tg_gelu(tg_tape *tp, tg_tensor *x)
{
    check_inputs("gelu", x);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 8)
    for (size_t i = 0; i < n; i++) {
        float v = xd[i];
        y[i] = v < -1.0f ? v * gelu_cdf(v)
                         : 0.5f * v * (1.0f + erff(v * TG_SQRT1_2));
    }
    record(tp, "gelu", gelu_backward, out, 1, &x);
    return out;
}

/* The log normaliser of the continuous Bernoulli (Loaiza-Ganem &
 * Cunningham 2019), p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x)
 * on [0, 1], C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda), taken as a
 * function of the logit x, lambda = sigmoid(x). There 1 - 2 lambda =
 * -tanh(x/2) and atanh(1 - 2 lambda) = -x/2, so
 *   C = x / tanh(x/2) = a (1 + u) / (1 - u),  a = |x|, u = e^-a:
 * even in x, 2 at x = 0, about |x| for large |x| (no overflow: u <= 1).
 *   y  = log C
 *   dx += dy (1/x - 1/sinh x) = dy sign(x) (1/a - 2u / ((1 - u)(1 + u)))
 * For a >= 1 the closed forms lose nothing (1 - u >= 0.63, C >= 2.16 is in
 * vlogf_ge1's range). Below 1, where 1 - u is mostly rounding and C is 0/0
 * at 0, the Taylor series, truncated where the next term is below 2e-8 at
 * a = 1 (CB_SERIES_MAX):
 *   log C = log 2 + a^2/12 - 7a^4/1440 + 31a^6/90720 - 127a^8/4838400
 *           + 73a^10/34214400 - 1414477a^12/7846046208000
 *   dy/dx = x/6 - 7x^3/360 + 31x^5/15120 - 127x^7/604800 + 73x^9/3421440
 *           - 1414477x^11/653837184000 + 8191x^13/37362124800
 *           - 16931177x^15/762187345920000
 * x = +-Inf (lambda 0 or 1, where C grows without bound): y = +Inf and the
 * gradient 0; NaN gives NaN. Both branches are computed and one selected,
 * so the loops vectorise. */
#define CB_SERIES_MAX 1.0f

static inline float cb_log_norm(float x)
{
    float a = fabsf(x), s = a * a;
    float p = -1414477.0f / 7846046208000.0f;
    p = p * s + 73.0f / 34214400.0f;
    p = p * s - 127.0f / 4838400.0f;
    p = p * s + 31.0f / 90720.0f;
    p = p * s - 7.0f / 1440.0f;
    p = p * s + 1.0f / 12.0f;
    float series = p * s + 0.69314718055994531f;
    float ad = a > CB_SERIES_MAX ? a : CB_SERIES_MAX; /* no 0/0 below */
    float u = vexpf(-ad);
    float closed = vlogf_ge1(ad * (1.0f + u) / (1.0f - u));
    float y = a < CB_SERIES_MAX ? series : closed;
    y = a == __builtin_inff() ? a : y;
    return x != x ? x : y;
}

static inline float cb_log_norm_grad(float x)
{
    float a = fabsf(x), s = a * a;
    float p = -16931177.0f / 762187345920000.0f;
    p = p * s + 8191.0f / 37362124800.0f;
    p = p * s - 1414477.0f / 653837184000.0f;
    p = p * s + 73.0f / 3421440.0f;
    p = p * s - 127.0f / 604800.0f;
    p = p * s + 31.0f / 15120.0f;
    p = p * s - 7.0f / 360.0f;
    p = p * s + 1.0f / 6.0f;
    float series = p * x;
    float ad = a > CB_SERIES_MAX ? a : CB_SERIES_MAX;
    float u = vexpf(-ad);
    float closed = 1.0f / ad - 2.0f * u / ((1.0f - u) * (1.0f + u));
    float g = a < CB_SERIES_MAX ? series : copysignf(closed, x);
    return x != x ? x : g;
}

/* Blocks of elements through the vector clones (parallel.h); elementwise,
 * so the result does not depend on the blocking or the thread count. */
enum { CB_BLOCK = 4096 };

TG_VECTOR_CLONES
static void cb_log_norm_block(const float *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = cb_log_norm(x[i]);
}

TG_VECTOR_CLONES
static void cb_log_norm_grad_block(const float *x, const float *dy, float *dx,
                                   size_t n)
{
    for (size_t i = 0; i < n; i++)
        dx[i] += dy[i] * cb_log_norm_grad(x[i]);
}

static void cb_log_norm_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *x = r->in[0]->data, *dy = r->out->grad;
    size_t n = r->out->size, blocks = (n + CB_BLOCK - 1) / CB_BLOCK;
    TG_PARALLEL_FOR(blocks, 4 * CB_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t i0 = b * CB_BLOCK, m = n - i0 < CB_BLOCK ? n - i0 : CB_BLOCK;
        cb_log_norm_grad_block(x + i0, dy + i0, dx + i0, m);
    }
}

tg_tensor *tg_cb_log_norm(tg_tape *tp, tg_tensor *logits)
{
    check_inputs("cb_log_norm", logits);
    tg_tensor *out = out_like(tp, logits);
    const float *xd = logits->data;
    float *y = out->data;
    size_t n = logits->size, blocks = (n + CB_BLOCK - 1) / CB_BLOCK;
    TG_PARALLEL_FOR(blocks, 4 * CB_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t i0 = b * CB_BLOCK, m = n - i0 < CB_BLOCK ? n - i0 : CB_BLOCK;
        cb_log_norm_block(xd + i0, y + i0, m);
    }
    record(tp, "cb_log_norm", cb_log_norm_backward, out, 1, &logits);
    return out;
}

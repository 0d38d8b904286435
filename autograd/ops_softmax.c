/* softmax, log_softmax and logsumexp over the last axis. x is viewed as
 * [R, C] (R the product of the leading dims); rows are independent, so they
 * run in parallel with the same result for any thread count. Every row
 * subtracts its max m before exp, so exp never overflows:
 *   logsumexp(x) = m + log(sum_j exp(x_j - m)).
 * A row whose max is infinite shifts by 0 instead (so a row of -Inf gives
 * logsumexp -Inf, as in PyTorch, rather than NaN from -Inf - -Inf). Row sums
 * run in order in double.
 *
 * The shift m and the log of the sum, ls = log sum_j exp(x_j - m), are kept
 * apart wherever they feed an exp or a difference: log_softmax is
 * (x - m) - ls, and the backward of logsumexp takes exp((x - m) - ls), not
 * exp(x - lse) with lse = m + ls rounded to float (for logits near 1e5
 * that rounding alone, half an ulp of 1e5 = 0.004, would put 0.4% into every
 * probability). Saved per row for backward: m and ls. */
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#include <math.h>

static float row_max(const float *x, int n)
{
    float m = x[0];
    for (int j = 1; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return isfinite(m) ? m : 0.0f;
}

/* e[j] = exp(x[j] - m) with m the row's shift; returns sum_j e[j] and m. */
static double row_exp(const float *x, float *e, int n, float *m)
{
    *m = row_max(x, n);
    for (int j = 0; j < n; j++)
        e[j] = vexpf(x[j] - *m);
    double sum = 0.0;
    for (int j = 0; j < n; j++)
        sum += e[j];
    return sum;
}

/* The row's shift *m and ls = log sum_j exp(x_j - m) (scratch gets the
 * exps). */
static double row_log_sum(const float *x, float *scratch, int n, float *m)
{
    return log(row_exp(x, scratch, n, m));
}

static void check_rows(const char *op, const tg_tensor *x)
{
    check_inputs(op, x);
    if (tg_tensor_cols(x) < 1) {
        char s[64];
        tg_fatal(op, "x %s has no columns to normalise over",
                 tg_shape_str(x, s));
    }
}

/* y[r, j] = exp(x[r, j] - lse(x[r]));
 * dx[r, j] += y[r, j] * (dy[r, j] - sum_k dy[r, k] y[r, k]) */
static void softmax_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *y = r->out->data, *dy = r->out->grad;
    int rows = tg_tensor_rows(r->out), cols = tg_tensor_cols(r->out);
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        double dot = 0.0;
        for (int j = 0; j < cols; j++)
            dot += (double)dy[o + j] * y[o + j];
        float d = (float)dot;
        for (int j = 0; j < cols; j++)
            dx[o + j] += y[o + j] * (dy[o + j] - d);
    }
}

tg_tensor *tg_softmax(tg_tape *tp, tg_tensor *x)
{
    check_rows("softmax", x);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        float m;
        float s = (float)(1.0 / row_exp(&xd[o], &y[o], cols, &m));
        for (int j = 0; j < cols; j++)
            y[o + j] *= s;
    }
    record(tp, "softmax", softmax_backward, out, 1, &x);
    return out;
}

/* y[r, j] = x[r, j] - lse(x[r]);
 * dx[r, j] += dy[r, j] - exp(y[r, j]) * sum_k dy[r, k] */
static void log_softmax_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *y = r->out->data, *dy = r->out->grad;
    int rows = tg_tensor_rows(r->out), cols = tg_tensor_cols(r->out);
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        double sum = 0.0;
        for (int j = 0; j < cols; j++)
            sum += dy[o + j];
        float s = (float)sum;
        for (int j = 0; j < cols; j++)
            dx[o + j] += dy[o + j] - vexpf(y[o + j]) * s;
    }
}

tg_tensor *tg_log_softmax(tg_tape *tp, tg_tensor *x)
{
    check_rows("log_softmax", x);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        float m,
            ls = (float)row_log_sum(&xd[o], &y[o], cols, &m); /* y: scratch */
        for (int j = 0; j < cols; j++)
            y[o + j] = (xd[o + j] - m) - ls;
    }
    record(tp, "log_softmax", log_softmax_backward, out, 1, &x);
    return out;
}

/* x [R, C] -> y [R, 1], y[r] = m[r] + ls[r] = log sum_j exp(x[r, j]);
 * dx[r, j] += dy[r] * exp((x[r, j] - m[r]) - ls[r])   (the softmax).
 * saved: m[R] then ls[R]. */
static void logsumexp_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    float *dx = grad_of(tp, r->in[0]);
    const float *xd = x->data, *dy = r->out->grad;
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    const float *m = r->saved, *ls = m + rows;
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        float g = dy[i];
        for (int j = 0; j < cols; j++)
            dx[o + j] += g * vexpf((xd[o + j] - m[i]) - ls[i]);
    }
}

tg_tensor *tg_logsumexp(tg_tape *tp, tg_tensor *x)
{
    check_rows("logsumexp", x);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    tg_tensor *out = out_tensor(tp, 2, (int[]){rows, 1});
    float *scratch = tg_tape_alloc(tp, x->size * sizeof(float));
    float *m = tg_tape_alloc(tp, 2 * (size_t)rows * sizeof(float));
    float *ls = m + rows;
    const float *xd = x->data;
    float *y = out->data;
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        double l = row_log_sum(&xd[o], &scratch[o], cols, &m[i]);
        ls[i] = (float)l;
        y[i] = (float)(m[i] + l);
    }
    tg_record *r = record(tp, "logsumexp", logsumexp_backward, out, 1, &x);
    if (r)
        r->saved = m;
    return out;
}

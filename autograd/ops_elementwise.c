/* Elementwise ops: broadcasting binary ops, scalar ops, and the unary
 * functions. Each op's backward comes first, then the forward that records
 * it. */
#include "ops_unary.h"
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

/* ---- broadcasting ----------------------------------------------------------
 * The first operand a sets the output's shape; a is viewed as [R, C] (C its
 * last dim, R the product of the others). b is indexed b[r*row_stride +
 * c*col_stride] and may be:
 *   a's shape                        (C, 1)
 *   a row: [C], or [1, ..., 1, C]    (0, 1)   repeated down every row
 *   a per-row column [R, 1], or a's  (1, 0)   one value per row
 *   leading dims then 1 ([2, 3, 1]
 *   for a [2, 3, 4])
 *   one element                      (0, 0)
 * A 1-D b is always a row, as in NumPy and PyTorch (trailing axes align),
 * also when R == C: one value per row is spelled [R, 1]. */
typedef struct bcast {
    int rows, cols;
    int row_stride, col_stride;
} bcast;

static bool is_row(const tg_tensor *b)
{
    for (int d = 0; d < b->ndim - 1; d++)
        if (b->shape[d] != 1)
            return false;
    return true;
}

/* b is one value per row of a: [R, 1], or a's leading dims then 1. */
static bool is_per_row(const tg_tensor *a, const tg_tensor *b, int rows)
{
    if (b->ndim == 2 && b->shape[1] == 1 && b->shape[0] == rows)
        return true;
    if (b->ndim != a->ndim || b->ndim < 3 || b->shape[b->ndim - 1] != 1)
        return false;
    for (int d = 0; d < a->ndim - 1; d++)
        if (b->shape[d] != a->shape[d])
            return false;
    return true;
}

/* The geometry for b broadcast to a's shape; false when b does not fit. */
static bool fits(const tg_tensor *a, const tg_tensor *b, bcast *g)
{
    *g = (bcast){tg_tensor_rows(a), tg_tensor_cols(a), 0, 0};
    bool same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++)
        same = a->shape[d] == b->shape[d];
    if (same) {
        g->row_stride = g->cols;
        g->col_stride = 1;
    } else if (b->size == 1) {
        /* one element: strides stay 0 */
    } else if (is_row(b) && tg_tensor_cols(b) == g->cols) {
        g->col_stride = 1;
    } else if (is_per_row(a, b, g->rows)) {
        g->row_stride = 1;
    } else {
        return false;
    }
    return true;
}

static bcast broadcast(const char *op, const tg_tensor *a, const tg_tensor *b)
{
    check_inputs(op, a, b);
    bcast g;
    if (fits(a, b, &g))
        return g;
    char sa[64], sb[64];
    tg_shape_str(a, sa);
    tg_shape_str(b, sb);
    if (fits(b, a, &g))
        tg_fatal(op,
                 "cannot broadcast %s to %s; swap the operands: the first "
                 "operand sets the shape",
                 sb, sa);
    int rows = tg_tensor_rows(a);
    if (b->ndim == 1 && b->shape[0] == rows)
        tg_fatal(op,
                 "cannot broadcast %s to %s: a 1-D operand is a row of %d "
                 "columns; for one value per row use [%d, 1]",
                 sb, sa, tg_tensor_cols(a), rows);
    tg_fatal(op,
             "cannot broadcast %s to %s (b must match a, be a row [%d] or "
             "[1, %d], one value per row [%d, 1] or a single element)",
             sb, sa, tg_tensor_cols(a), tg_tensor_cols(a), rows);
}

#define BIDX(g, r, c)                                                          \
    ((size_t)(r) * (size_t)(g).row_stride +                                    \
     (size_t)(c) * (size_t)(g).col_stride)

/* Records a binary op with its broadcast geometry in r->i, which
 * recorded_bcast reads back in the backward. */
static tg_record *record_binary(tg_tape *tp, const char *op, tg_backward_fn bwd,
                                tg_tensor *y, tg_tensor *a, tg_tensor *b,
                                bcast g)
{
    tg_record *r = record(tp, op, bwd, y, 2, (tg_tensor *[]){a, b});
    if (r) {
        r->i[0] = g.rows;
        r->i[1] = g.cols;
        r->i[2] = g.row_stride;
        r->i[3] = g.col_stride;
    }
    return r;
}

static bcast recorded_bcast(const tg_record *r)
{
    return (bcast){r->i[0], r->i[1], r->i[2], r->i[3]};
}

/* The gradient of a broadcast b sums many terms into each element (all
 * R * C of them for one element): they go into zeroed double sums from the
 * arena, in row-major order, and db += their float once (a float running
 * sum was ~1e-5 relative off over a [128, 784] a). */
static double *bsum_start(tg_tape *tp, const tg_tensor *b)
{
    double *acc = tg_tape_alloc(tp, b->size * sizeof *acc);
    memset(acc, 0, b->size * sizeof *acc);
    return acc;
}

static void bsum_finish(float *db, const double *acc, size_t n)
{
    for (size_t k = 0; k < n; k++)
        db[k] += (float)acc[k];
}

/* da += dy (rows in parallel); db += sign_b * dy summed over the axes b was
 * broadcast along (one thread: rows may share a db element). */
static void binary_backward(tg_tape *tp, tg_record *r, float sign_b)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    bcast g = recorded_bcast(r);
    const float *dy = r->out->grad;
    float *da = grad_of(tp, a), *db = grad_of(tp, b);
    if (da) {
        TG_PARALLEL_FOR(a->size, 1)
        for (size_t k = 0; k < a->size; k++)
            da[k] += dy[k];
    }
    if (!db)
        return;
    double *acc = bsum_start(tp, b);
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++)
            acc[BIDX(g, i, j)] += sign_b * dy[(size_t)i * g.cols + j];
    bsum_finish(db, acc, b->size);
}

static void add_backward(tg_tape *tp, tg_record *r)
{
    binary_backward(tp, r, 1.0f);
}
static void sub_backward(tg_tape *tp, tg_record *r)
{
    binary_backward(tp, r, -1.0f);
}

static tg_tensor *add_or_sub(tg_tape *tp, tg_tensor *a, tg_tensor *b,
                             const char *op, float sign_b, tg_backward_fn bwd)
{
    bcast g = broadcast(op, a, b);
    tg_tensor *y = out_like(tp, a);
    TG_PARALLEL_FOR(g.rows, g.cols)
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j;
            y->data[k] = a->data[k] + sign_b * b->data[BIDX(g, i, j)];
        }
    record_binary(tp, op, bwd, y, a, b, g);
    return y;
}

/* y = a + b */
tg_tensor *tg_add(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    return add_or_sub(tp, a, b, "add", 1.0f, add_backward);
}

/* y = a - b */
tg_tensor *tg_sub(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    return add_or_sub(tp, a, b, "sub", -1.0f, sub_backward);
}

/* y = a * b; da += dy * b (rows in parallel), db += dy * a summed over the
 * broadcast axes (one thread). */
static void mul_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    bcast g = recorded_bcast(r);
    const float *dy = r->out->grad;
    float *da = grad_of(tp, a), *db = grad_of(tp, b);
    if (da) {
        TG_PARALLEL_FOR(g.rows, g.cols)
        for (int i = 0; i < g.rows; i++)
            for (int j = 0; j < g.cols; j++) {
                size_t k = (size_t)i * g.cols + j;
                da[k] += dy[k] * b->data[BIDX(g, i, j)];
            }
    }
    if (!db)
        return;
    double *acc = bsum_start(tp, b);
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j;
            acc[BIDX(g, i, j)] += dy[k] * a->data[k];
        }
    bsum_finish(db, acc, b->size);
}

tg_tensor *tg_mul(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    bcast g = broadcast("mul", a, b);
    tg_tensor *y = out_like(tp, a);
    TG_PARALLEL_FOR(g.rows, g.cols)
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j;
            y->data[k] = a->data[k] * b->data[BIDX(g, i, j)];
        }
    record_binary(tp, "mul", mul_backward, y, a, b, g);
    return y;
}

/* y = a / b; da += dy / b (rows in parallel), db += -dy * y / b (= -dy a /
 * b^2) summed over the broadcast axes (one thread). b = 0 gives +-Inf or
 * NaN, as IEEE division. */
static void div_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    bcast g = recorded_bcast(r);
    const float *dy = r->out->grad, *y = r->out->data, *bd = b->data;
    float *da = grad_of(tp, a), *db = grad_of(tp, b);
    if (da) {
        TG_PARALLEL_FOR(g.rows, g.cols)
        for (int i = 0; i < g.rows; i++)
            for (int j = 0; j < g.cols; j++) {
                size_t k = (size_t)i * g.cols + j;
                da[k] += dy[k] / bd[BIDX(g, i, j)];
            }
    }
    if (!db)
        return;
    double *acc = bsum_start(tp, b);
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j, kb = BIDX(g, i, j);
            acc[kb] -= dy[k] * y[k] / bd[kb];
        }
    bsum_finish(db, acc, b->size);
}

tg_tensor *tg_div(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    bcast g = broadcast("div", a, b);
    tg_tensor *y = out_like(tp, a);
    TG_PARALLEL_FOR(g.rows, g.cols)
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j;
            y->data[k] = a->data[k] / b->data[BIDX(g, i, j)];
        }
    record_binary(tp, "div", div_backward, y, a, b, g);
    return y;
}

/* maximum: y = a if a >= b (or a is NaN) else b; minimum: a if a <= b (or a
 * is NaN) else b. So a NaN in either operand comes out, and a tie (a == b)
 * picks a. The gradient goes whole to the operand picked: da += dy there,
 * db += dy elsewhere (summed over b's broadcast axes, one thread). PyTorch
 * splits a tie's gradient in halves instead; one deterministic side keeps
 * the rule simple to state and the result a subgradient. */
static inline bool picks_a(float a, float b, bool max)
{
    return (max ? a >= b : a <= b) || a != a;
}

static void extremum_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *a = r->in[0], *b = r->in[1];
    bcast g = recorded_bcast(r);
    const bool max = r->f[0] > 0.0f;
    const float *dy = r->out->grad, *ad = a->data, *bd = b->data;
    float *da = grad_of(tp, a), *db = grad_of(tp, b);
    if (da) {
        TG_PARALLEL_FOR(g.rows, g.cols)
        for (int i = 0; i < g.rows; i++)
            for (int j = 0; j < g.cols; j++) {
                size_t k = (size_t)i * g.cols + j;
                float d = dy[k];
                da[k] += picks_a(ad[k], bd[BIDX(g, i, j)], max) ? d : 0.0f;
            }
    }
    if (!db)
        return;
    double *acc = bsum_start(tp, b);
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j, kb = BIDX(g, i, j);
            acc[kb] += picks_a(ad[k], bd[kb], max) ? 0.0f : dy[k];
        }
    bsum_finish(db, acc, b->size);
}

static tg_tensor *extremum(tg_tape *tp, tg_tensor *a, tg_tensor *b,
                           const char *op, bool max)
{
    bcast g = broadcast(op, a, b);
    tg_tensor *y = out_like(tp, a);
    TG_PARALLEL_FOR(g.rows, g.cols)
    for (int i = 0; i < g.rows; i++)
        for (int j = 0; j < g.cols; j++) {
            size_t k = (size_t)i * g.cols + j;
            float av = a->data[k], bv = b->data[BIDX(g, i, j)];
            y->data[k] = picks_a(av, bv, max) ? av : bv;
        }
    tg_record *r = record_binary(tp, op, extremum_backward, y, a, b, g);
    if (r)
        r->f[0] = max ? 1.0f : -1.0f;
    return y;
}

tg_tensor *tg_maximum(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    return extremum(tp, a, b, "maximum", true);
}

tg_tensor *tg_minimum(tg_tape *tp, tg_tensor *a, tg_tensor *b)
{
    return extremum(tp, a, b, "minimum", false);
}

/* ---- scalar ops and unary functions -----------------------------------------
 * Every loop reads and writes through local pointers, so that the compiler
 * knows a store to dx cannot move y or dy, and vectorises. Each backward
 * uses whichever of x and y makes the derivative cheapest. */

/* y = s * x; dx += s * dy */
static void scale_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad, s = r->f[0];
    size_t n = r->out->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        dx[i] += s * dy[i];
}

tg_tensor *tg_scale(tg_tape *tp, tg_tensor *x, float s)
{
    check_inputs("scale", x);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        y[i] = s * xd[i];
    tg_record *r = record(tp, "scale", scale_backward, out, 1, &x);
    if (r)
        r->f[0] = s;
    return out;
}

/* y = x + s; dx += dy */
static void add_scalar_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    size_t n = r->out->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        dx[i] += dy[i];
}

tg_tensor *tg_add_scalar(tg_tape *tp, tg_tensor *x, float s)
{
    check_inputs("add_scalar", x);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        y[i] = xd[i] + s;
    record(tp, "add_scalar", add_scalar_backward, out, 1, &x);
    return out;
}

/* clang-format off */
/* y = e^x; dx += dy * y */
TG_UNARY_OP(exp, vexpf(x_), g_ * y_)

/* y = ln x; dx += dy / x */
TG_UNARY_OP(log, logf(x_), g_ / x_)

/* y = 1 / (1 + e^-x), without overflow for either sign (vmath.h);
 * dx += dy * y * (1 - y) */
TG_UNARY_OP(sigmoid, vsigmoidf(x_), g_ * y_ * (1.0f - y_))

/* y = max(x, 0); dx += dy where x > 0. NaN stays NaN and passes its
 * gradient (as PyTorch): x < 0 ? 0 : x, not x > 0 ? x : 0, which made a NaN
 * pre-activation a silent 0. */
TG_UNARY_OP(relu, x_ < 0.0f ? 0.0f : x_, y_ <= 0.0f ? 0.0f : g_)

/* y = tanh x; dx += dy * (1 - y^2) */
TG_UNARY_OP(tanh, tanhf(x_), g_ * (1.0f - y_ * y_))

/* y = log(1 + e^x) = max(x, 0) + log1p(e^-|x|), which neither overflows
 * nor loses precision; dx += dy * sigmoid(x) */
TG_UNARY_OP(softplus, (x_ > 0.0f ? x_ : 0.0f) + vlog1p_unit(vexpf(-fabsf(x_))),
            g_ * vsigmoidf(x_))

/* y = x^2; dx += 2 x dy */
TG_UNARY_OP(square, x_ * x_, 2.0f * x_ * g_)
/* clang-format on */

/* y = min(max(x, lo), hi); dx += dy where lo < x < hi (so 0 at the bounds
 * themselves, as PyTorch) */
static void clamp_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *x = r->in[0]->data, *dy = r->out->grad;
    const float lo = r->f[0], hi = r->f[1];
    size_t n = r->out->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++) {
        float g = dy[i];
        dx[i] += x[i] > lo && x[i] < hi ? g : 0.0f;
    }
}

tg_tensor *tg_clamp(tg_tape *tp, tg_tensor *x, float lo, float hi)
{
    check_inputs("clamp", x);
    if (!(lo <= hi))
        tg_fatal("clamp", "bounds lo %g > hi %g", (double)lo, (double)hi);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size;
    TG_PARALLEL_FOR(n, 1)
    for (size_t i = 0; i < n; i++)
        y[i] = xd[i] < lo ? lo : (xd[i] > hi ? hi : xd[i]); /* NaN stays */
    tg_record *r = record(tp, "clamp", clamp_backward, out, 1, &x);
    if (r) {
        r->f[0] = lo;
        r->f[1] = hi;
    }
    return out;
}

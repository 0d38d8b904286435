/* Losses fused into single ops: each computes a per-row value in one pass
 * and its gradient in another, in numerically stable forms. */
#include "ops_check.h"
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#include <math.h>

/* logits x, targets z [R, C] -> y [R, 1],
 * y[r] = sum_c ([x > 0] - z) x + log1p(exp(-|x|))   (= -log p(z|x))
 * dx += dy * (sigmoid(x) - z),  dz += dy * -x
 * ([x > 0] - z) x is max(x, 0) - x z with one rounding fewer: for x > 0,
 * (1 - z) x, exact in 1 - z for z in [1/2, 1], where x - x z cancelled (at
 * x = 20, z = 1 - 2^-24 the term was 1.9e-6 for 1.19e-6; x = +Inf with z in
 * (0, 1) gave Inf - Inf = NaN for +Inf), as PyTorch's (1 - z) x -
 * log_sigmoid(x). For x <= 0 and for z = 0 or 1 the same bits as before.
 * The forward keeps e = exp(-|x|) for the backward, whose sigmoid is then
 * vsigmoidf's without its exp (vsigmoid_from_exp: the same bits; the exp was
 * 40% of the backward's time). */
typedef enum { BCE_ADD, BCE_SET } bce_mode;

/* One row of the gradient: dx (+)= g * (sigmoid(x) - z). */
TG_VECTOR_CLONES
static void bce_grad_row(const float *x, const float *e, const float *z,
                         float g, float *dx, int n, bce_mode mode)
{
    for (int j = 0; j < n; j++) {
        float d = g * (vsigmoid_from_exp(x[j], e[j]) - z[j]);
        dx[j] = mode == BCE_SET ? 0.0f + d : dx[j] + d;
    }
}

static void bce_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0], *z = r->in[1];
    const float *e = r->saved;
    bool fresh;
    float *dx = grad_fresh(tp, r, 0, &fresh), *dz = grad_of(tp, r->in[1]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    const float *dy = r->out->grad;
    if (dx) {
        TG_PARALLEL_FOR(rows, cols)
        for (int i = 0; i < rows; i++) {
            size_t k = (size_t)i * cols;
            bce_grad_row(&x->data[k], &e[k], &z->data[k], dy[i], &dx[k], cols,
                         fresh ? BCE_SET : BCE_ADD);
        }
    }
    if (dz) {
        TG_PARALLEL_FOR(rows, cols)
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                size_t k = (size_t)i * cols + j;
                dz[k] -= dy[i] * x->data[k];
            }
    }
}

/* One row of the loss: its terms in tiles of BCE_TILE on the stack
 * (vectorised), each tile's sum in double into eight partial sums, element j
 * into sum j % 8 in ascending j: vsum_f64's order and bits, with no
 * row-length buffer of terms in memory. e = exp(-|x|) goes to e for the
 * backward, or only to the stack when e is NULL (no gradient wanted: an
 * evaluation pass, such as vae_score's decoder passes, writes nothing). */
enum { BCE_TILE = 256 }; /* a multiple of 8 */

TG_VECTOR_CLONES
static float bce_row(const float *x, const float *z, float *e, int n)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float et[BCE_TILE], t[BCE_TILE];
    /* steps by the tile it took: j0 + BCE_TILE passed INT_MAX for a row
     * of more than INT_MAX - 255 columns */
    for (int j0 = 0, m; j0 < n; j0 += m) {
        m = n - j0 < BCE_TILE ? n - j0 : BCE_TILE;
        const float *xj = x + j0, *zj = z + j0;
        float *ej = e ? e + j0 : et;
        for (int j = 0; j < m; j++) {
            ej[j] = vexpf(-fabsf(xj[j]));
            t[j] = ((xj[j] > 0.0f ? 1.0f : 0.0f) - zj[j]) * xj[j] +
                   vlog1p_unit(ej[j]);
        }
        int j = 0;
        for (; j + 8 <= m; j += 8)
            for (int l = 0; l < 8; l++)
                s[l] += t[j + l];
        for (int l = 0; j + l < m; l++)
            s[l] += t[j + l];
    }
    return (float)(((s[0] + s[4]) + (s[2] + s[6])) +
                   ((s[1] + s[5]) + (s[3] + s[7])));
}

tg_tensor *tg_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                              tg_tensor *targets)
{
    check_inputs("bce_with_logits", logits, targets);
    check_same_shape("bce_with_logits", logits, targets);
    int rows = tg_tensor_rows(logits), cols = tg_tensor_cols(logits);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    bool grad = tg_tape_recording(tp) &&
                (logits->requires_grad || targets->requires_grad);
    float *e = grad ? tg_tape_alloc(tp, logits->size * sizeof(float)) : NULL;
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t k = (size_t)i * cols;
        y->data[i] = bce_row(&logits->data[k], &targets->data[k],
                             e ? &e[k] : NULL, cols);
    }
    tg_record *r = record(tp, "bce_with_logits", bce_backward, y, 2,
                          (tg_tensor *[]){logits, targets});
    if (r)
        r->saved = e;
    return y;
}

/* logits x [R, C], labels -> y [R, 1], y[r] = (m - x[r, label]) + ls with
 * m the row max and ls = log sum_j exp(x[r, j] - m): m - x[r, label] first
 * (in double), as log_softmax's (x - m) - ls, so a row of logits beyond
 * 2^53 keeps its O(1) loss (m + ls would round ls away).
 * dx += dy * (softmax(x) - onehot), softmax(x)_j = exp((x_j - m) - ls):
 * m and ls are saved apart, as the softmax family does (ops_softmax.c),
 * since m + ls rounded to float would put up to half an ulp of the logits
 * into every probability. The labels are copied to the arena too. */
typedef struct xent_saved {
    int *labels;
    float *m, *ls;
} xent_saved;

/* The labels of a backward, kept on the arena (the caller's array may
 * change before it runs). */
static int *labels_copy(tg_tape *tp, const int *labels, int rows)
{
    int *copy = tg_tape_alloc(tp, (size_t)rows * sizeof *copy);
    for (int i = 0; i < rows; i++) /* labels may be NULL when rows is 0 */
        copy[i] = labels[i];
    return copy;
}

static void xent_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    const xent_saved *s = r->saved;
    const int *labels = s->labels;
    float *dx = grad_of(tp, r->in[0]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    for (int i = 0; i < rows; i++) {
        const float *xi = &x->data[(size_t)i * cols];
        float g = r->out->grad[i], m = s->m[i], ls = s->ls[i];
        for (int j = 0; j < cols; j++)
            dx[(size_t)i * cols + j] += g * expf((xi[j] - m) - ls);
        dx[(size_t)i * cols + labels[i]] -= g;
    }
}

/* Aborts unless x is [R, C] and labels holds R classes in 0..C-1. x must
 * be 2-D: labels are a bare array of R ints, so a [B, C, H, W] map with B
 * labels (PyTorch's dim-1 classes) read past the array's end (an ASan stack
 * overflow); as [R, C] the op and the labels' count are the caller's
 * explicit choice. */
static void check_labels(const char *op, const tg_tensor *x, const int *labels)
{
    check_inputs(op, x);
    char sx[64];
    if (x->ndim != 2)
        tg_fatal(op,
                 "logits %s must be [R, C] (classes on the last axis, one "
                 "label per row): reshape a [B, C, H, W] map to [B*H*W, C] "
                 "with its labels in that order",
                 tg_shape_str(x, sx));
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    if (!labels && rows > 0)
        tg_fatal(op, "labels is NULL");
    for (int i = 0; i < rows; i++)
        if (labels[i] < 0 || labels[i] >= cols)
            tg_fatal(op, "label %d of row %d outside 0..%d", labels[i], i,
                     cols - 1);
}

tg_tensor *tg_softmax_xent(tg_tape *tp, tg_tensor *logits, const int *labels)
{
    check_labels("softmax_xent", logits, labels);
    int rows = tg_tensor_rows(logits), cols = tg_tensor_cols(logits);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    xent_saved *s = tg_tape_alloc(tp, sizeof *s);
    s->m = tg_tape_alloc(tp, 2 * (size_t)rows * sizeof(float));
    s->ls = s->m + rows;
    for (int i = 0; i < rows; i++) {
        const float *x = &logits->data[(size_t)i * cols];
        float max = x[0];
        for (int j = 1; j < cols; j++)
            max = fmaxf(max, x[j]);
        double sum = 0.0;
        for (int j = 0; j < cols; j++)
            sum += exp((double)(x[j] - max));
        double ls = log(sum);
        y->data[i] = (float)(((double)max - x[labels[i]]) + ls);
        s->m[i] = max;
        s->ls[i] = (float)ls;
    }
    tg_record *r = record(tp, "softmax_xent", xent_backward, y, 1, &logits);
    if (r) {
        s->labels = labels_copy(tp, labels, rows);
        r->saved = s;
    }
    return y;
}

/* logp [R, C], labels -> y [R, 1], y[r] = -logp[r, label[r]];
 * dlogp[r, label[r]] -= dy[r]. The labels are copied to the arena. */
static void nll_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    const int *labels = r->saved;
    float *dx = grad_of(tp, r->in[0]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    for (int i = 0; i < rows; i++)
        dx[(size_t)i * cols + labels[i]] -= r->out->grad[i];
}

tg_tensor *tg_nll(tg_tape *tp, tg_tensor *logp, const int *labels)
{
    check_labels("nll", logp, labels);
    int rows = tg_tensor_rows(logp), cols = tg_tensor_cols(logp);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    for (int i = 0; i < rows; i++)
        y->data[i] = -logp->data[(size_t)i * cols + labels[i]];
    tg_record *r = record(tp, "nll", nll_backward, y, 1, &logp);
    if (r)
        r->saved = labels_copy(tp, labels, rows);
    return y;
}

/* d^2 (1/2! + d/3! + ... + d^7/9!): e^d - 1 - d by its Taylor series,
 * truncation below 3e-9 relative for |d| < 0.5. */
static inline float exp_m1_minus_series(float d)
{
    float p = 1.0f / 362880.0f;
    p = p * d + 1.0f / 40320.0f;
    p = p * d + 1.0f / 5040.0f;
    p = p * d + 1.0f / 720.0f;
    p = p * d + 1.0f / 120.0f;
    p = p * d + 1.0f / 24.0f;
    p = p * d + 1.0f / 6.0f;
    p = p * d + 0.5f;
    return d * d * p;
}

/* e^d - 1 - d (>= 0), the Gaussian KLs' term in a log-variance difference
 * d, without the cancellation of the written form near d = 0: there it is
 * about d^2 / 2, and 1 + d - e^d in float keeps none of its digits once |d|
 * is below ~1e-4 (at d = 1e-3 it is off by 5%). For |d| < 0.5 the series;
 * beyond, the direct form, where the result is above 0.1 and rounding costs
 * a few ulp. NaN takes the direct form. Both are computed and one chosen,
 * so that a loop of it vectorises. */
static inline float exp_m1_minus(float d)
{
    float series = exp_m1_minus_series(d), direct = vexpf(d) - 1.0f - d;
    return fabsf(d) < 0.5f ? series : direct;
}

/* e^d - 1 without the cancellation near d = 0 (d + the series above), as
 * libm's expm1f; vectorises. */
static inline float exp_m1(float d)
{
    float series = d + exp_m1_minus_series(d), direct = vexpf(d) - 1.0f;
    return fabsf(d) < 0.5f ? series : direct;
}

/* One row's KL terms m^2 + (e^v - 1 - v) in tiles on the stack
 * (vectorised), summed in double in vsum_f64's order. */
enum { KL_TILE = 256 };

TG_VECTOR_CLONES
static double kl_row(const float *m, const float *v, int n)
{
    double acc = 0.0;
    float t[KL_TILE];
    for (int j0 = 0, len; j0 < n; j0 += len) { /* as bce_row */
        len = n - j0 < KL_TILE ? n - j0 : KL_TILE;
        for (int j = 0; j < len; j++)
            t[j] = m[j0 + j] * m[j0 + j] + exp_m1_minus(v[j0 + j]);
        acc += vsum_f64(t, len);
    }
    return acc;
}

/* One row of the KL's gradient: dm += g m, dv += g/2 (e^v - 1) (either may
 * be NULL). */
TG_VECTOR_CLONES
static void kl_grad_row(const float *m, const float *v, float g, float *dm,
                        float *dv, int n)
{
    if (dm)
        for (int j = 0; j < n; j++)
            dm[j] += g * m[j];
    if (dv)
        for (int j = 0; j < n; j++)
            dv[j] += g * 0.5f * exp_m1(v[j]);
}

/* mean m, logvar v [R, C] -> y [R, 1],
 * y[r] = -0.5 * sum_c (1 + v - m^2 - e^v)   (KL of N(m, e^v) from N(0, 1))
 *      = 0.5 * sum_c (m^2 + (e^v - 1 - v)), summed in double
 * dm += dy * m,  dv += dy * 0.5 * (e^v - 1), as expm1 (exact near v = 0) */
static void kl_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *m = r->in[0], *v = r->in[1];
    float *dm = grad_of(tp, r->in[0]), *dv = grad_of(tp, r->in[1]);
    int rows = tg_tensor_rows(m), cols = tg_tensor_cols(m);
    TG_PARALLEL_FOR(rows, 2 * cols)
    for (int i = 0; i < rows; i++) {
        size_t k = (size_t)i * cols;
        kl_grad_row(m->data + k, v->data + k, r->out->grad[i],
                    dm ? dm + k : NULL, dv ? dv + k : NULL, cols);
    }
}

tg_tensor *tg_kl_normal(tg_tape *tp, tg_tensor *mean, tg_tensor *logvar)
{
    check_inputs("kl_normal", mean, logvar);
    check_same_shape("kl_normal", mean, logvar);
    int rows = tg_tensor_rows(mean), cols = tg_tensor_cols(mean);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    TG_PARALLEL_FOR(rows, 2 * cols)
    for (int i = 0; i < rows; i++) {
        size_t k = (size_t)i * cols;
        y->data[i] =
            (float)(0.5 * kl_row(mean->data + k, logvar->data + k, cols));
    }
    record(tp, "kl_normal", kl_backward, y, 2, (tg_tensor *[]){mean, logvar});
    return y;
}

/* probabilities p, targets z [R, C] -> y [R, 1],
 * y[r] = -sum_c z log(q) + (1 - z) log(1 - q),  q = clamp(p, eps, 1 - eps)
 * with eps = TG_BCE_EPS, so that a p of exactly 0 or 1 gives a large finite
 * loss, not Inf. The gradient is that of the clamped function:
 * dp += dy * (q - z) / (q (1 - q)) where eps < p < 1 - eps, and 0 at or
 * beyond a bound; dz += dy * (log(1 - q) - log(q)). */
static void bce_prob_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *p = r->in[0], *z = r->in[1];
    float *dp = grad_of(tp, r->in[0]), *dz = grad_of(tp, r->in[1]);
    const float *pd = p->data, *zd = z->data, *dy = r->out->grad;
    const float lo = TG_BCE_EPS, hi = 1.0f - TG_BCE_EPS;
    int rows = tg_tensor_rows(p), cols = tg_tensor_cols(p);
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            float v = pd[k], q = v < lo ? lo : (v > hi ? hi : v);
            if (dp && v > lo && v < hi)
                dp[k] += dy[i] * (q - zd[k]) / (q * (1.0f - q));
            if (dz)
                dz[k] += dy[i] * (log1pf(-q) - logf(q));
        }
}

tg_tensor *tg_bce(tg_tape *tp, tg_tensor *probs, tg_tensor *targets)
{
    check_inputs("bce", probs, targets);
    check_same_shape("bce", probs, targets);
    int rows = tg_tensor_rows(probs), cols = tg_tensor_cols(probs);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    const float *pd = probs->data, *zd = targets->data;
    const float lo = TG_BCE_EPS, hi = 1.0f - TG_BCE_EPS;
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        double acc = 0.0;
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            float v = pd[k], q = v < lo ? lo : (v > hi ? hi : v);
            acc -= zd[k] * logf(q) + (1.0f - zd[k]) * log1pf(-q);
        }
        y->data[i] = (float)acc;
    }
    record(tp, "bce", bce_prob_backward, y, 2, (tg_tensor *[]){probs, targets});
    return y;
}

/* q = N(mq, e^vq), p = N(mp, e^vp), all [R, C]; or mp, vp one row [C] /
 * [1, C] shared by every row (a learned prior). -> y [R, 1],
 * y[r] = 0.5 sum_c (vp - vq + e^(vq - vp) + (mq - mp)^2 e^-vp - 1)
 *      = 0.5 sum_c (exp_m1_minus(vq - vp) + (mq - mp)^2 e^-vp)
 * (= KL(q || p); e^(vq - vp) rather than e^vq / e^vp, which could overflow;
 * e^d - 1 - d as exp_m1_minus, exact near d = 0, and e^d - 1 as expm1)
 * dmq += dy (mq - mp) e^-vp            dmp -= the same
 * dvq += dy 0.5 (e^(vq - vp) - 1)      dvp += dy 0.5 (1 - e^(vq - vp)
 *                                                     - (mq - mp)^2 e^-vp)
 * One thread, rows in order (a shared prior sums over the rows). r->i[0]:
 * the prior's row stride (C, or 0 when shared).
 * (mq - mp)^2 e^-vp is taken as written where neither factor can overflow
 * or lose digits to a subnormal (kl_direct_ok); elsewhere as (diff h)^2 with
 * h = e^(-vp/2), and 0 when diff is 0: the direct form made 0 * Inf = NaN
 * for q = p = N(0, e^-100) (KL 0), Inf for a mean gap of 1e-20 at vp = -100
 * (KL 1.3e3), and 0 * Inf or Inf for large gaps at large vp. */
static inline bool kl_direct_ok(float diff, float vp)
{
    float a = fabsf(diff);
    return a >= 0x1p-63f && a <= 0x1p63f && fabsf(vp) <= 87.0f;
}

/* diff e^-vp and diff^2 e^-vp through h = e^(-vp/2), for the inputs
 * kl_direct_ok refuses; each 0 when diff is 0 (a NaN vp or diff gives
 * NaN). */
static inline float kl_gap_scaled(float diff, float vp, float *sq)
{
    float h = vexpf(-0.5f * vp), w = diff * h;
    bool zero = diff == 0.0f && h == h;
    *sq = zero ? 0.0f : w * w;
    return zero ? 0.0f : w * h;
}

static void kl_normals_backward(tg_tape *tp, tg_record *r)
{
    const float *mq = r->in[0]->data, *vq = r->in[1]->data;
    const float *mp = r->in[2]->data, *vp = r->in[3]->data;
    float *dmq = grad_of(tp, r->in[0]), *dvq = grad_of(tp, r->in[1]);
    float *dmp = grad_of(tp, r->in[2]), *dvp = grad_of(tp, r->in[3]);
    const float *dy = r->out->grad;
    int rows = tg_tensor_rows(r->in[0]), cols = tg_tensor_cols(r->in[0]);
    int stride = r->i[0];
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j, kp = (size_t)i * stride + j;
            float diff = mq[k] - mp[kp], inv_vp = vexpf(-vp[kp]);
            float ratio_m1 = expm1f(vq[k] - vp[kp]), g = dy[i];
            float lin, sq;
            if (kl_direct_ok(diff, vp[kp])) {
                lin = g * diff * inv_vp;
                sq = diff * diff * inv_vp;
            } else {
                lin = g * kl_gap_scaled(diff, vp[kp], &sq);
            }
            if (dmq)
                dmq[k] += lin;
            if (dmp)
                dmp[kp] -= lin;
            if (dvq)
                dvq[k] += g * 0.5f * ratio_m1;
            if (dvp)
                dvp[kp] -= g * 0.5f * (ratio_m1 + sq);
        }
}

tg_tensor *tg_kl_normals(tg_tape *tp, tg_tensor *mean_q, tg_tensor *logvar_q,
                         tg_tensor *mean_p, tg_tensor *logvar_p)
{
    const char *op = "kl_normals";
    check_inputs(op, mean_q, logvar_q, mean_p, logvar_p);
    check_same_shape(op, mean_q, logvar_q);
    check_same_shape(op, mean_p, logvar_p);
    int rows = tg_tensor_rows(mean_q), cols = tg_tensor_cols(mean_q);
    bool same = mean_p->ndim == mean_q->ndim;
    for (int d = 0; same && d < mean_q->ndim; d++)
        same = mean_p->shape[d] == mean_q->shape[d];
    if (!same)
        check_row(op, mean_p, "mean_p (not q's shape, so a shared row)", cols);
    int stride = same ? cols : 0;
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    const float *mq = mean_q->data, *vq = logvar_q->data;
    const float *mp = mean_p->data, *vp = logvar_p->data;
    for (int i = 0; i < rows; i++) {
        double acc = 0.0;
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j, kp = (size_t)i * stride + j;
            float diff = mq[k] - mp[kp], sq;
            if (kl_direct_ok(diff, vp[kp]))
                sq = diff * diff * vexpf(-vp[kp]);
            else
                kl_gap_scaled(diff, vp[kp], &sq);
            acc += (double)exp_m1_minus(vq[k] - vp[kp]) + (double)sq;
        }
        y->data[i] = (float)(0.5 * acc);
    }
    tg_record *r = record(tp, op, kl_normals_backward, y, 4,
                          (tg_tensor *[]){mean_q, logvar_q, mean_p, logvar_p});
    if (r)
        r->i[0] = stride;
    return y;
}

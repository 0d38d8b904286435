/* Losses fused into single ops: each computes a per-row value in one pass
 * and its gradient in another, in numerically stable forms. */
#include "ops_check.h"
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#include <math.h>

/* logits x, targets z [R, C] -> y [R, 1],
 * y[r] = sum_c max(x,0) - x*z + log1p(exp(-|x|))   (= -log p(z|x))
 * dx += dy * (sigmoid(x) - z),  dz += dy * -x */
/* One row of the gradient: dx += g * (sigmoid(x) - z). */
TG_VECTOR_CLONES
static void bce_grad_row(const float *x, const float *z, float g, float *dx,
                         int n)
{
    for (int j = 0; j < n; j++)
        dx[j] += g * (vsigmoidf(x[j]) - z[j]);
}

static void bce_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0], *z = r->in[1];
    float *dx = grad_of(tp, r->in[0]), *dz = grad_of(tp, r->in[1]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    const float *dy = r->out->grad;
    if (dx) {
        TG_PARALLEL_FOR(rows, cols)
        for (int i = 0; i < rows; i++) {
            size_t k = (size_t)i * cols;
            bce_grad_row(&x->data[k], &z->data[k], dy[i], &dx[k], cols);
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

/* One row of the loss: the terms into t (vectorised), then their sum in
 * order, in double. */
TG_VECTOR_CLONES
static float bce_row(const float *x, const float *z, float *t, int n)
{
    for (int j = 0; j < n; j++)
        t[j] = (x[j] > 0.0f ? x[j] : 0.0f) - x[j] * z[j] +
               vlog1pf(vexpf(-fabsf(x[j])));
    double acc = 0.0;
    for (int j = 0; j < n; j++)
        acc += t[j];
    return (float)acc;
}

tg_tensor *tg_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                              tg_tensor *targets)
{
    check_inputs("bce_with_logits", logits, targets);
    check_same_shape("bce_with_logits", logits, targets);
    int rows = tg_tensor_rows(logits), cols = tg_tensor_cols(logits);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    float *term = tg_tape_alloc(tp, logits->size * sizeof(float));
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t k = (size_t)i * cols;
        y->data[i] =
            bce_row(&logits->data[k], &targets->data[k], &term[k], cols);
    }
    record(tp, "bce_with_logits", bce_backward, y, 2,
           (tg_tensor *[]){logits, targets});
    return y;
}

/* logits x [R, C], labels -> y [R, 1], y[r] = logsumexp(x[r]) - x[r, label],
 * with the row max subtracted before exp. dx += dy * (softmax(x) - onehot).
 * The labels are copied to the arena for backward. */
static void xent_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    const int *labels = r->saved;
    float *dx = grad_of(tp, r->in[0]);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    for (int i = 0; i < rows; i++) {
        const float *xi = &x->data[(size_t)i * cols];
        float g = r->out->grad[i];
        /* y = lse - x[label], so lse = y + x[label]; p = exp(x - lse). */
        float lse = r->out->data[i] + xi[labels[i]];
        for (int j = 0; j < cols; j++)
            dx[(size_t)i * cols + j] += g * expf(xi[j] - lse);
        dx[(size_t)i * cols + labels[i]] -= g;
    }
}

tg_tensor *tg_softmax_xent(tg_tape *tp, tg_tensor *logits, const int *labels)
{
    check_inputs("softmax_xent", logits);
    if (!labels && tg_tensor_rows(logits) > 0)
        tg_fatal("softmax_xent", "labels is NULL");
    int rows = tg_tensor_rows(logits), cols = tg_tensor_cols(logits);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    for (int i = 0; i < rows; i++) {
        if (labels[i] < 0 || labels[i] >= cols)
            tg_fatal("softmax_xent", "label %d of row %d outside 0..%d",
                     labels[i], i, cols - 1);
        const float *x = &logits->data[(size_t)i * cols];
        float max = x[0];
        for (int j = 1; j < cols; j++)
            max = fmaxf(max, x[j]);
        double sum = 0.0;
        for (int j = 0; j < cols; j++)
            sum += exp((double)(x[j] - max));
        y->data[i] = (float)(max + log(sum) - x[labels[i]]);
    }
    tg_record *r = record(tp, "softmax_xent", xent_backward, y, 1, &logits);
    if (r) {
        int *saved = tg_tape_alloc(tp, (size_t)rows * sizeof *saved);
        for (int i = 0; i < rows; i++)
            saved[i] = labels[i];
        r->saved = saved;
    }
    return y;
}

/* mean m, logvar v [R, C] -> y [R, 1],
 * y[r] = -0.5 * sum_c (1 + v - m^2 - e^v)   (KL of N(m, e^v) from N(0, 1))
 * dm += dy * m,  dv += dy * 0.5 * (e^v - 1) */
static void kl_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *m = r->in[0], *v = r->in[1];
    float *dm = grad_of(tp, r->in[0]), *dv = grad_of(tp, r->in[1]);
    int rows = tg_tensor_rows(m), cols = tg_tensor_cols(m);
    for (int i = 0; i < rows; i++) {
        float g = r->out->grad[i];
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            if (dm)
                dm[k] += g * m->data[k];
            if (dv)
                dv[k] += g * 0.5f * (vexpf(v->data[k]) - 1.0f);
        }
    }
}

tg_tensor *tg_kl_normal(tg_tape *tp, tg_tensor *mean, tg_tensor *logvar)
{
    check_inputs("kl_normal", mean, logvar);
    check_same_shape("kl_normal", mean, logvar);
    int rows = tg_tensor_rows(mean), cols = tg_tensor_cols(mean);
    tg_tensor *y = out_tensor(tp, 2, (int[]){rows, 1});
    for (int i = 0; i < rows; i++) {
        float acc = 0.0f;
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            float m = mean->data[k], v = logvar->data[k];
            acc += 1.0f + v - m * m - vexpf(v);
        }
        y->data[i] = -0.5f * acc;
    }
    record(tp, "kl_normal", kl_backward, y, 2, (tg_tensor *[]){mean, logvar});
    return y;
}

/* probabilities p, targets z [R, C] -> y [R, 1],
 * y[r] = -sum_c z log(q) + (1 - z) log(1 - q),  q = clamp(p, eps, 1 - eps)
 * with eps = TG_BCE_EPS, so that a p of exactly 0 or 1 gives a large finite
 * loss, not Inf. The gradient is that of the clamped function:
 * dp += dy * (q - z) / (q (1 - q)) where eps < p < 1 - eps, and 0 where p
 * was clamped (as tg_clamp); dz += dy * (log(1 - q) - log(q)). */
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
 * (= KL(q || p); e^(vq - vp) rather than e^vq / e^vp, which could overflow)
 * dmq += dy (mq - mp) e^-vp            dmp -= the same
 * dvq += dy 0.5 (e^(vq - vp) - 1)      dvp += dy 0.5 (1 - e^(vq - vp)
 *                                                     - (mq - mp)^2 e^-vp)
 * One thread, rows in order (a shared prior sums over the rows). r->i[0]:
 * the prior's row stride (C, or 0 when shared). */
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
            float ratio = vexpf(vq[k] - vp[kp]), g = dy[i];
            if (dmq)
                dmq[k] += g * diff * inv_vp;
            if (dmp)
                dmp[kp] -= g * diff * inv_vp;
            if (dvq)
                dvq[k] += g * 0.5f * (ratio - 1.0f);
            if (dvp)
                dvp[kp] += g * 0.5f * (1.0f - ratio - diff * diff * inv_vp);
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
            float diff = mq[k] - mp[kp];
            acc += vp[kp] - vq[k] + vexpf(vq[k] - vp[kp]) +
                   diff * diff * vexpf(-vp[kp]) - 1.0f;
        }
        y->data[i] = (float)(0.5 * acc);
    }
    tg_record *r = record(tp, op, kl_normals_backward, y, 4,
                          (tg_tensor *[]){mean_q, logvar_q, mean_p, logvar_p});
    if (r)
        r->i[0] = stride;
    return y;
}

/* Normalisation and masking: layer_norm over the last axis, group_norm over
 * channel groups of each example, and the masked scale that dropout
 * (nn/dropout.c) is built on. */
#include "ops_check.h"
#include "parallel.h"
#include "tape.h"

#include <math.h>
#include <string.h>

/* x [R, C] (leading dims flattened), gamma, beta [C] (either may be NULL:
 * scale 1, shift 0) -> y [R, C]:
 *   mean[r] = (1/C) sum_j x[r, j],  var[r] = (1/C) sum_j (x[r, j] - mean)^2
 *   rstd[r] = 1 / sqrt(var[r] + eps),  xhat = (x - mean) * rstd
 *   y = xhat * gamma + beta
 * The variance is the biased one (divide by C), as PyTorch's LayerNorm;
 * both moments are two-pass sums in double, and x - mean is taken in
 * double too: a row like 1000 + 0.01 u has a mean that float rounds by
 * 3e-5, half a percent of its spread. Saved for backward: mean (double)
 * and rstd per row. Backward, with g = dy * gamma:
 *   dx     += rstd * (g - mean_j(g) - xhat * mean_j(g * xhat))
 *   dgamma += sum_r dy * xhat,   dbeta += sum_r dy
 * dx rows run in parallel; dgamma and dbeta sum the rows in order on one
 * thread. r->i[0], r->i[1]: gamma, beta present (then in[1], in[1 + i[0]]). */
typedef struct ln_saved {
    double *mean;
    float *rstd;
} ln_saved;

static inline float ln_xhat(float x, double mean, float rstd)
{
    return (float)(((double)x - mean) * rstd);
}

static void layer_norm_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = r->in[0];
    tg_tensor *gamma = r->i[0] ? r->in[1] : NULL;
    tg_tensor *beta = r->i[1] ? r->in[1 + r->i[0]] : NULL;
    const ln_saved *s = r->saved;
    const double *mean = s->mean;
    const float *rstd = s->rstd;
    const float *xd = x->data, *dy = r->out->grad;
    const float *gd = gamma ? gamma->data : NULL;
    float *dx = grad_of(tp, x);
    float *dgamma = gamma ? grad_of(tp, gamma) : NULL;
    float *dbeta = beta ? grad_of(tp, beta) : NULL;
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    if (dx) {
        TG_PARALLEL_FOR(rows, cols)
        for (int i = 0; i < rows; i++) {
            size_t o = (size_t)i * cols;
            double sum_g = 0.0, sum_gx = 0.0;
            for (int j = 0; j < cols; j++) {
                float g = dy[o + j] * (gd ? gd[j] : 1.0f);
                float xhat = ln_xhat(xd[o + j], mean[i], rstd[i]);
                sum_g += g;
                sum_gx += (double)g * xhat;
            }
            float mg = (float)(sum_g / cols), mgx = (float)(sum_gx / cols);
            for (int j = 0; j < cols; j++) {
                float g = dy[o + j] * (gd ? gd[j] : 1.0f);
                float xhat = ln_xhat(xd[o + j], mean[i], rstd[i]);
                dx[o + j] += rstd[i] * (g - mg - xhat * mgx);
            }
        }
    }
    if (!dgamma && !dbeta)
        return;
    /* sums down the rows in double (a float running sum drifts by about
     * rows ulp), added once */
    double *sg = tg_tape_alloc(tp, 2 * (size_t)cols * sizeof *sg),
           *sb = sg + cols;
    memset(sg, 0, 2 * (size_t)cols * sizeof *sg);
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        for (int j = 0; j < cols; j++) {
            sg[j] += dy[o + j] * ln_xhat(xd[o + j], mean[i], rstd[i]);
            sb[j] += dy[o + j];
        }
    }
    for (int j = 0; j < cols; j++) {
        if (dgamma)
            dgamma[j] += (float)sg[j];
        if (dbeta)
            dbeta[j] += (float)sb[j];
    }
}

tg_tensor *tg_layer_norm(tg_tape *tp, tg_tensor *x, tg_tensor *gamma,
                         tg_tensor *beta, float eps)
{
    check_inputs("layer_norm", x);
    int rows = tg_tensor_rows(x), cols = tg_tensor_cols(x);
    if (gamma)
        check_row("layer_norm", gamma, "gamma", cols);
    if (beta)
        check_row("layer_norm", beta, "beta", cols);
    if (!(eps >= 0.0f) || !isfinite(eps))
        tg_fatal("layer_norm", "eps %g must be finite and >= 0", (double)eps);
    tg_tensor *y = out_like(tp, x);
    ln_saved *s = tg_tape_alloc(tp, sizeof *s);
    s->mean = tg_tape_alloc(tp, (size_t)rows * sizeof(double));
    s->rstd = tg_tape_alloc(tp, (size_t)rows * sizeof(float));
    const float *xd = x->data;
    const float *gd = gamma ? gamma->data : NULL;
    const float *bd = beta ? beta->data : NULL;
    float *yd = y->data, *rstd = s->rstd;
    double *mean = s->mean;
    TG_PARALLEL_FOR(rows, cols)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        double m = 0.0, v = 0.0;
        for (int j = 0; j < cols; j++)
            m += xd[o + j];
        m /= cols;
        for (int j = 0; j < cols; j++)
            v += (xd[o + j] - m) * (xd[o + j] - m);
        v /= cols;
        mean[i] = m;
        rstd[i] = (float)(1.0 / sqrt(v + (double)eps));
        for (int j = 0; j < cols; j++) {
            float xhat = ln_xhat(xd[o + j], m, rstd[i]);
            yd[o + j] = xhat * (gd ? gd[j] : 1.0f) + (bd ? bd[j] : 0.0f);
        }
    }
    tg_tensor *in[3] = {x};
    int n_in = 1;
    if (gamma)
        in[n_in++] = gamma;
    if (beta)
        in[n_in++] = beta;
    tg_record *r = record(tp, "layer_norm", layer_norm_backward, y, n_in, in);
    if (r) {
        r->i[0] = gamma != NULL;
        r->i[1] = beta != NULL;
        r->saved = s;
    }
    return y;
}

/* x [B, C, ...] (2-4 dims: [B, C], [B, C, L], [B, C, H, W]; S = the
 * product of the dims after C, 1 for [B, C]), G groups dividing C, gamma,
 * beta [C] (either may be NULL) -> y of x's shape, as PyTorch's
 * group_norm. Group (b, g) is the n = (C/G)·S consecutive floats of
 * example b's channels g·C/G .. (g+1)·C/G - 1, normalised as one
 * layer_norm row (same two-pass double sums, x - mean in double, biased
 * variance), then scaled per channel:
 *   y[b, c, s] = xhat[b, c, s] * gamma[c] + beta[c]
 * Each example alone: no batch statistics. Saved for backward: mean
 * (double) and rstd per group, B·G of each. Backward, with
 * g = dy * gamma[c], over each group:
 *   dx        += rstd * (g - mean_n(g) - xhat * mean_n(g * xhat))
 *   dgamma[c] += sum_{b,s} dy * xhat,   dbeta[c] += sum_{b,s} dy
 * Groups run in parallel (forward, dx) and so do channels (dgamma and
 * dbeta, each summed over b then s in order, in double): the same bits on
 * any thread count, and G = 1 on [B, C] gives layer_norm's bits.
 * r->i[0], r->i[1]: gamma, beta present (as layer_norm); r->i[2]: G. */
static int gn_spatial(const tg_tensor *x)
{
    int S = 1;
    for (int d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    return S;
}

static void group_norm_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = r->in[0];
    tg_tensor *gamma = r->i[0] ? r->in[1] : NULL;
    tg_tensor *beta = r->i[1] ? r->in[1 + r->i[0]] : NULL;
    const ln_saved *s = r->saved;
    const double *mean = s->mean;
    const float *rstd = s->rstd;
    const float *xd = x->data, *dy = r->out->grad;
    const float *gd = gamma ? gamma->data : NULL;
    float *dx = grad_of(tp, x);
    float *dgamma = gamma ? grad_of(tp, gamma) : NULL;
    float *dbeta = beta ? grad_of(tp, beta) : NULL;
    int B = x->shape[0], C = x->shape[1], G = r->i[2], S = gn_spatial(x);
    int cpg = C / G, groups = B * G;
    size_t n = (size_t)cpg * S;
    if (dx) {
        TG_PARALLEL_FOR(groups, n)
        for (int i = 0; i < groups; i++) {
            size_t o = (size_t)i * n;
            const int c0 = (i % G) * cpg;
            double sum_g = 0.0, sum_gx = 0.0;
            for (int c = 0; c < cpg; c++) {
                float gm = gd ? gd[c0 + c] : 1.0f;
                for (int k = 0; k < S; k++) {
                    size_t e = o + (size_t)c * S + k;
                    float g = dy[e] * gm;
                    float xhat = ln_xhat(xd[e], mean[i], rstd[i]);
                    sum_g += g;
                    sum_gx += (double)g * xhat;
                }
            }
            float mg = (float)(sum_g / n), mgx = (float)(sum_gx / n);
            for (int c = 0; c < cpg; c++) {
                float gm = gd ? gd[c0 + c] : 1.0f;
                for (int k = 0; k < S; k++) {
                    size_t e = o + (size_t)c * S + k;
                    float g = dy[e] * gm;
                    float xhat = ln_xhat(xd[e], mean[i], rstd[i]);
                    dx[e] += rstd[i] * (g - mg - xhat * mgx);
                }
            }
        }
    }
    if (!dgamma && !dbeta)
        return;
    TG_PARALLEL_FOR(C, (size_t)B * S)
    for (int c = 0; c < C; c++) {
        double sg = 0.0, sb = 0.0;
        for (int b = 0; b < B; b++) {
            int i = b * G + c / cpg;
            size_t o = ((size_t)b * C + c) * S;
            for (int k = 0; k < S; k++) {
                sg += dy[o + k] * ln_xhat(xd[o + k], mean[i], rstd[i]);
                sb += dy[o + k];
            }
        }
        if (dgamma)
            dgamma[c] += (float)sg;
        if (dbeta)
            dbeta[c] += (float)sb;
    }
}

tg_tensor *tg_group_norm(tg_tape *tp, tg_tensor *x, int groups,
                         tg_tensor *gamma, tg_tensor *beta, float eps)
{
    check_inputs("group_norm", x);
    char sx[64];
    if (x->ndim < 2)
        tg_fatal("group_norm", "needs x [B, C, ...], got %s",
                 tg_shape_str(x, sx));
    int B = x->shape[0], C = x->shape[1], S = gn_spatial(x);
    if (groups < 1 || C % groups != 0)
        tg_fatal("group_norm",
                 "groups %d must be >= 1 and divide the %d channels of x %s",
                 groups, C, tg_shape_str(x, sx));
    if (gamma)
        check_row("group_norm", gamma, "gamma", C);
    if (beta)
        check_row("group_norm", beta, "beta", C);
    if (!(eps >= 0.0f) || !isfinite(eps))
        tg_fatal("group_norm", "eps %g must be finite and >= 0", (double)eps);
    int G = groups, cpg = C / G, rows = B * G;
    size_t n = (size_t)cpg * S;
    tg_tensor *y = out_like(tp, x);
    ln_saved *s = tg_tape_alloc(tp, sizeof *s);
    s->mean = tg_tape_alloc(tp, (size_t)rows * sizeof(double));
    s->rstd = tg_tape_alloc(tp, (size_t)rows * sizeof(float));
    const float *xd = x->data;
    const float *gd = gamma ? gamma->data : NULL;
    const float *bd = beta ? beta->data : NULL;
    float *yd = y->data, *rstd = s->rstd;
    double *mean = s->mean;
    TG_PARALLEL_FOR(rows, n)
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * n;
        const int c0 = (i % G) * cpg;
        double m = 0.0, v = 0.0;
        for (size_t j = 0; j < n; j++)
            m += xd[o + j];
        m = n ? m / n : 0.0; /* C = 0 or S = 0: no elements */
        for (size_t j = 0; j < n; j++)
            v += (xd[o + j] - m) * (xd[o + j] - m);
        v = n ? v / n : 0.0;
        mean[i] = m;
        rstd[i] = (float)(1.0 / sqrt(v + (double)eps));
        for (int c = 0; c < cpg; c++) {
            float gm = gd ? gd[c0 + c] : 1.0f, bt = bd ? bd[c0 + c] : 0.0f;
            for (int k = 0; k < S; k++) {
                size_t e = o + (size_t)c * S + k;
                yd[e] = ln_xhat(xd[e], m, rstd[i]) * gm + bt;
            }
        }
    }
    tg_tensor *in[3] = {x};
    int n_in = 1;
    if (gamma)
        in[n_in++] = gamma;
    if (beta)
        in[n_in++] = beta;
    tg_record *r = record(tp, "group_norm", group_norm_backward, y, n_in, in);
    if (r) {
        r->i[0] = gamma != NULL;
        r->i[1] = beta != NULL;
        r->i[2] = G;
        r->saved = s;
    }
    return y;
}

/* x [any shape], keep [x->size] bytes -> y of x's shape,
 * y[k] = keep[k] ? scale * x[k] : 0;  dx[k] += keep[k] ? scale * dy[k] : 0.
 * The mask is copied to the arena (r->saved), so the caller's may go. */
enum { MASK_BLOCK = 4096 };

/* Both sides of the select are computed and one is kept, so the loops
 * vectorise (a branch per element mispredicted at dropout's random mask:
 * a quarter of an MC dropout prediction's time); the same values. */
TG_VECTOR_CLONES
static void mask_scale_block(const float *restrict x,
                             const uint8_t *restrict keep, float scale,
                             float *restrict y, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float v = scale * x[k];
        y[k] = keep[k] ? v : 0.0f;
    }
}

TG_VECTOR_CLONES
static void mask_scale_grad_block(const float *restrict dy,
                                  const uint8_t *restrict keep, float scale,
                                  float *restrict dx, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float g = scale * dy[k];
        dx[k] += keep[k] ? g : 0.0f;
    }
}

static void mask_scale_backward(tg_tape *tp, tg_record *r)
{
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    const uint8_t *keep = r->saved;
    const float scale = r->f[0];
    size_t n = r->out->size, blocks = (n + MASK_BLOCK - 1) / MASK_BLOCK;
    TG_PARALLEL_FOR(blocks, MASK_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t k0 = b * MASK_BLOCK,
               m = n - k0 < MASK_BLOCK ? n - k0 : MASK_BLOCK;
        mask_scale_grad_block(dy + k0, keep + k0, scale, dx + k0, m);
    }
}

tg_tensor *tg_mask_scale(tg_tape *tp, tg_tensor *x, const uint8_t *keep,
                         float scale)
{
    check_inputs("mask_scale", x);
    if (!keep && x->size > 0)
        tg_fatal("mask_scale", "keep mask is NULL");
    if (!isfinite(scale))
        tg_fatal("mask_scale", "scale %g is not finite", (double)scale);
    tg_tensor *out = out_like(tp, x);
    const float *xd = x->data;
    float *y = out->data;
    size_t n = x->size, blocks = (n + MASK_BLOCK - 1) / MASK_BLOCK;
    TG_PARALLEL_FOR(blocks, MASK_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t k0 = b * MASK_BLOCK,
               m = n - k0 < MASK_BLOCK ? n - k0 : MASK_BLOCK;
        mask_scale_block(xd + k0, keep + k0, scale, y + k0, m);
    }
    tg_record *r = record(tp, "mask_scale", mask_scale_backward, out, 1, &x);
    if (r) {
        uint8_t *saved = tg_tape_alloc(tp, n);
        if (n > 0)
            memcpy(saved, keep, n);
        r->saved = saved;
        r->f[0] = scale;
    }
    return out;
}

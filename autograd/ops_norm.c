/* Normalisation and masking: layer_norm over the last axis, group_norm over
 * channel groups of each example, and the masked scale that dropout
 * (nn/dropout.c) is built on. */
#include "ops_check.h"
#include "parallel.h"
#include "tape.h"

#include <limits.h>
#include <math.h>
#include <string.h>

/* Both normalisations are one computation: x as B examples of C channels
 * of S positions, each example's channels in G groups of C/G; group (b, g)
 * is the n = (C/G)·S consecutive floats of example b's channels
 * g·C/G .. (g+1)·C/G - 1, normalised alone and scaled per channel:
 *   mean = (1/n) sum x,  var = (1/n) sum (x - mean)^2 (biased, as PyTorch)
 *   rstd = 1 / sqrt(var + eps),  xhat = (x - mean) * rstd
 *   y[b, c, s] = xhat * gamma[c] + beta[c]   (gamma, beta may be NULL)
 * layer_norm is x [R, C] as B = R, S = 1, G = 1 (a row is a group);
 * group_norm is x [B, C, ...] with S the product of the dims after C.
 * Both moments are two-pass sums in double, and x - mean is taken in
 * double too: a row like 1000 + 0.01 u has a mean that float rounds by
 * 3e-5, half a percent of its spread. Saved for backward: mean (double)
 * and rstd per group. Backward, with g = dy * gamma[c], over each group:
 *   dx        += rstd * (g - mean_n(g) - xhat * mean_n(g * xhat))
 *   dgamma[c] += sum_{b,s} dy * xhat,   dbeta[c] += sum_{b,s} dy
 * Groups run in parallel (forward, dx) and so do channels (dgamma and
 * dbeta, each summed over b then s in order, in double: a float running
 * sum drifts by about B ulp): the same bits on any thread count.
 * r->i[0], r->i[1]: gamma, beta present (then in[1], in[1 + i[0]]);
 * r->i[2]: G (group_norm). */
typedef struct norm_saved {
    double *mean;
    float *rstd;
} norm_saved;

typedef struct norm_geom {
    int B, C, S, G;
} norm_geom;

static inline float norm_xhat(float x, double mean, float rstd)
{
    return (float)(((double)x - mean) * rstd);
}

static void norm_backward(tg_tape *tp, tg_record *r, norm_geom ng)
{
    tg_tensor *x = r->in[0];
    tg_tensor *gamma = r->i[0] ? r->in[1] : NULL;
    tg_tensor *beta = r->i[1] ? r->in[1 + r->i[0]] : NULL;
    const norm_saved *s = r->saved;
    const double *mean = s->mean;
    const float *rstd = s->rstd;
    const float *xd = x->data, *dy = r->out->grad;
    const float *gd = gamma ? gamma->data : NULL;
    float *dx = grad_of(tp, x);
    float *dgamma = gamma ? grad_of(tp, gamma) : NULL;
    float *dbeta = beta ? grad_of(tp, beta) : NULL;
    int B = ng.B, C = ng.C, G = ng.G, S = ng.S;
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
                    float xhat = norm_xhat(xd[e], mean[i], rstd[i]);
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
                    float xhat = norm_xhat(xd[e], mean[i], rstd[i]);
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
                sg += dy[o + k] * norm_xhat(xd[o + k], mean[i], rstd[i]);
                sb += dy[o + k];
            }
        }
        if (dgamma)
            dgamma[c] += (float)sg;
        if (dbeta)
            dbeta[c] += (float)sb;
    }
}

/* The forward for either op (checked by the caller), recorded as op. */
static tg_tensor *normalise(tg_tape *tp, const char *op,
                            tg_backward_fn backward, tg_tensor *x, norm_geom ng,
                            tg_tensor *gamma, tg_tensor *beta, float eps)
{
    if (gamma)
        check_row(op, gamma, "gamma", ng.C);
    if (beta)
        check_row(op, beta, "beta", ng.C);
    if (!(eps >= 0.0f) || !isfinite(eps))
        tg_fatal(op, "eps %g must be finite and >= 0", (double)eps);
    int G = ng.G, cpg = ng.C / G, S = ng.S, rows = ng.B * G;
    size_t n = (size_t)cpg * S;
    tg_tensor *y = out_like(tp, x);
    norm_saved *s = tg_tape_alloc(tp, sizeof *s);
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
                yd[e] = norm_xhat(xd[e], m, rstd[i]) * gm + bt;
            }
        }
    }
    tg_tensor *in[3] = {x};
    int n_in = 1;
    if (gamma)
        in[n_in++] = gamma;
    if (beta)
        in[n_in++] = beta;
    tg_record *r = record(tp, op, backward, y, n_in, in);
    if (r) {
        r->i[0] = gamma != NULL;
        r->i[1] = beta != NULL;
        r->i[2] = G;
        r->saved = s;
    }
    return y;
}

/* layer_norm: x [R, C], leading dims flattened; a row is a group. */
static norm_geom layer_geom(const tg_tensor *x)
{
    return (norm_geom){tg_tensor_rows(x), tg_tensor_cols(x), 1, 1};
}

static void layer_norm_backward(tg_tape *tp, tg_record *r)
{
    norm_backward(tp, r, layer_geom(r->in[0]));
}

tg_tensor *tg_layer_norm(tg_tape *tp, tg_tensor *x, tg_tensor *gamma,
                         tg_tensor *beta, float eps)
{
    check_inputs("layer_norm", x);
    return normalise(tp, "layer_norm", layer_norm_backward, x, layer_geom(x),
                     gamma, beta, eps);
}

/* group_norm: x [B, C, ...] (2-4 dims: [B, C], [B, C, L], [B, C, H, W]),
 * S the product of the dims after C (1 for [B, C]). */
static norm_geom group_geom(const tg_tensor *x, int G)
{
    int S = 1;
    for (int d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    return (norm_geom){x->shape[0], x->shape[1], S, G};
}

static void group_norm_backward(tg_tape *tp, tg_record *r)
{
    norm_backward(tp, r, group_geom(r->in[0], r->i[2]));
}

tg_tensor *tg_group_norm(tg_tape *tp, tg_tensor *x, int groups,
                         tg_tensor *gamma, tg_tensor *beta, float eps)
{
    check_inputs("group_norm", x);
    char sx[64];
    if (x->ndim < 2)
        tg_fatal("group_norm", "needs x [B, C, ...], got %s",
                 tg_shape_str(x, sx));
    if (groups < 1 || x->shape[1] % groups != 0)
        tg_fatal("group_norm",
                 "groups %d must be >= 1 and divide the %d channels of x %s",
                 groups, x->shape[1], tg_shape_str(x, sx));
    /* the positions S and the groups B * G are counted in int */
    long long S = 1;
    for (int d = 2; d < x->ndim; d++)
        S *= x->shape[d];
    if (S > INT_MAX || (long long)x->shape[0] * groups > INT_MAX)
        tg_fatal("group_norm",
                 "x %s in %d groups: %lld positions per channel and %lld "
                 "groups in all must each be at most %d",
                 tg_shape_str(x, sx), groups, S,
                 (long long)x->shape[0] * groups, INT_MAX);
    return normalise(tp, "group_norm", group_norm_backward, x,
                     group_geom(x, groups), gamma, beta, eps);
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

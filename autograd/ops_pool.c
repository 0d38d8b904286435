/* Pooling and upsampling over NCHW image planes: max_pool2d, avg_pool2d,
 * nearest-neighbour upsample2d; max_pool1d and avg_pool1d are the first two
 * on [N, C, 1, L]. Each (image, channel) plane is independent:
 * the loops run in parallel over planes, each plane in a fixed order, so
 * results do not depend on the thread count. */
#include "parallel.h"
#include "tape.h"

#include <limits.h>
#include <math.h>
#include <string.h>

typedef struct pool_geom {
    int planes, H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw; /* window, stride, padding per axis */
} pool_geom;

/* Window kh x kw, stride sh x sw, padding ph x pw, checked by the caller;
 * output floor((H + 2p - k)/s) + 1 per axis, which must be >= 1. x is
 * [N, C, H, W]; shown (for the messages) is what the caller was given. */
static pool_geom pool_geom_rect(const char *op, const tg_tensor *x,
                                const tg_tensor *shown, int kh, int kw, int sh,
                                int sw, int ph, int pw)
{
    char sx[64];
    pool_geom g = {0, x->shape[2], x->shape[3], 0, 0, kh, kw, sh, sw, ph, pw};
    /* in 64 bits: H + 2p overflowed int for a kernel near INT_MAX */
    long long span_h = (long long)g.H + 2LL * ph - kh,
              span_w = (long long)g.W + 2LL * pw - kw;
    g.OH = span_h < 0 ? 0 : (int)(span_h / sh + 1);
    g.OW = span_w < 0 ? 0 : (int)(span_w / sw + 1);
    if (g.OH < 1 || g.OW < 1) {
        if (shown == x)
            tg_fatal(op,
                     "kernel %d, stride %d, padding %d on x %s gives an "
                     "output of %d x %d",
                     kw, sw, pw, tg_shape_str(shown, sx), g.OH, g.OW);
        tg_fatal(op,
                 "kernel %d, stride %d, padding %d on x %s gives an output "
                 "of length %d",
                 kw, sw, pw, tg_shape_str(shown, sx), g.OW);
    }
    /* the loops count planes and index within a plane (argmax, i * W + j,
     * h0 + kh up to H + p) in int */
    size_t planes = (size_t)x->shape[0] * (size_t)x->shape[1];
    if (planes > INT_MAX || (size_t)g.H * (size_t)g.W > INT_MAX ||
        (size_t)g.OH * (size_t)g.OW > INT_MAX ||
        (long long)g.H + 2LL * ph > INT_MAX ||
        (long long)g.W + 2LL * pw > INT_MAX)
        tg_fatal(op,
                 "x %s, kernel %d, padding %d: %zu planes (N * C) of %d x %d "
                 "(padded %lld x %lld, output %d x %d); the planes, a "
                 "plane's elements and its padded sides must each be at most "
                 "%d",
                 tg_shape_str(shown, sx), kw, pw, planes, g.H, g.W,
                 (long long)g.H + 2LL * ph, (long long)g.W + 2LL * pw, g.OH,
                 g.OW, INT_MAX);
    g.planes = (int)planes;
    return g;
}

/* kernel >= 1, stride >= 1 (0: = kernel), padding in 0..kernel/2 (as
 * PyTorch), x of ndim dims; returns the stride. */
static int pool_args(const char *op, const tg_tensor *x, int ndim, int k, int s,
                     int p)
{
    char sx[64];
    check_inputs(op, x);
    if (x->ndim != ndim)
        tg_fatal(op, "needs x %s, got %s",
                 ndim == 4 ? "[N, C, H, W]" : "[N, C, L]", tg_shape_str(x, sx));
    if (s == 0)
        s = k;
    if (k < 1 || s < 1 || p < 0 || p > k / 2)
        tg_fatal(op,
                 "kernel %d, stride %d, padding %d on x %s: kernel and "
                 "stride must be >= 1, padding in 0..kernel/2",
                 k, s, p, tg_shape_str(x, sx));
    return s;
}

/* Square window k, stride s (0: s = k), padding p <= k/2. */
static pool_geom pool_geom_of(const char *op, const tg_tensor *x, int k, int s,
                              int p)
{
    s = pool_args(op, x, 4, k, s, p);
    return pool_geom_rect(op, x, x, k, k, s, s, p, p);
}

static tg_tensor *pool_out(tg_tape *tp, const tg_tensor *x, const pool_geom *g)
{
    return out_tensor(tp, 4, (int[]){x->shape[0], x->shape[1], g->OH, g->OW});
}

/* ---- max_pool2d ---------------------------------------------------------- */

typedef struct max_saved {
    pool_geom g;
    int *argmax; /* per output: index of the max within its input plane */
} max_saved;

/* dx[n, c, argmax] += dy[n, c, oh, ow]. Saved: argmax. */
static void max_pool2d_backward(tg_tape *tp, tg_record *r)
{
    const max_saved *s = r->saved;
    const pool_geom *g = &s->g;
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    size_t in_plane = (size_t)g->H * g->W, out_plane = (size_t)g->OH * g->OW;
    TG_PARALLEL_FOR(g->planes, out_plane)
    for (int t = 0; t < g->planes; t++) {
        float *dxp = dx + (size_t)t * in_plane;
        const float *dyp = dy + (size_t)t * out_plane;
        const int *am = s->argmax + (size_t)t * out_plane;
        for (size_t o = 0; o < out_plane; o++)
            dxp[am[o]] += dyp[o];
    }
}

/* y [N, C, OH, OW]: the maximum of each window over the real (unpadded)
 * elements. Ties go to the first in row-major window order; a NaN wins. */
static tg_tensor *max_pool(tg_tape *tp, const char *op, tg_tensor *x,
                           pool_geom g)
{
    tg_tensor *y = pool_out(tp, x, &g);
    size_t in_plane = (size_t)g.H * g.W, out_plane = (size_t)g.OH * g.OW;
    int *argmax = tg_tape_alloc(tp, y->size * sizeof *argmax);
    TG_PARALLEL_FOR(g.planes, in_plane)
    for (int t = 0; t < g.planes; t++) {
        const float *xp = x->data + (size_t)t * in_plane;
        float *yp = y->data + (size_t)t * out_plane;
        int *am = argmax + (size_t)t * out_plane;
        for (int oh = 0; oh < g.OH; oh++)
            for (int ow = 0; ow < g.OW; ow++) {
                int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw, best = -1;
                float m = -INFINITY;
                for (int i = h0; i < h0 + g.kh; i++)
                    for (int j = w0; j < w0 + g.kw; j++) {
                        if (i < 0 || i >= g.H || j < 0 || j >= g.W)
                            continue;
                        float v = xp[i * g.W + j];
                        if (best < 0 || v > m || (isnan(v) && !isnan(m))) {
                            m = v;
                            best = i * g.W + j;
                        }
                    }
                yp[oh * g.OW + ow] = m;
                am[oh * g.OW + ow] = best;
            }
    }
    tg_record *r = record(tp, op, max_pool2d_backward, y, 1, &x);
    if (r) {
        max_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->g = g;
        s->argmax = argmax;
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_max_pool2d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding)
{
    return max_pool(tp, "max_pool2d", x,
                    pool_geom_of("max_pool2d", x, kernel, stride, padding));
}

/* ---- avg_pool2d ---------------------------------------------------------- */

/* dx[n, c, i, j] += dy[n, c, oh, ow] / k^2 for each window holding (i, j),
 * the quotient in double rounded once, as the means' gradients (a float
 * 1/k^2 times dy was up to an ulp off: 3 / 7 came out 0.42857146). */
static void avg_pool2d_backward(tg_tape *tp, tg_record *r)
{
    const pool_geom *g = r->saved;
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    size_t in_plane = (size_t)g->H * g->W, out_plane = (size_t)g->OH * g->OW;
    double k2 = (double)g->kh * (double)g->kw; /* kh * kw: int overflow */
    TG_PARALLEL_FOR(g->planes, in_plane)
    for (int t = 0; t < g->planes; t++) {
        float *dxp = dx + (size_t)t * in_plane;
        const float *dyp = dy + (size_t)t * out_plane;
        for (int oh = 0; oh < g->OH; oh++)
            for (int ow = 0; ow < g->OW; ow++) {
                int h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
                float d = (float)(dyp[oh * g->OW + ow] / k2);
                for (int i = h0 > 0 ? h0 : 0; i < h0 + g->kh && i < g->H; i++)
                    for (int j = w0 > 0 ? w0 : 0; j < w0 + g->kw && j < g->W;
                         j++)
                        dxp[i * g->W + j] += d;
            }
    }
}

/* y [N, C, OH, OW]: the window sum over real elements divided by k^2 (padding
 * counts as zeros, PyTorch's count_include_pad=True). The sum and the
 * scaling are in double, rounded once to float: a float sum rounded at
 * every addition (nine 0.1s averaged to 0.10000001, as in PyTorch's float32)
 * and overflowed for a window of values near FLT_MAX (four 3e38s averaged to
 * Inf). */
static tg_tensor *avg_pool(tg_tape *tp, const char *op, tg_tensor *x,
                           pool_geom g)
{
    tg_tensor *y = pool_out(tp, x, &g);
    size_t in_plane = (size_t)g.H * g.W, out_plane = (size_t)g.OH * g.OW;
    /* in double: a kernel of 46341 or more (padding up to half of it keeps
     * the output >= 1) overflowed kh * kw in int, dividing by a negative */
    double inv = 1.0 / ((double)g.kh * (double)g.kw);
    TG_PARALLEL_FOR(g.planes, in_plane)
    for (int t = 0; t < g.planes; t++) {
        const float *xp = x->data + (size_t)t * in_plane;
        float *yp = y->data + (size_t)t * out_plane;
        for (int oh = 0; oh < g.OH; oh++)
            for (int ow = 0; ow < g.OW; ow++) {
                int h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
                double sum = 0.0;
                for (int i = h0 > 0 ? h0 : 0; i < h0 + g.kh && i < g.H; i++)
                    for (int j = w0 > 0 ? w0 : 0; j < w0 + g.kw && j < g.W; j++)
                        sum += xp[i * g.W + j];
                yp[oh * g.OW + ow] = (float)(sum * inv);
            }
    }
    tg_record *r = record(tp, op, avg_pool2d_backward, y, 1, &x);
    if (r) {
        pool_geom *s = tg_tape_alloc(tp, sizeof *s);
        *s = g;
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_avg_pool2d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding)
{
    return avg_pool(tp, "avg_pool2d", x,
                    pool_geom_of("avg_pool2d", x, kernel, stride, padding));
}

/* ---- 1-D pooling: the 2-D ops on the view [N, C, 1, L] ------------------- */

typedef tg_tensor *(*pool_fn)(tg_tape *, const char *, tg_tensor *, pool_geom);

static tg_tensor *pool1d(tg_tape *tp, const char *op, pool_fn f, tg_tensor *x,
                         int kernel, int stride, int padding)
{
    stride = pool_args(op, x, 3, kernel, stride, padding);
    check_recorded_inputs(tp, op, 1, &x);
    int N = x->shape[0], C = x->shape[1];
    tg_tensor *x4 = tg_reshape(tp, x, 4, (int[]){N, C, 1, x->shape[2]});
    pool_geom g = pool_geom_rect(op, x4, x, 1, kernel, 1, stride, 0, padding);
    tg_tensor *y = f(tp, op, x4, g);
    return tg_reshape(tp, y, 3, (int[]){N, C, g.OW});
}

tg_tensor *tg_max_pool1d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding)
{
    return pool1d(tp, "max_pool1d", max_pool, x, kernel, stride, padding);
}

tg_tensor *tg_avg_pool1d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding)
{
    return pool1d(tp, "avg_pool1d", avg_pool, x, kernel, stride, padding);
}

/* ---- upsample2d ---------------------------------------------------------- */

/* y [N, C, H*s, W*s], y[n, c, h, w] = x[n, c, h/s, w/s].
 * dx[n, c, i, j] += sum of dy over its s x s block (row-major order). */
static void upsample2d_backward(tg_tape *tp, tg_record *r)
{
    const tg_tensor *x = r->in[0];
    float *dx = grad_of(tp, r->in[0]);
    const float *dy = r->out->grad;
    int s = r->i[0], H = x->shape[2], W = x->shape[3];
    int planes = x->shape[0] * x->shape[1], OW = W * s;
    size_t in_plane = (size_t)H * W, out_plane = in_plane * s * s;
    TG_PARALLEL_FOR(planes, out_plane)
    for (int t = 0; t < planes; t++) {
        float *dxp = dx + (size_t)t * in_plane;
        const float *dyp = dy + (size_t)t * out_plane;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                float sum = 0.0f;
                for (int a = 0; a < s; a++)
                    for (int b = 0; b < s; b++)
                        sum += dyp[(size_t)(i * s + a) * OW + j * s + b];
                dxp[i * W + j] += sum;
            }
    }
}

tg_tensor *tg_upsample2d(tg_tape *tp, tg_tensor *x, int scale)
{
    char sx[64];
    check_inputs("upsample2d", x);
    if (x->ndim != 4 || scale < 1)
        tg_fatal("upsample2d",
                 "needs x [N, C, H, W] and scale >= 1, got x "
                 "%s, scale %d",
                 tg_shape_str(x, sx), scale);
    int H = x->shape[2], W = x->shape[3];
    if ((long)H * scale > INT_MAX / 2 || (long)W * scale > INT_MAX / 2)
        tg_fatal("upsample2d", "x %s times %d is too large",
                 tg_shape_str(x, sx), scale);
    /* planes are counted, and x's plane indexed, in int */
    if ((size_t)x->shape[0] * (size_t)x->shape[1] > INT_MAX ||
        (size_t)H * (size_t)W > INT_MAX)
        tg_fatal("upsample2d",
                 "x %s: more than %d planes (N * C) or elements in a plane",
                 tg_shape_str(x, sx), INT_MAX);
    int OH = H * scale, OW = W * scale, planes = x->shape[0] * x->shape[1];
    tg_tensor *y = out_tensor(tp, 4, (int[]){x->shape[0], x->shape[1], OH, OW});
    size_t in_plane = (size_t)H * W, out_plane = (size_t)OH * OW;
    TG_PARALLEL_FOR(planes, out_plane)
    for (int t = 0; t < planes; t++) {
        const float *xp = x->data + (size_t)t * in_plane;
        float *yp = y->data + (size_t)t * out_plane;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
                yp[(size_t)oh * OW + ow] = xp[(oh / scale) * W + ow / scale];
    }
    tg_record *r = record(tp, "upsample2d", upsample2d_backward, y, 1, &x);
    if (r)
        r->i[0] = scale;
    return y;
}

/* Convolutions, NCHW, through the GEMM (im2col / col2im).
 *
 * Both ops share one geometry: an "image" side [N, C, H, W] (conv2d's input,
 * conv_transpose2d's output) and a "column" side [N, OC, OH, OW] (conv2d's
 * output, conv_transpose2d's input), joined by a kernel kh x kw with stride,
 * padding and dilation. With K = C*kh*kw and P = OH*OW, the columns of all
 * images are one matrix col [K, N*P]:
 *   col[(c*kh + i)*kw + j][n*P + oh*OW + ow]
 *       = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]   (0 outside)
 * so conv2d is one GEMM  y' [OC, N*P] = W [OC, K] . col, and
 * conv_transpose2d is conv2d's input gradient: col = W^T . x', then col2im
 * adds each column entry back at its image position. Matrices over all
 * images at once keep the GEMMs large (N*P columns); x' and y' are the
 * column-side tensors with channels first ([OC, N*P]), one permuting copy
 * away from NCHW.
 *
 * Scratch matrices come from the tape arena, so a training step allocates
 * nothing after warm-up. Determinism: tg_gemm is bit-identical for any
 * thread count; im2col, col2im and the permutes are parallel loops in
 * which each iteration writes only its own outputs, col2im summing each
 * image plane's contributions in a fixed (i, j, oh, ow) order. */
#include "parallel.h"
#include "tape.h"

#include <limits.h>
#include <string.h>

typedef struct geom {
    int N, C, H, W; /* image side */
    int OC, OH, OW; /* column side */
    int kh, kw, sh, sw, ph, pw, dh, dw;
} geom;

static int K_of(const geom *g) { return g->C * g->kh * g->kw; }
static int P_of(const geom *g) { return g->OH * g->OW; }

/* The range [lo, hi) of o in [0, n_out) with 0 <= o*s + off < n_in. */
static void valid_range(int n_out, int s, int off, int n_in, int *lo, int *hi)
{
    int l = off >= 0 ? 0 : (-off + s - 1) / s;
    int h = n_in - off <= 0 ? 0 : (n_in - off + s - 1) / s;
    if (h > n_out)
        h = n_out;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* col [K, N*P] from x [N, C, H, W]; one iteration per (row, image). */
static void im2col(const geom *g, const float *x, float *col)
{
    int K = K_of(g), P = P_of(g), N = g->N;
    size_t NP = (size_t)N * P;
    long items = (long)K * N;
    TG_PARALLEL_FOR(items, P)
    for (long t = 0; t < items; t++) {
        int row = (int)(t / N), n = (int)(t % N);
        int c = row / (g->kh * g->kw), i = row / g->kw % g->kh, j = row % g->kw;
        const float *xc = x + ((size_t)n * g->C + c) * g->H * g->W;
        float *dst = col + (size_t)row * NP + (size_t)n * P;
        int lo, hi, off_w = j * g->dw - g->pw;
        valid_range(g->OW, g->sw, off_w, g->W, &lo, &hi);
        for (int oh = 0; oh < g->OH; oh++, dst += g->OW) {
            int ih = oh * g->sh - g->ph + i * g->dh;
            if (ih < 0 || ih >= g->H) {
                memset(dst, 0, (size_t)g->OW * sizeof *dst);
                continue;
            }
            const float *xr = xc + (size_t)ih * g->W + off_w;
            for (int ow = 0; ow < lo; ow++)
                dst[ow] = 0.0f;
            for (int ow = lo; ow < hi; ow++)
                dst[ow] = xr[ow * g->sw];
            for (int ow = hi; ow < g->OW; ow++)
                dst[ow] = 0.0f;
        }
    }
}

/* dx [N, C, H, W] += col2im(col [K, N*P]); one iteration per image plane. */
static void col2im_add(const geom *g, const float *col, float *dx)
{
    int P = P_of(g), N = g->N;
    size_t NP = (size_t)N * P;
    long planes = (long)N * g->C;
    TG_PARALLEL_FOR(planes, (size_t)g->kh * g->kw * P)
    for (long t = 0; t < planes; t++) {
        int n = (int)(t / g->C), c = (int)(t % g->C);
        float *dxc = dx + (size_t)t * g->H * g->W;
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++) {
                int row = (c * g->kh + i) * g->kw + j;
                const float *src = col + (size_t)row * NP + (size_t)n * P;
                int lo, hi, off_w = j * g->dw - g->pw;
                valid_range(g->OW, g->sw, off_w, g->W, &lo, &hi);
                for (int oh = 0; oh < g->OH; oh++, src += g->OW) {
                    int ih = oh * g->sh - g->ph + i * g->dh;
                    if (ih < 0 || ih >= g->H)
                        continue;
                    float *dr = dxc + (size_t)ih * g->W + off_w;
                    for (int ow = lo; ow < hi; ow++)
                        dr[ow * g->sw] += src[ow];
                }
            }
    }
}

/* cnp [C, N*P] = nchw [N, C, P] (a copy with channels first). */
static void to_cnp(int N, int C, int P, const float *nchw, float *cnp)
{
    long items = (long)N * C;
    TG_PARALLEL_FOR(items, P)
    for (long t = 0; t < items; t++) {
        int n = (int)(t / C), c = (int)(t % C);
        memcpy(cnp + ((size_t)c * N + n) * P, nchw + (size_t)t * P,
               (size_t)P * sizeof *cnp);
    }
}

/* nchw [N, C, P] (+)= cnp [C, N*P] (+ bias[c] when bias is not NULL). */
static void from_cnp(int N, int C, int P, const float *cnp, const float *bias,
                     bool add, float *nchw)
{
    long items = (long)N * C;
    TG_PARALLEL_FOR(items, P)
    for (long t = 0; t < items; t++) {
        int n = (int)(t / C), c = (int)(t % C);
        const float *src = cnp + ((size_t)c * N + n) * P;
        float *dst = nchw + (size_t)t * P;
        float b = bias ? bias[c] : 0.0f;
        if (add)
            for (int p = 0; p < P; p++)
                dst[p] += src[p];
        else
            for (int p = 0; p < P; p++)
                dst[p] = src[p] + b;
    }
}

/* db[c] += sum over n, p of dy [N, C, P]; each channel summed in order. */
static void bias_backward(int N, int C, int P, const float *dy, float *db)
{
    TG_PARALLEL_FOR(C, (size_t)N * P)
    for (int c = 0; c < C; c++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *row = dy + ((size_t)n * C + c) * P;
            for (int p = 0; p < P; p++)
                s += row[p];
        }
        db[c] += s;
    }
}

static float *scratch(tg_tape *tp, size_t rows, size_t cols)
{
    return tg_tape_alloc(tp, rows * cols * sizeof(float));
}

/* ---- argument checks ----------------------------------------------------- */

static int arg_or_1(int v) { return v == 0 ? 1 : v; }

/* Kernel, stride, padding, dilation from W [*, *, kh, kw] and args; aborts
 * on bad values. x and W are 4-D. */
static geom geom_from(const char *op, const tg_tensor *x, const tg_tensor *W,
                      const tg_tensor *b, int b_size, const tg_conv2d_args *a)
{
    char sx[64], sw[64], sb[64];
    bool empty = false; /* only the batch may be empty */
    for (int d = 0; d < 4; d++)
        empty |= (d > 0 && x->shape[d] < 1) || W->shape[d] < 1;
    if (x->ndim != 4 || W->ndim != 4 || empty)
        tg_fatal(op,
                 "needs x [N, C, H, W] and a 4-D weight with no 0 dims "
                 "(but N), got x %s, W %s",
                 tg_shape_str(x, sx), tg_shape_str(W, sw));
    if (b && (b->size != (size_t)b_size))
        tg_fatal(op, "bias %s does not fit W %s (bias has %d elements)",
                 tg_shape_str(b, sb), tg_shape_str(W, sw), b_size);
    tg_conv2d_args d = a ? *a : (tg_conv2d_args){0};
    geom g = {.kh = W->shape[2], .kw = W->shape[3]};
    g.sh = arg_or_1(d.stride[0]), g.sw = arg_or_1(d.stride[1]);
    g.dh = arg_or_1(d.dilation[0]), g.dw = arg_or_1(d.dilation[1]);
    g.ph = d.padding[0], g.pw = d.padding[1];
    if (g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.ph < 0 || g.pw < 0 ||
        d.output_padding[0] < 0 || d.output_padding[1] < 0)
        tg_fatal(op,
                 "stride (%d, %d), dilation (%d, %d), padding (%d, %d), "
                 "output padding (%d, %d): stride and dilation must be "
                 ">= 1, paddings >= 0",
                 d.stride[0], d.stride[1], d.dilation[0], d.dilation[1],
                 d.padding[0], d.padding[1], d.output_padding[0],
                 d.output_padding[1]);
    return g;
}

static void check_size(const char *op, const geom *g, const tg_tensor *x,
                       const tg_tensor *W, int oh, int ow)
{
    char sx[64], sw[64];
    if (oh < 1 || ow < 1)
        tg_fatal(op,
                 "x %s with W %s, stride (%d, %d), padding (%d, %d), "
                 "dilation (%d, %d) gives an output of %d x %d",
                 tg_shape_str(x, sx), tg_shape_str(W, sw), g->sh, g->sw, g->ph,
                 g->pw, g->dh, g->dw, oh, ow);
    if ((long)g->N * oh * ow > INT_MAX || (long)g->N * g->H * g->W > INT_MAX)
        tg_fatal(op, "x %s: too many output positions for one GEMM",
                 tg_shape_str(x, sx));
}

/* Output length along one axis, as PyTorch's Conv2d: floor((in + 2p -
 * d(k-1) - 1) / s) + 1, or <= 0 when the kernel does not fit. */
static int conv_len(int in, int k, int s, int p, int d)
{
    int span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

/* ---- conv2d -------------------------------------------------------------- */

typedef struct conv_saved {
    geom g;
    float *col; /* [K, N*P]: conv2d's im2col, conv_transpose2d's x' */
} conv_saved;

/* y [N, OC, OH, OW] = conv(x [N, C, H, W], W [OC, C, kh, kw]) + b [OC].
 * With dy' = dy as [OC, N*P]:
 * dW [OC, K] += dy' . col^T
 * dx         += col2im(W^T . dy')
 * db [OC]    += sum over n, p of dy
 * Saved: col. */
static void conv2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P;
    float *dx = grad_of(tp, x), *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    if (db)
        bias_backward(g->N, g->OC, P, dy, db);
    if (NP == 0)
        return;
    float *dyc = scratch(tp, (size_t)g->OC, (size_t)NP);
    to_cnp(g->N, g->OC, P, dy, dyc);
    if (dW)
        tg_gemm(false, true, g->OC, K, NP, 1.0f, dyc, NP, s->col, NP, 1.0f, dW,
                K);
    if (dx) {
        float *dcol = scratch(tp, (size_t)K, (size_t)NP);
        tg_gemm(true, false, K, NP, g->OC, 1.0f, W->data, K, dyc, NP, 0.0f,
                dcol, NP);
        col2im_add(g, dcol, dx);
    }
}

tg_tensor *tg_conv2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                        const tg_conv2d_args *args)
{
    const char *op = "conv2d";
    check_inputs(op, x, W);
    geom g = geom_from(op, x, W, b, W->ndim == 4 ? W->shape[0] : 0, args);
    char sx[64], sw[64];
    if (x->shape[1] != W->shape[1])
        tg_fatal(op,
                 "x %s has %d channels, W %s takes %d (W is [out, in, "
                 "kh, kw])",
                 tg_shape_str(x, sx), x->shape[1], tg_shape_str(W, sw),
                 W->shape[1]);
    if (args && (args->output_padding[0] || args->output_padding[1]))
        tg_fatal(op, "output padding is for conv_transpose2d");
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.OC = W->shape[0];
    g.OH = conv_len(g.H, g.kh, g.sh, g.ph, g.dh);
    g.OW = conv_len(g.W, g.kw, g.sw, g.pw, g.dw);
    check_size(op, &g, x, W, g.OH, g.OW);
    int K = K_of(&g), P = P_of(&g), NP = g.N * P;
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.OC, g.OH, g.OW});
    float *col = scratch(tp, (size_t)K, (size_t)NP);
    if (NP > 0) {
        im2col(&g, x->data, col);
        float *yc = scratch(tp, (size_t)g.OC, (size_t)NP);
        tg_gemm(false, false, g.OC, NP, K, 1.0f, W->data, K, col, NP, 0.0f, yc,
                NP);
        from_cnp(g.N, g.OC, P, yc, b ? b->data : NULL, false, y->data);
    }
    tg_tensor *in[] = {x, W, b};
    tg_record *r = record(tp, op, conv2d_backward, y, b ? 3 : 2, in);
    if (r) {
        conv_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->g = g;
        s->col = col;
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_conv2d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation)
{
    tg_conv2d_args a = {
        {stride, stride}, {padding, padding}, {dilation, dilation}, {0, 0}};
    return tg_conv2d_ex(tp, x, W, b, &a);
}

/* ---- conv_transpose2d -------------------------------------------------------
 * The adjoint of conv2d with W [C_in, C_out, kh, kw] read as a conv2d
 * weight [out = C_in, in = C_out, kh, kw]: the image side is y, the column
 * side x. Output length (PyTorch's ConvTranspose2d):
 *   (in - 1)*s - 2p + d(k-1) + output_padding + 1. */

/* y [N, C_out, OH, OW] = col2im(W^T . x') + b [C_out], x' = x as [C_in, N*P].
 * dx' [C_in, N*P] += W . im2col(dy)
 * dW [C_in, K]    += x' . im2col(dy)^T
 * db [C_out]      += sum over n, p of dy
 * Saved: x'. */
static void conv_transpose2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P;
    float *dx = grad_of(tp, x), *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    if (db)
        bias_backward(g->N, g->C, g->H * g->W, dy, db);
    if (NP == 0)
        return;
    float *dcol = scratch(tp, (size_t)K, (size_t)NP);
    im2col(g, dy, dcol);
    if (dW)
        tg_gemm(false, true, g->OC, K, NP, 1.0f, s->col, NP, dcol, NP, 1.0f, dW,
                K);
    if (dx) {
        float *dxc = scratch(tp, (size_t)g->OC, (size_t)NP);
        tg_gemm(false, false, g->OC, NP, K, 1.0f, W->data, K, dcol, NP, 0.0f,
                dxc, NP);
        from_cnp(g->N, g->OC, P, dxc, NULL, true, dx);
    }
}

tg_tensor *tg_conv_transpose2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                                  tg_tensor *b, const tg_conv2d_args *args)
{
    const char *op = "conv_transpose2d";
    check_inputs(op, x, W);
    geom g = geom_from(op, x, W, b, W->ndim == 4 ? W->shape[1] : 0, args);
    char sx[64], sw[64];
    if (x->shape[1] != W->shape[0])
        tg_fatal(op,
                 "x %s has %d channels, W %s takes %d (W is [in, out, "
                 "kh, kw])",
                 tg_shape_str(x, sx), x->shape[1], tg_shape_str(W, sw),
                 W->shape[0]);
    int oph = args ? args->output_padding[0] : 0;
    int opw = args ? args->output_padding[1] : 0;
    if ((oph >= g.sh && oph >= g.dh) || (opw >= g.sw && opw >= g.dw))
        tg_fatal(op,
                 "output padding (%d, %d) must be smaller than the "
                 "stride (%d, %d) or the dilation (%d, %d)",
                 oph, opw, g.sh, g.sw, g.dh, g.dw);
    g.N = x->shape[0], g.OC = x->shape[1];
    g.OH = x->shape[2], g.OW = x->shape[3];
    g.C = W->shape[1];
    g.H = (g.OH - 1) * g.sh - 2 * g.ph + g.dh * (g.kh - 1) + oph + 1;
    g.W = (g.OW - 1) * g.sw - 2 * g.pw + g.dw * (g.kw - 1) + opw + 1;
    check_size(op, &g, x, W, g.H, g.W);
    int K = K_of(&g), P = P_of(&g), NP = g.N * P;
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.C, g.H, g.W});
    float *xc = scratch(tp, (size_t)g.OC, (size_t)NP);
    memset(y->data, 0, y->size * sizeof(float));
    if (NP > 0) {
        to_cnp(g.N, g.OC, P, x->data, xc);
        float *col = scratch(tp, (size_t)K, (size_t)NP);
        tg_gemm(true, false, K, NP, g.OC, 1.0f, W->data, K, xc, NP, 0.0f, col,
                NP);
        col2im_add(&g, col, y->data);
    }
    if (b) {
        size_t plane = (size_t)g.H * g.W;
        long planes = (long)g.N * g.C;
        TG_PARALLEL_FOR(planes, plane)
        for (long t = 0; t < planes; t++) {
            float bc = b->data[t % g.C], *dst = y->data + (size_t)t * plane;
            for (size_t p = 0; p < plane; p++)
                dst[p] += bc;
        }
    }
    tg_tensor *in[] = {x, W, b};
    tg_record *r = record(tp, op, conv_transpose2d_backward, y, b ? 3 : 2, in);
    if (r) {
        conv_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->g = g;
        s->col = xc;
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_conv_transpose2d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation)
{
    tg_conv2d_args a = {{stride, stride},
                        {padding, padding},
                        {dilation, dilation},
                        {output_padding, output_padding}};
    return tg_conv_transpose2d_ex(tp, x, W, b, &a);
}

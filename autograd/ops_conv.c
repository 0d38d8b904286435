/* Convolutions, NCHW: conv2d and conv_transpose2d, and the patch-row layout
 * col that every path computes or reads in place.
 *
 * Both ops share one geometry: an "image" side [N, C, H, W] (conv2d's input,
 * conv_transpose2d's output) and a "column" side [N, OC, OH, OW] (conv2d's
 * output, conv_transpose2d's input), joined by a kernel kh x kw with stride,
 * padding and dilation. With K = C*kh*kw and P = OH*OW, each output pixel
 * q = n*P + oh*OW + ow has one patch row of the matrix col [N*P, K]:
 *   col[q][(c*kh + i)*kw + j] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
 * (0 outside), rows ldk >= K floats apart (padded off multiples of 512 bytes,
 * whose rows would share L1 sets when the GEMM reads down a column). With
 * the column side pixel-major too (x' [N*P, OC], one transposing copy away
 * from NCHW), conv2d is one GEMM over all images, y' = col . W^T, and
 * conv_transpose2d is its input gradient: col = x' . W, y = col2im(col).
 *
 * Why patch rows and not the [K, N*P] layout (each kernel tap a row): a
 * patch row is kw-float runs of an image row, so im2col and col2im copy
 * short contiguous runs instead of strided single floats; and the GEMMs get
 * the large dimension N*P as M (rows of C, read in place along rows),
 * which the driver runs faster at these shapes (bench/gemm on conv2's
 * shapes, Zen 3, 1 thread: 6272x64x512 NT 73 GFLOP/s against 64x6272x512
 * NN 62, whose in-place B rows 25 KB apart thrash L1 sets).
 *
 * Scratch matrices come from the tape arena, so a training step allocates
 * nothing after warm-up. Determinism: tg_gemm is bit-identical for any
 * thread count; im2col, col2im and the transposes are parallel loops in
 * which each iteration writes only its own outputs, col2im summing each
 * image's contributions in a fixed (oh, ow, c, i, j) order.
 *
 * This file holds the 2-D ops (checks, forward, backward, saved state) and
 * chooses for each product among three ways of computing it, each in its
 * own file (conv_internal.h): im2col / col2im around the GEMM
 * (conv_gemm.c, any shape), implicit GEMM tiles that read the padded image
 * (conv_implicit.c) or gather the transposed products by stride phase
 * (conv_implicit_trans.c), and direct kernels for a one-channel image side
 * (conv_direct.c). The 1-D ops, conv1d and conv_transpose1d, are these on
 * views (ops_conv1d.c). */
#include "conv_internal.h"

#include <limits.h>
#include <string.h>

/* ---- argument checks ----------------------------------------------------- */

int conv_arg_or_1(int v) { return v == 0 ? 1 : v; }

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
    /* 1-D only, as PyTorch: a [OC, 1] bias has the right count but is not
     * a per-channel vector */
    if (b && (b->ndim != 1 || b->size != (size_t)b_size))
        tg_fatal(op, "bias %s does not fit W %s (bias is [%d])",
                 tg_shape_str(b, sb), tg_shape_str(W, sw), b_size);
    tg_conv2d_args d = a ? *a : (tg_conv2d_args){0};
    geom g = {.kh = W->shape[2], .kw = W->shape[3]};
    g.sh = conv_arg_or_1(d.stride[0]), g.sw = conv_arg_or_1(d.stride[1]);
    g.dh = conv_arg_or_1(d.dilation[0]), g.dw = conv_arg_or_1(d.dilation[1]);
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

/* Positions N * OH * OW and N * H * W: the chunk loops step c0 + G images
 * (G <= 65536) past the last in int. C * kh * kw and OC: tg_gemm's sizes. */
enum { CONV_MAX_POS = INT_MAX - 65536, CONV_MAX_DIM = GEMM_MAX_DIM };

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
    /* a length of INT_MAX is conv_len's clamp of a longer one: with one
     * image the product did not see it (audit: an output cut short). Both
     * sides are counted (conv_transpose2d's input, the column side, can be
     * larger than its output), an empty batch as one image: P = OH * OW
     * and H * W are ints wherever N is. */
    long long n = g->N > 0 ? g->N : 1;
    if (oh == INT_MAX || ow == INT_MAX || n * g->OH * g->OW > CONV_MAX_POS ||
        n * g->H * g->W > CONV_MAX_POS)
        tg_fatal(op, "x %s: too many output positions for one GEMM",
                 tg_shape_str(x, sx));
    /* K = C * kh * kw is the GEMM's inner size and, rounded up (ldk_of),
     * col's row stride, OC a GEMM size (tg_gemm takes sizes up to INT_MAX
     * - 128); im2col's positions reach H + 2 * ph */
    long long K = (long long)g->C * g->kh * g->kw;
    if (K > CONV_MAX_DIM || g->OC > CONV_MAX_DIM ||
        (long long)g->H + 2LL * g->ph > INT_MAX ||
        (long long)g->W + 2LL * g->pw > INT_MAX)
        tg_fatal(op,
                 "x %s with W %s, padding (%d, %d): C * kh * kw = %lld, OC = "
                 "%d and the padded image %lld x %lld; the first two must be "
                 "at most %d, the sides at most %d",
                 tg_shape_str(x, sx), tg_shape_str(W, sw), g->ph, g->pw, K,
                 g->OC, (long long)g->H + 2LL * g->ph,
                 (long long)g->W + 2LL * g->pw, CONV_MAX_DIM, INT_MAX);
}

/* Output length along one axis, as PyTorch's Conv2d: floor((in + 2p -
 * d(k-1) - 1) / s) + 1, or <= 0 when the kernel does not fit. */
int conv_len(int in, int k, int s, int p, int d)
{
    /* in 64 bits: a huge padding or dilation overflowed int (UB) */
    long long span = (long long)in + 2LL * p - (long long)d * (k - 1) - 1;
    long long len = span < 0 ? 0 : span / s + 1;
    return len > INT_MAX ? INT_MAX : (int)len;
}

/* conv_transpose2d's output length (in - 1)s - 2p + d(k-1) + op + 1, in
 * 64 bits, clamped to 0..INT_MAX (check_size refuses both ends). */
int convt_len(int in, int k, int s, int p, int d, int op)
{
    long long len =
        (long long)(in - 1) * s - 2LL * p + (long long)d * (k - 1) + op + 1;
    return len < 0 ? 0 : len > INT_MAX ? INT_MAX : (int)len;
}

/* ---- conv2d -------------------------------------------------------------- */

typedef struct conv_saved {
    geom g;
    float *col;    /* conv2d's im2col [N*P, ldk], conv_transpose2d's x' (NULL
                    * on the direct path) */
    bool direct;   /* a one-channel image side: the direct kernels, laid out */
    dlay d;        /* as d */
    bool implicit; /* col read from the padded image (conv2d: col is it) */
    bool relu;     /* the output is max(0, .) of the convolution */
} conv_saved;

/* Records a convolution (inputs x, W and b when not NULL) with what its
 * backward reads. */
static void record_conv(tg_tape *tp, const char *op, tg_backward_fn backward,
                        tg_tensor *y, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                        conv_saved saved)
{
    tg_tensor *in[] = {x, W, b};
    tg_record *r = record(tp, op, backward, y, b ? 3 : 2, in);
    if (r) {
        conv_saved *s = tg_tape_alloc(tp, sizeof *s);
        *s = saved;
        r->saved = s;
    }
}

/* With args->relu the op's output y is max(0, conv): computed in the pass
 * that lays the output out NCHW, while each image is in cache, and the
 * gradient reaching the convolution is dy where y > 0, else 0: tg_relu's
 * values and gradients bit for bit, without its two passes over memory. */
/* The gradient reaching the convolution under a fused ReLU (in tape
 * scratch); with db, db += its bias gradient from the same pass; with pm,
 * *pm = it pixel-major [N*P, C] (with panels, in conv_to_panels' layout),
 * made while each image is in cache. */
static const float *relu_masked(tg_tape *tp, const tg_tensor *y,
                                const float *dy, int C, float *db, float **pm,
                                bool panels)
{
    int N = y->shape[0], P = y->shape[2] * y->shape[3];
    float *m = tg_tape_alloc(tp, y->size * sizeof *m);
    double *sums = db ? tg_tape_alloc(tp, (size_t)N * C * sizeof *sums) : NULL;
    if (pm)
        *pm = scratch(tp, (size_t)N * P, (size_t)C);
    conv_relu_backward(N, C, P, y->data, dy, m, sums, pm ? *pm : NULL, panels);
    if (db)
        conv_bias_from_sums(N, C, sums, db);
    return m;
}

/* The gradient of a convolution's input: written whole (fresh, see
 * grad_fresh) on the paths that write it, set to zeros first where nothing
 * writes it (an empty batch). Every path writes a fresh dx image by image
 * while it is in cache: the direct kernels too (img_set, col_add false),
 * where a memset of the whole dx first, on one thread, had taken the
 * other core idle for 0.7% of the conv VAE's step (deconv2's dx, 3 MB). */
static float *conv_dx(tg_tape *tp, const tg_record *r, bool writes, bool *fresh)
{
    float *dx = grad_fresh(tp, r, 0, fresh);
    if (*fresh && !writes) {
        memset(dx, 0, r->in[0]->size * sizeof *dx);
        *fresh = false;
    }
    return dx;
}

/* y [N, OC, OH, OW] = conv(x [N, C, H, W], W [OC, C, kh, kw]) + b [OC].
 * With dy' = dy pixel-major [N*P, OC]:
 * dW [OC, K] += (col^T . dy')^T
 * dx         += col2im(dy' . W)
 * db [OC]    += sum over n, p of dy
 * Saved: col (on the implicit path the padded images col is read from;
 * nothing on the direct path, which reads x). */
static void conv2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P, ldk = ldk_of(g);
    bool fresh;
    float *dx = conv_dx(tp, r, NP > 0, &fresh), *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    /* dy pixel-major [N*P, OC] for the GEMM paths (dyp), in 16-channel
     * panels for the implicit dW (dpan); the gathered dx reads dy NCHW */
    const bool trans = dx && conv_trans_ok(g);
    const bool need_pan = dW && s->implicit,
               need_pm = (dW && !s->implicit) || (dx && !trans);
    float *dyp = NULL, *dpan = NULL;
    /* the direct kernels mask dy as they put each image on their grid */
    bool grid_fused =
        s->relu && s->direct && NP > 0 && (dx || dW) && P <= PAD_RELU_MAX;
    double *sums = grid_fused && db
                       ? tg_tape_alloc(tp, (size_t)g->N * g->OC * sizeof *sums)
                       : NULL;
    if (s->relu && !grid_fused) /* db (and dyp) from the masking pass */
        dy = relu_masked(tp, r->out, dy, g->OC, db,
                         s->direct  ? NULL
                         : need_pm  ? &dyp
                         : need_pan ? &dpan
                                    : NULL,
                         !need_pm);
    else if (db && !grid_fused)
        conv_bias_backward(g->N, g->OC, P, dy, db);
    if (NP == 0)
        return;
    if (s->direct) {
        if (!dx && !dW)
            return;
        direct_job j = {
            .img = dW ? x->data : NULL,
            .col = dy,
            .W = W->data,
            .img_out = dx,
            .img_set = fresh,
            .col_y = grid_fused ? r->out->data : NULL,
            .col_sums = sums,
            .part =
                dW ? scratch(tp, (size_t)g->N, (size_t)g->OC * s->d.KK) : NULL};
        conv_direct_images(tp, g, &s->d, &j, dW);
        if (sums)
            conv_bias_from_sums(g->N, g->OC, sums, db);
        return;
    }
    if (need_pm && !dyp) {
        dyp = scratch(tp, (size_t)NP, (size_t)g->OC);
        conv_to_pm(g->N, g->OC, P, dy, dyp);
    }
    if (need_pan && !dpan) {
        dpan = scratch(tp, (size_t)NP, (size_t)g->OC);
        conv_to_panels(g->N, g->OC, P, dy, dpan);
    }
    if (need_pan) {
        ilay l = ilay_of(g);
        conv_implicit_wgrad(tp, g, &l, s->col, dpan, dW);
    } else if (dW) {
        float *tmp = scratch(tp, (size_t)K, (size_t)g->OC);
        tg_gemm(true, false, K, g->OC, NP, 1.0f, s->col, ldk, dyp, g->OC, 0.0f,
                tmp, g->OC);
        conv_add_transposed(g->OC, K, tmp, dW);
    }
    if (trans) /* fresh: written, not added to */
        conv_implicit_trans(tp, g, dy, W->data, dx, fresh, NULL, false);
    else if (dx) /* fresh: each image's dx set to 0 while in cache */
        conv_gemm_col2im(tp, g, dyp, W->data, ldk, dx, fresh, NULL, false);
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
        tg_fatal(op,
                 "output_padding (%d, %d) with x %s and W %s: output "
                 "padding is for conv_transpose2d (set it to 0)",
                 args->output_padding[0], args->output_padding[1],
                 tg_shape_str(x, sx), tg_shape_str(W, sw));
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.OC = W->shape[0];
    g.OH = conv_len(g.H, g.kh, g.sh, g.ph, g.dh);
    g.OW = conv_len(g.W, g.kw, g.sw, g.pw, g.dw);
    check_size(op, &g, x, W, g.OH, g.OW);
    int P = P_of(&g), NP = g.N * P, ldk = ldk_of(&g);
    bool relu = args && args->relu;
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.OC, g.OH, g.OW});
    dlay d = {0};
    bool direct = conv_direct_layout(&g, &d);
    bool implicit = !direct && conv_implicit_ok(&g);
    ilay l = ilay_of(&g);
    float *col = direct     ? NULL
                 : implicit ? scratch(tp, (size_t)g.N, l.image)
                            : scratch(tp, (size_t)NP, (size_t)ldk);
    if (implicit && NP > 0) {
        conv_pad_images(&g, &l, x->data, col);
        nchw_out o = {y->data, b ? b->data : NULL,
                      scratch(tp, (size_t)NP, (size_t)g.OC), NULL, relu};
        conv_implicit_fwd(tp, &g, &l, col, W->data, &o);
    } else if (direct && NP > 0) {
        direct_job j = {.img = x->data,
                        .W = W->data,
                        .col_out = y->data,
                        .col_bias = b ? b->data : NULL,
                        .relu = relu};
        conv_direct_images(tp, &g, &d, &j, NULL);
    } else if (NP > 0) {
        float *yp = scratch(tp, (size_t)NP, (size_t)g.OC);
        nchw_out o = {y->data, b ? b->data : NULL, yp, NULL, relu};
        conv_im2col_gemm(&g, x->data, col, ldk, W->data, &o);
    }
    record_conv(tp, op, conv2d_backward, y, x, W, b,
                (conv_saved){g, col, direct, d, implicit, relu});
    return y;
}

tg_tensor *tg_conv2d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation)
{
    tg_conv2d_args a = {.stride = {stride, stride},
                        .padding = {padding, padding},
                        .dilation = {dilation, dilation}};
    return tg_conv2d_ex(tp, x, W, b, &a);
}

/* ---- conv_transpose2d -------------------------------------------------------
 * The adjoint of conv2d with W [C_in, C_out, kh, kw] read as a conv2d
 * weight [out = C_in, in = C_out, kh, kw]: the image side is y, the column
 * side x. Output length (PyTorch's ConvTranspose2d):
 *   (in - 1)*s - 2p + d(k-1) + output_padding + 1. */

/* y [N, C_out, OH, OW] = col2im(x' . W) + b [C_out], x' = x pixel-major
 * [N*P, C_in], W as [C_in, K].
 * dx' [N*P, C_in] += conv_im2col(dy) . W^T
 * dW [C_in, K]    += (conv_im2col(dy)^T . x')^T
 * db [C_out]      += sum over n, p of dy
 * Saved: x' (in 16-channel panels on the implicit path; nothing on the
 * direct path, which reads x). */
static void conv_transpose2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P, ldk = ldk_of(g);
    bool fresh;
    float *dx = conv_dx(tp, r, NP > 0, &fresh), *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    ilay l = ilay_of(g);
    /* on the implicit path the masked gradient goes straight into the
     * padded images the tiles read */
    bool pad_fused =
        s->relu && s->implicit && NP > 0 && (size_t)g->H * g->W <= PAD_RELU_MAX;
    float *xp = NULL;
    if (pad_fused) {
        double *sums =
            db ? tg_tape_alloc(tp, (size_t)g->N * g->C * sizeof *sums) : NULL;
        xp = scratch(tp, (size_t)g->N, l.image);
        conv_pad_images_relu(g, &l, r->out->data, dy, xp, sums);
        if (db)
            conv_bias_from_sums(g->N, g->C, sums, db);
    } else if (s->relu) { /* db from the masking pass */
        dy = relu_masked(tp, r->out, dy, g->C, db, NULL, false);
    } else if (db) {
        conv_bias_backward(g->N, g->C, g->H * g->W, dy, db);
    }
    if (NP == 0)
        return;
    if (s->direct) {
        if (!dx && !dW)
            return;
        direct_job j = {
            .img = dy,
            .col = dW ? x->data : NULL,
            .W = W->data,
            .col_out = dx,
            .col_add = !fresh,
            .part =
                dW ? scratch(tp, (size_t)g->N, (size_t)g->OC * s->d.KK) : NULL};
        conv_direct_images(tp, g, &s->d, &j, dW);
        return;
    }
    if (s->implicit) { /* conv_im2col(dy) read from dy padded */
        if (!xp) {
            xp = scratch(tp, (size_t)g->N, l.image);
            conv_pad_images(g, &l, dy, xp);
        }
        if (dx) { /* fresh: dx written, not added to */
            nchw_out o = {dx, NULL, scratch(tp, (size_t)NP, (size_t)g->OC),
                          fresh ? NULL : scratch(tp, (size_t)NP, (size_t)g->OC),
                          false};
            conv_implicit_fwd(tp, g, &l, xp, W->data, &o);
        }
        if (dW)
            conv_implicit_wgrad(tp, g, &l, xp, s->col, dW);
        return;
    }
    float *dcol = scratch(tp, (size_t)NP, (size_t)ldk);
    if (dx) { /* conv_im2col(dy) and dx' by chunks, as conv2d's forward */
        float *dxp = scratch(tp, (size_t)NP, (size_t)g->OC);
        nchw_out o = {dx, NULL, dxp,
                      fresh ? NULL : scratch(tp, (size_t)NP, (size_t)g->OC),
                      false};
        conv_im2col_gemm(g, dy, dcol, ldk, W->data, &o);
    } else {
        conv_im2col(g, dy, dcol, ldk);
    }
    if (dW) {
        float *tmp = scratch(tp, (size_t)K, (size_t)g->OC);
        tg_gemm(true, false, K, g->OC, NP, 1.0f, dcol, ldk, s->col, g->OC, 0.0f,
                tmp, g->OC);
        conv_add_transposed(g->OC, K, tmp, dW);
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
    g.H = convt_len(g.OH, g.kh, g.sh, g.ph, g.dh, oph);
    g.W = convt_len(g.OW, g.kw, g.sw, g.pw, g.dw, opw);
    check_size(op, &g, x, W, g.H, g.W);
    int P = P_of(&g), NP = g.N * P, ldk = ldk_of(&g);
    bool relu = args && args->relu;
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.C, g.H, g.W});
    dlay d = {0};
    bool direct = conv_direct_layout(&g, &d);
    /* x pixel-major for the backward, in 16-channel panels when its dW
     * is the implicit one */
    bool implicit = !direct && conv_implicit_ok(&g);
    float *xp = direct ? NULL : scratch(tp, (size_t)NP, (size_t)g.OC);
    if (direct && NP > 0) {
        direct_job j = {.col = x->data,
                        .W = W->data,
                        .img_out = y->data,
                        .img_bias = b ? b->data : NULL,
                        .img_set = true,
                        .relu = relu};
        conv_direct_images(tp, &g, &d, &j, NULL);
    } else if (NP > 0) { /* y = b (or 0) + col2im(x' . W), image by image */
        bool trans = conv_trans_ok(&g);
        if (trans)
            conv_implicit_trans(tp, &g, x->data, W->data, y->data, true,
                                b ? b->data : NULL, relu);
        else { /* col2im reads x' plain pixel-major */
            conv_to_pm(g.N, g.OC, P, x->data, xp);
            conv_gemm_col2im(tp, &g, xp, W->data, ldk, y->data, true,
                             b ? b->data : NULL, relu);
        }
        /* the backward's x': in panels for the implicit dW (a buffer of
         * its own when col2im used xp), else pixel-major */
        if (implicit && !trans)
            xp = scratch(tp, (size_t)NP, (size_t)g.OC);
        if (implicit)
            conv_to_panels(g.N, g.OC, P, x->data, xp);
        else if (trans)
            conv_to_pm(g.N, g.OC, P, x->data, xp);
    }
    record_conv(tp, op, conv_transpose2d_backward, y, x, W, b,
                (conv_saved){g, xp, direct, d, implicit, relu});
    return y;
}

tg_tensor *tg_conv_transpose2d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation)
{
    tg_conv2d_args a = {.stride = {stride, stride},
                        .padding = {padding, padding},
                        .dilation = {dilation, dilation},
                        .output_padding = {output_padding, output_padding}};
    return tg_conv_transpose2d_ex(tp, x, W, b, &a);
}

/* What the convolution tests share (test_conv_*.c, test_pool.c): random
 * tensors, the conv geometries and the edge cases, direct
 * references written from the definitions (not from the im2col
 * formulation), the forward + gradient check of one case, and the
 * GEMM-kernel rotation used under valgrind. Include after cmocka.h and
 * tg_autograd.h, with TEST_SEED defined (test_random.h: one random stream
 * per test program). */
#ifndef TG_TEST_CONV_COMMON_H
#define TG_TEST_CONV_COMMON_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_random.h"

static inline tg_tensor *rand4(int a, int b, int c, int d)
{
    tg_tensor *t = tg_tensor_new(4, (int[]){a, b, c, d});
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}

static inline tg_tensor *rand1(int n)
{
    tg_tensor *t = tg_tensor_new(1, &n);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}

/* ---- geometries ------------------------------------------------------------
 */

typedef struct conv_case {
    int N, C, H, W, OC, kh, kw;
    tg_conv2d_args a;
    bool bias;
} conv_case;

static inline int stride_h(const conv_case *c)
{
    return c->a.stride[0] ? c->a.stride[0] : 1;
}

static inline int stride_w(const conv_case *c)
{
    return c->a.stride[1] ? c->a.stride[1] : 1;
}

static inline int dil_h(const conv_case *c)
{
    return c->a.dilation[0] ? c->a.dilation[0] : 1;
}

static inline int dil_w(const conv_case *c)
{
    return c->a.dilation[1] ? c->a.dilation[1] : 1;
}

static inline int conv_out(int in, int k, int s, int p, int d)
{
    int span = in + 2 * p - d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

#define ARGS(sh, sw, ph, pw, dh, dw, oh, ow)                                   \
    {                                                                          \
        .stride = {sh, sw}, .padding = {ph, pw}, .dilation = {dh, dw},         \
        .output_padding = {                                                    \
            oh,                                                                \
            ow                                                                 \
        }                                                                      \
    }

/* The edge cases; conv_transpose2d reads C as its input channels
 * and OC as its output channels. */
static const conv_case edge_cases[] = {
    /* stride > kernel */
    {2, 3, 9, 8, 4, 2, 2, ARGS(3, 3, 0, 0, 1, 1, 0, 0), true},
    /* padding >= kernel/2, odd sizes */
    {2, 3, 7, 5, 5, 3, 3, ARGS(1, 1, 2, 1, 1, 1, 0, 0), true},
    /* 1x1 kernel, channels not a multiple of 8 */
    {3, 9, 5, 6, 11, 1, 1, ARGS(1, 1, 0, 0, 1, 1, 0, 0), true},
    /* a single image, non-square kernel, no bias */
    {1, 2, 6, 7, 3, 2, 3, ARGS(1, 2, 1, 0, 1, 1, 0, 0), false},
    /* dilation > 1 */
    {2, 2, 9, 8, 3, 3, 2, ARGS(1, 1, 1, 1, 2, 3, 0, 0), true},
    /* the VAE's k4 s2 p1 */
    {2, 3, 8, 6, 4, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
    /* output padding (conv_transpose2d), stride 3 */
    {2, 2, 4, 3, 3, 3, 2, ARGS(3, 2, 1, 0, 1, 1, 2, 1), true},
    /* output padding below the dilation but not the stride */
    {1, 2, 4, 4, 2, 2, 2, ARGS(1, 1, 0, 0, 3, 2, 2, 1), true},
    /* 17 channels in, 1 out */
    {2, 17, 3, 4, 1, 2, 2, ARGS(1, 1, 0, 1, 1, 1, 0, 0), true},
    /* one channel in (conv2d's direct kernels), k4 s2 p1, 5 out */
    {2, 1, 9, 7, 5, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
    /* 6 in, one out (conv_transpose2d's direct kernels, its four phases
     * together), output padding */
    {2, 6, 5, 4, 1, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 1, 1), true},
    /* one channel in, three out, no bias: the direct kernels' fused ReLU
     * backward without bias sums */
    {2, 1, 7, 6, 3, 3, 2, ARGS(1, 2, 1, 0, 1, 1, 0, 0), false},
    /* one channel on both sides, a single image: stride > kernel rows,
     * dilation, padding */
    {1, 1, 6, 5, 1, 3, 2, ARGS(3, 1, 2, 0, 2, 1, 0, 0), false},
    /* 1x1 kernels, stride 2, one channel in; one out with output padding */
    {2, 1, 5, 6, 3, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1), true},
    {2, 3, 5, 6, 1, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1), true},
    /* 16 out (conv2d's implicit GEMM); 16 in (conv_transpose2d's) */
    {2, 3, 6, 5, 16, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1), true},
    {2, 16, 4, 3, 2, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1), true},
    /* 48 out: the AVX-512 implicit tiles' two panels and a last odd one;
     * 9 pixels, one more than their 8 rows */
    {1, 2, 5, 5, 48, 2, 2, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
};

enum { N_EDGE = sizeof edge_cases / sizeof edge_cases[0] };

static inline void describe(const conv_case *c, const char *op, char *buf)
{
    sprintf(buf,
            "%s x[%d,%d,%d,%d] k%dx%d oc %d s(%d,%d) p(%d,%d) d(%d,%d) "
            "op(%d,%d)%s",
            op, c->N, c->C, c->H, c->W, c->kh, c->kw, c->OC, stride_h(c),
            stride_w(c), c->a.padding[0], c->a.padding[1], dil_h(c), dil_w(c),
            c->a.output_padding[0], c->a.output_padding[1],
            c->bias ? "" : " no bias");
}

/* ---- direct references ------------------------------------------------------
 * conv2d:  y[n,o,h,w] = b[o] + sum_{c,i,j} x[n,c,h*s-p+i*d, w*s-p+j*d]
 * W[o,c,i,j] convT:   y[n,o,h*s-p+i*d, w*s-p+j*d] += x[n,c,h,w] W[c,o,i,j],
 * then + b[o] */

static inline double *ref_conv2d(const conv_case *c, const tg_tensor *x,
                                 const tg_tensor *W, const tg_tensor *b,
                                 int *OH, int *OW)
{
    int sh = stride_h(c), sw = stride_w(c), dh = dil_h(c), dw = dil_w(c);
    int ph = c->a.padding[0], pw = c->a.padding[1];
    int oh_n = conv_out(c->H, c->kh, sh, ph, dh);
    int ow_n = conv_out(c->W, c->kw, sw, pw, dw);
    double *y = calloc((size_t)c->N * c->OC * oh_n * ow_n, sizeof *y);
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            for (int h = 0; h < oh_n; h++)
                for (int w = 0; w < ow_n; w++) {
                    double acc = b ? b->data[o] : 0.0;
                    for (int ch = 0; ch < c->C; ch++)
                        for (int i = 0; i < c->kh; i++)
                            for (int j = 0; j < c->kw; j++) {
                                int ih = h * sh - ph + i * dh;
                                int iw = w * sw - pw + j * dw;
                                if (ih < 0 || ih >= c->H || iw < 0 ||
                                    iw >= c->W)
                                    continue;
                                acc +=
                                    (double)
                                        x->data[((n * c->C + ch) * c->H + ih) *
                                                    c->W +
                                                iw] *
                                    W->data[((o * c->C + ch) * c->kh + i) *
                                                c->kw +
                                            j];
                            }
                    y[((n * c->OC + o) * oh_n + h) * ow_n + w] = acc;
                }
    *OH = oh_n, *OW = ow_n;
    return y;
}

static inline double *ref_conv_transpose2d(const conv_case *c,
                                           const tg_tensor *x,
                                           const tg_tensor *W,
                                           const tg_tensor *b, int *OH, int *OW)
{
    int sh = stride_h(c), sw = stride_w(c), dh = dil_h(c), dw = dil_w(c);
    int ph = c->a.padding[0], pw = c->a.padding[1];
    int oh_n = (c->H - 1) * sh - 2 * ph + dh * (c->kh - 1) +
               c->a.output_padding[0] + 1;
    int ow_n = (c->W - 1) * sw - 2 * pw + dw * (c->kw - 1) +
               c->a.output_padding[1] + 1;
    double *y = calloc((size_t)c->N * c->OC * oh_n * ow_n, sizeof *y);
    for (int n = 0; n < c->N; n++)
        for (int ch = 0; ch < c->C; ch++)
            for (int h = 0; h < c->H; h++)
                for (int w = 0; w < c->W; w++)
                    for (int o = 0; o < c->OC; o++)
                        for (int i = 0; i < c->kh; i++)
                            for (int j = 0; j < c->kw; j++) {
                                int yh = h * sh - ph + i * dh;
                                int yw = w * sw - pw + j * dw;
                                if (yh < 0 || yh >= oh_n || yw < 0 ||
                                    yw >= ow_n)
                                    continue;
                                y[((n * c->OC + o) * oh_n + yh) * ow_n + yw] +=
                                    (double)
                                        x->data[((n * c->C + ch) * c->H + h) *
                                                    c->W +
                                                w] *
                                    W->data[((ch * c->OC + o) * c->kh + i) *
                                                c->kw +
                                            j];
                            }
    for (int n = 0; b && n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            for (int k = 0; k < oh_n * ow_n; k++)
                y[(n * c->OC + o) * oh_n * ow_n + k] += b->data[o];
    *OH = oh_n, *OW = ow_n;
    return y;
}

/* ---- the graphs under gradient check ----------------------------------- */

static inline tg_tensor *f_conv2d(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const conv_case *c = ctx;
    return tg_conv2d_ex(tp, in[0], in[1], c->bias ? in[2] : NULL, &c->a);
}

static inline tg_tensor *f_conv_transpose2d(tg_tape *tp, tg_tensor **in,
                                            void *ctx)
{
    const conv_case *c = ctx;
    return tg_conv_transpose2d_ex(tp, in[0], in[1], c->bias ? in[2] : NULL,
                                  &c->a);
}

typedef struct worst {
    double abs_err, rel_err;
} worst;

static inline void note(worst *w, const tg_gradcheck_report *r)
{
    if (r->max_abs_err > w->abs_err)
        w->abs_err = r->max_abs_err;
    if (r->max_rel_err > w->rel_err)
        w->rel_err = r->max_rel_err;
}

/* Forward against the reference, then the gradient check of x, W, b. */
static inline void check_case(const conv_case *c, bool transpose, worst *w)
{
    char name[160];
    describe(c, transpose ? "conv_transpose2d" : "conv2d", name);
    tg_tensor *in[3];
    in[0] = rand4(c->N, c->C, c->H, c->W);
    in[1] = transpose ? rand4(c->C, c->OC, c->kh, c->kw)
                      : rand4(c->OC, c->C, c->kh, c->kw);
    in[2] = rand1(c->OC);
    int OH, OW;
    double *ref =
        transpose
            ? ref_conv_transpose2d(c, in[0], in[1], c->bias ? in[2] : NULL, &OH,
                                   &OW)
            : ref_conv2d(c, in[0], in[1], c->bias ? in[2] : NULL, &OH, &OW);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = transpose ? f_conv_transpose2d(tp, in, (void *)c)
                             : f_conv2d(tp, in, (void *)c);
    assert_int_equal(y->ndim, 4);
    assert_int_equal(y->shape[0], c->N);
    assert_int_equal(y->shape[1], c->OC);
    assert_int_equal(y->shape[2], OH);
    assert_int_equal(y->shape[3], OW);
    double max_diff = 0.0;
    for (size_t k = 0; k < y->size; k++)
        max_diff = fmax(max_diff, fabs(y->data[k] - ref[k]));
    if (max_diff > 1e-5)
        printf("  forward differs by %g: %s\n", max_diff, name);
    assert_true(max_diff <= 1e-5);
    free(ref);
    tg_tape_free(tp);

    int n_in = c->bias ? 3 : 2;
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(transpose ? f_conv_transpose2d : f_conv2d, n_in, in,
                           (void *)c, NULL, &rep);
    if (!ok)
        tg_gradcheck_print(&rep, name);
    note(w, &rep);
    assert_true(ok);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
}

/* Under valgrind (TG_TEST_QUICK=1, set by meson test --setup valgrind) a
 * loop of cases over the GEMM kernels gives each case to one of the
 * kernels the CPU has, in turn, instead of to all: every case and every
 * kernel still run (the test took 500 s under valgrind on a Zen 4). */
static inline int kernels_available(const char *const *names, int n)
{
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int avail = 0;
    for (int k = 0; k < n; k++)
        avail += tg_gemm_set_kernel(names[k]);
    assert_true(tg_gemm_set_kernel(saved));
    return avail;
}

static inline bool quick(void)
{
    const char *q = getenv("TG_TEST_QUICK");
    return q && !strcmp(q, "1");
}

/* Whether case `item` runs on the rank-th available kernel (of avail). */
static inline bool case_runs(int rank, int avail, long item)
{
    if (!quick() || avail <= 1)
        return true;
    return item % avail == rank;
}

#endif

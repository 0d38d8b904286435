/* Convolution and pooling: forward values against direct loop nests written
 * here from the definitions (not from the im2col formulation), gradient
 * checks on edge-case and random geometries, thread-count independence, and
 * misuse aborts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"

#define TEST_SEED 20261202
#include "test_random.h"

static tg_tensor *rand4(int a, int b, int c, int d)
{
    tg_tensor *t = tg_tensor_new(4, (int[]){a, b, c, d});
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}

static tg_tensor *rand1(int n)
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

static int stride_h(const conv_case *c)
{
    return c->a.stride[0] ? c->a.stride[0] : 1;
}
static int stride_w(const conv_case *c)
{
    return c->a.stride[1] ? c->a.stride[1] : 1;
}
static int dil_h(const conv_case *c)
{
    return c->a.dilation[0] ? c->a.dilation[0] : 1;
}
static int dil_w(const conv_case *c)
{
    return c->a.dilation[1] ? c->a.dilation[1] : 1;
}

static int conv_out(int in, int k, int s, int p, int d)
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

/* Whether some output position along an axis reads a real input element
 * (else the op reads only padding and every gradient but the bias's is 0). */
static bool axis_touches(int in, int out, int k, int s, int p, int d)
{
    for (int o = 0; o < out; o++)
        for (int i = 0; i < k; i++)
            if (o * s - p + i * d >= 0 && o * s - p + i * d < in)
                return true;
    return false;
}

/* A random geometry whose conv2d output is at least 1x1 (transpose: the
 * output padding is set below the stride or dilation). */
static conv_case random_case(bool transpose)
{
    conv_case c;
    for (;;) {
        memset(&c, 0, sizeof c);
        c.N = randint(1, 3), c.C = randint(1, 5), c.OC = randint(1, 5);
        c.H = randint(1, 9), c.W = randint(1, 9);
        c.kh = randint(1, 4), c.kw = randint(1, 4);
        c.a.stride[0] = randint(1, 4), c.a.stride[1] = randint(1, 4);
        c.a.padding[0] = randint(0, 3), c.a.padding[1] = randint(0, 3);
        c.a.dilation[0] = randint(1, 3), c.a.dilation[1] = randint(1, 3);
        c.bias = uniform() < 0.7;
        if (transpose) {
            int mh = stride_h(&c) > dil_h(&c) ? stride_h(&c) : dil_h(&c);
            int mw = stride_w(&c) > dil_w(&c) ? stride_w(&c) : dil_w(&c);
            c.a.output_padding[0] = randint(0, mh - 1);
            c.a.output_padding[1] = randint(0, mw - 1);
            int oh = (c.H - 1) * stride_h(&c) - 2 * c.a.padding[0] +
                     dil_h(&c) * (c.kh - 1) + c.a.output_padding[0] + 1;
            int ow = (c.W - 1) * stride_w(&c) - 2 * c.a.padding[1] +
                     dil_w(&c) * (c.kw - 1) + c.a.output_padding[1] + 1;
            if (oh >= 1 && ow >= 1 && oh * ow <= 150 &&
                axis_touches(oh, c.H, c.kh, stride_h(&c), c.a.padding[0],
                             dil_h(&c)) &&
                axis_touches(ow, c.W, c.kw, stride_w(&c), c.a.padding[1],
                             dil_w(&c)))
                return c;
        } else {
            int oh =
                conv_out(c.H, c.kh, stride_h(&c), c.a.padding[0], dil_h(&c));
            int ow =
                conv_out(c.W, c.kw, stride_w(&c), c.a.padding[1], dil_w(&c));
            if (oh >= 1 && ow >= 1 &&
                axis_touches(c.H, oh, c.kh, stride_h(&c), c.a.padding[0],
                             dil_h(&c)) &&
                axis_touches(c.W, ow, c.kw, stride_w(&c), c.a.padding[1],
                             dil_w(&c)))
                return c;
        }
    }
}

static void describe(const conv_case *c, const char *op, char *buf)
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

static double *ref_conv2d(const conv_case *c, const tg_tensor *x,
                          const tg_tensor *W, const tg_tensor *b, int *OH,
                          int *OW)
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

static double *ref_conv_transpose2d(const conv_case *c, const tg_tensor *x,
                                    const tg_tensor *W, const tg_tensor *b,
                                    int *OH, int *OW)
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

static tg_tensor *f_conv2d(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const conv_case *c = ctx;
    return tg_conv2d_ex(tp, in[0], in[1], c->bias ? in[2] : NULL, &c->a);
}

static tg_tensor *f_conv_transpose2d(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const conv_case *c = ctx;
    return tg_conv_transpose2d_ex(tp, in[0], in[1], c->bias ? in[2] : NULL,
                                  &c->a);
}

typedef struct worst {
    double abs_err, rel_err;
} worst;

static void note(worst *w, const tg_gradcheck_report *r)
{
    if (r->max_abs_err > w->abs_err)
        w->abs_err = r->max_abs_err;
    if (r->max_rel_err > w->rel_err)
        w->rel_err = r->max_rel_err;
}

/* Forward against the reference, then the gradient check of x, W, b. */
static void check_case(const conv_case *c, bool transpose, worst *w)
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

static void test_conv2d(void **state)
{
    (void)state;
    worst w = {0, 0};
    for (int k = 0; k < N_EDGE; k++) {
        conv_case c = edge_cases[k];
        c.a.output_padding[0] = c.a.output_padding[1] = 0;
        if (conv_out(c.H, c.kh, stride_h(&c), c.a.padding[0], dil_h(&c)) < 1 ||
            conv_out(c.W, c.kw, stride_w(&c), c.a.padding[1], dil_w(&c)) < 1)
            continue;
        check_case(&c, false, &w);
    }
    for (int k = 0; k < 20; k++) {
        conv_case c = random_case(false);
        check_case(&c, false, &w);
    }
    printf("  conv2d: worst gradcheck abs err %.3g, rel err %.3g\n", w.abs_err,
           w.rel_err);
}

/* Under valgrind (TG_TEST_QUICK=1, set by meson test --setup valgrind) a
 * loop of cases over the GEMM kernels gives each case to one of the
 * kernels the CPU has, in turn, instead of to all: every case and every
 * kernel still run (the test took 500 s under valgrind on a Zen 4). */
static int kernels_available(const char *const *names, int n)
{
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int avail = 0;
    for (int k = 0; k < n; k++)
        avail += tg_gemm_set_kernel(names[k]);
    assert_true(tg_gemm_set_kernel(saved));
    return avail;
}

static bool quick(void)
{
    const char *q = getenv("TG_TEST_QUICK");
    return q && !strcmp(q, "1");
}

/* Whether case `item` runs on the rank-th available kernel (of avail). */
static bool case_runs(int rank, int avail, long item)
{
    if (!quick() || avail <= 1)
        return true;
    return item % avail == rank;
}

/* The edge cases through every GEMM kernel this CPU can run (each tile of
 * the AVX2 family, the portable one): the convolutions call the kernel's
 * transpose for their layout changes and pick tiles by channel count. */
static void test_every_gemm_kernel(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "avx2-4x24",
                                        "avx2-6x16", "portable"};
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int ran = 0, avail = kernels_available(names, 5);
    for (int k = 0; k < 5; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        int rank = ran++;
        worst w = {0, 0};
        for (int e = 0; e < N_EDGE; e++) {
            if (!case_runs(rank, avail, e))
                continue;
            conv_case c = edge_cases[e];
            check_case(&c, true, &w);
            c.a.output_padding[0] = c.a.output_padding[1] = 0;
            if (conv_out(c.H, c.kh, stride_h(&c), c.a.padding[0], dil_h(&c)) >=
                    1 &&
                conv_out(c.W, c.kw, stride_w(&c), c.a.padding[1], dil_w(&c)) >=
                    1)
                check_case(&c, false, &w);
        }
        printf("  %s: worst gradcheck abs err %.3g, rel err %.3g\n", names[k],
               w.abs_err, w.rel_err);
    }
    assert_true(tg_gemm_set_kernel(saved));
    assert_true(ran >= 1); /* portable always runs */
}

static void test_conv_transpose2d(void **state)
{
    (void)state;
    worst w = {0, 0};
    for (int k = 0; k < N_EDGE; k++)
        check_case(&edge_cases[k], true, &w);
    for (int k = 0; k < 20; k++) {
        conv_case c = random_case(true);
        check_case(&c, true, &w);
    }
    printf("  conv_transpose2d: worst gradcheck abs err %.3g, rel err %.3g\n",
           w.abs_err, w.rel_err);
}

/* The square-geometry entry points (int stride, padding, dilation) have
 * their own gradient check: stride 2, padding 1, dilation 2, and for the
 * transpose an output_padding of 1. */
static tg_tensor *f_conv2d_plain(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    return tg_conv2d(tp, in[0], in[1], in[2], 2, 1, 2);
}

static tg_tensor *f_conv_transpose2d_plain(tg_tape *tp, tg_tensor **in,
                                           void *ctx)
{
    (void)ctx;
    return tg_conv_transpose2d(tp, in[0], in[1], in[2], 2, 1, 1, 2);
}

static void test_square_entry_points(void **state)
{
    (void)state;
    for (int transpose = 0; transpose < 2; transpose++) {
        tg_tensor *in[3] = {rand4(2, 3, 6, 5),
                            transpose ? rand4(3, 2, 3, 3) : rand4(2, 3, 3, 3),
                            rand1(2)};
        tg_gradcheck_report rep;
        bool ok =
            tg_gradcheck(transpose ? f_conv_transpose2d_plain : f_conv2d_plain,
                         3, in, NULL, NULL, &rep);
        tg_gradcheck_print(&rep, transpose ? "conv_transpose2d (int args)"
                                           : "conv2d (int args)");
        assert_true(ok);
        for (int i = 0; i < 3; i++)
            tg_tensor_free(in[i]);
    }
}

/* ---- pooling
 * ------------------------------------------------------------------ */

typedef struct pool_case {
    int N, C, H, W, k, s, p;
} pool_case;

static const pool_case pool_edges[] = {
    {2, 3, 6, 5, 2, 2, 0}, /* the usual 2x2, odd width */
    {1, 2, 7, 7, 3, 2, 1}, /* stride != kernel, padding */
    {2, 1, 5, 8, 2, 3, 1}, /* stride > kernel, padding = k/2 */
    {1, 9, 4, 3, 1, 1, 0}, /* 1x1 window */
    {1, 1, 3, 3, 3, 1, 1}, /* windows mostly padding */
};

/* Distinct values at least 0.1 apart (a random permutation), so that no
 * finite-difference step moves the arg-max. */
static tg_tensor *distinct4(int a, int b, int c, int d)
{
    tg_tensor *t = tg_tensor_new(4, (int[]){a, b, c, d});
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)i * 0.1f - (float)t->size * 0.05f;
    for (size_t i = t->size; i-- > 1;) {
        size_t j = (size_t)(uniform() * (double)(i + 1));
        float v = t->data[i];
        t->data[i] = t->data[j];
        t->data[j] = v;
    }
    return t;
}

static tg_tensor *f_max_pool(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const pool_case *c = ctx;
    return tg_max_pool2d(tp, in[0], c->k, c->s, c->p);
}
static tg_tensor *f_avg_pool(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const pool_case *c = ctx;
    return tg_avg_pool2d(tp, in[0], c->k, c->s, c->p);
}
static tg_tensor *f_upsample(tg_tape *tp, tg_tensor **in, void *ctx)
{
    return tg_upsample2d(tp, in[0], *(const int *)ctx);
}

/* The window's max (is_max) or its sum over real elements / k^2. */
static double ref_pool(const pool_case *c, const float *plane, int oh, int ow,
                       bool is_max)
{
    double acc = is_max ? -INFINITY : 0.0;
    for (int i = 0; i < c->k; i++)
        for (int j = 0; j < c->k; j++) {
            int h = oh * c->s - c->p + i, w = ow * c->s - c->p + j;
            if (h < 0 || h >= c->H || w < 0 || w >= c->W)
                continue;
            double v = plane[h * c->W + w];
            acc = is_max ? fmax(acc, v) : acc + v;
        }
    return is_max ? acc : acc / (c->k * c->k);
}

static void check_pool(const pool_case *c, bool is_max, worst *w)
{
    tg_tensor *x = distinct4(c->N, c->C, c->H, c->W);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y =
        is_max ? f_max_pool(tp, &x, (void *)c) : f_avg_pool(tp, &x, (void *)c);
    int OH = (c->H + 2 * c->p - c->k) / c->s + 1;
    int OW = (c->W + 2 * c->p - c->k) / c->s + 1;
    assert_int_equal(y->shape[2], OH);
    assert_int_equal(y->shape[3], OW);
    for (int t = 0; t < c->N * c->C; t++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double ref =
                    ref_pool(c, x->data + t * c->H * c->W, oh, ow, is_max);
                assert_true(fabs(y->data[(t * OH + oh) * OW + ow] - ref) <
                            1e-5);
            }
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(is_max ? f_max_pool : f_avg_pool, 1, &x, (void *)c,
                           NULL, &rep);
    if (!ok)
        tg_gradcheck_print(&rep, is_max ? "max_pool2d" : "avg_pool2d");
    note(w, &rep);
    assert_true(ok);
    tg_tensor_free(x);
}

static void test_pooling(void **state)
{
    (void)state;
    for (int is_max = 0; is_max < 2; is_max++) {
        worst w = {0, 0};
        for (size_t k = 0; k < sizeof pool_edges / sizeof *pool_edges; k++)
            check_pool(&pool_edges[k], is_max, &w);
        for (int k = 0; k < 20; k++) {
            pool_case c = {randint(1, 3),
                           randint(1, 4),
                           randint(1, 9),
                           randint(1, 9),
                           randint(1, 4),
                           randint(1, 4),
                           0};
            c.p = randint(0, c.k / 2);
            if (c.H + 2 * c.p < c.k || c.W + 2 * c.p < c.k)
                continue;
            check_pool(&c, is_max, &w);
        }
        printf("  %s: worst gradcheck abs err %.3g, rel err %.3g\n",
               is_max ? "max_pool2d" : "avg_pool2d", w.abs_err, w.rel_err);
    }
}

/* Ties go to the first element in row-major window order. */
static void test_max_pool_ties(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new(4, (int[]){1, 1, 2, 4});
    float v[] = {1, 3, 3, 0, 3, 2, 0, 0};
    memcpy(x->data, v, sizeof v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_max_pool2d(tp, x, 2, 2, 0);
    assert_float_equal(y->data[0], 3.0f, 0.0f);
    assert_float_equal(y->data[1], 3.0f, 0.0f);
    tg_backward(tp, tg_sum(tp, y));
    float want[] = {0, 1, 1, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        assert_float_equal(x->grad[i], want[i], 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void test_upsample(void **state)
{
    (void)state;
    worst w = {0, 0};
    for (int k = 0; k < 6; k++) {
        int s = randint(1, 3);
        tg_tensor *x =
            rand4(randint(1, 2), randint(1, 3), randint(1, 5), randint(1, 5));
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = tg_upsample2d(tp, x, s);
        int H = x->shape[2], W = x->shape[3];
        for (int t = 0; t < x->shape[0] * x->shape[1]; t++)
            for (int h = 0; h < H * s; h++)
                for (int c = 0; c < W * s; c++)
                    assert_float_equal(y->data[(t * H * s + h) * W * s + c],
                                       x->data[(t * H + h / s) * W + c / s],
                                       0.0f);
        tg_tape_free(tp);
        tg_gradcheck_report rep;
        assert_true(tg_gradcheck(f_upsample, 1, &x, &s, NULL, &rep));
        note(&w, &rep);
        tg_tensor_free(x);
    }
    printf("  upsample2d: worst gradcheck abs err %.3g, rel err %.3g\n",
           w.abs_err, w.rel_err);
}

/* avg_pool2d divides by kernel^2: with kernel 46341 (padding 23170 keeps
 * the output 2 x 2 on a 2 x 2 image) that product overflowed int, and the
 * averages of ones came out negative. Every window holds the whole image. */
static void test_avg_pool_huge_kernel(void **state)
{
    (void)state;
    const int k = 46341;
    const float inv = 1.0f / ((float)k * (float)k);
    tg_tensor *x = tg_tensor_new(4, (int[]){1, 1, 2, 2});
    for (int i = 0; i < 4; i++)
        x->data[i] = 1.0f;
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_avg_pool2d(tp, x, k, 1, k / 2);
    assert_int_equal(y->shape[2], 2);
    assert_int_equal(y->shape[3], 2);
    for (int i = 0; i < 4; i++)
        assert_float_equal(y->data[i], 4.0f * inv, 1e-15f);
    tg_backward(tp, tg_sum(tp, y));
    for (int i = 0; i < 4; i++)
        assert_float_equal(x->grad[i], 4.0f * inv, 1e-15f);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* avg_pool2d and avg_pool1d sum and divide in double, rounded once: a
 * window of one value averages to it (nine 0.1s gave 0.10000001, a float
 * running sum), also near FLT_MAX (four 3e38s overflowed to Inf). */
static void test_avg_pool_of_a_constant_is_the_constant(void **state)
{
    (void)state;
    const float vals[] = {0.1f, 3e38f, -3e38f, 1.9999999f, 7.0f};
    for (int v = 0; v < 5; v++)
        for (int k = 2; k <= 3; k++) {
            tg_tensor *x = tg_tensor_new(4, (int[]){1, 1, k, k});
            for (int i = 0; i < k * k; i++)
                x->data[i] = vals[v];
            tg_tape *tp = tg_tape_new();
            tg_tensor *y = tg_avg_pool2d(tp, x, k, 0, 0);
            assert_true(y->data[0] == vals[v]);
            tg_tensor *x1 = tg_reshape(tp, x, 3, (int[]){1, 1, k * k});
            y = tg_avg_pool1d(tp, x1, k * k, 0, 0);
            assert_true(y->data[0] == vals[v]);
            tg_tape_free(tp);
            tg_tensor_free(x);
        }
}

/* The gradient is dy / k^2 rounded once, as the means' (a float 1/k^2
 * times dy was up to an ulp off: 3 / 7 came out 0.42857146). */
static void test_avg_pool_gradient_is_the_rounded_quotient(void **state)
{
    (void)state;
    const int ks[] = {7, 13, 97};
    const float dys[] = {3.0f, 1.5f, 5.0f, 0.1f};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++) {
            int k = ks[a];
            tg_tensor *x = tg_tensor_new(3, (int[]){1, 1, k});
            tg_tensor_require_grad(x);
            tg_tape *tp = tg_tape_new();
            tg_tensor *y = tg_avg_pool1d(tp, x, k, 0, 0);
            tg_backward_with(tp, y, &dys[b]);
            for (int i = 0; i < k; i++)
                assert_true(x->grad[i] == (float)((double)dys[b] / k));
            tg_tape_free(tp);
            tg_tensor_free(x);
        }
}

/* ---- direct and implicit kernels against the im2col path -----------------
 * With an AVX2 or AVX-512 GEMM kernel, conv2d with one input channel and
 * conv_transpose2d with one output channel take direct kernels (phase
 * planes, no im2col), and column sides of 16k channels the implicit GEMM
 * (patch rows read from the padded image); with the portable kernel, the
 * im2col path. Both must give the same values and gradients (to rounding)
 * on grids larger than one vector block, channel counts off multiples of
 * 4, and the geometries the kernels treat apart. */
typedef struct path_case {
    bool transpose;
    int N, C, H, W, OC, kh, kw; /* conv_transpose2d: C in, OC out */
    tg_conv2d_args a;
} path_case;

static const path_case path_cases[] = {
    /* the VAE's first and last layers, 7 channels */
    {false, 3, 1, 28, 28, 7, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 3, 7, 14, 14, 1, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    /* k3 s2: phases with 4, 2, 2 and 1 taps; output padding */
    {true, 2, 5, 9, 8, 1, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    /* stride 1 (one phase), 9 channels */
    {true, 2, 9, 10, 9, 1, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    {false, 2, 1, 10, 9, 9, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    /* non-square everything, dilation, stride > kernel */
    {false, 2, 1, 17, 13, 6, 3, 5, ARGS(1, 3, 2, 1, 2, 1, 0, 0)},
    {true, 1, 6, 7, 5, 1, 2, 3, ARGS(3, 2, 0, 1, 2, 1, 1, 0)},
    {false, 1, 1, 19, 23, 2, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 0, 0)},
    /* 1x1 */
    {false, 2, 1, 9, 11, 5, 1, 1, ARGS(1, 1, 0, 0, 1, 1, 0, 0)},
    {true, 2, 5, 9, 11, 1, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1)},
    /* implicit GEMM (16k channels on the column side, more than one on
     * the image side): the VAE's 32 -> 64 and 64 -> 32 layers */
    /* (7 and 40 images: more than one block of dW's image blocks) */
    {false, 7, 32, 14, 14, 64, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {false, 40, 3, 5, 5, 16, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 3, 64, 7, 7, 32, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    /* non-square kernel, stride and dilation; 1x1 stride 2 */
    {false, 2, 3, 9, 8, 16, 3, 2, ARGS(2, 1, 1, 0, 1, 2, 0, 0)},
    {false, 1, 5, 7, 6, 32, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 0, 0)},
    /* stride > kernel; padding >= kernel/2 */
    {false, 2, 4, 9, 9, 16, 2, 2, ARGS(3, 3, 0, 0, 1, 1, 0, 0)},
    {false, 2, 6, 5, 7, 16, 3, 3, ARGS(1, 1, 2, 2, 1, 1, 0, 0)},
    /* transposed: output padding, dilation, odd sizes */
    {true, 2, 16, 5, 4, 3, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    {true, 1, 32, 4, 5, 2, 2, 3, ARGS(3, 2, 0, 1, 2, 1, 1, 0)},
    /* 48 channels: the AVX-512 tiles' panel pair and a last odd panel */
    {false, 3, 5, 6, 7, 48, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    {true, 2, 48, 4, 5, 3, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    /* the image side gathered by phase (16k channels there): conv2d's dx,
     * conv_transpose2d's y; stride 3 with k4 (2, 1, 1 taps per phase),
     * dilation 2 with stride 2 (one phase takes every tap, the other
     * none), stride > kernel, 1x1, 48 channels (an odd panel), output
     * padding, more than one block of images */
    {false, 2, 16, 11, 10, 3, 4, 4, ARGS(3, 3, 2, 1, 1, 1, 0, 0)},
    {true, 2, 3, 5, 6, 16, 4, 4, ARGS(3, 3, 2, 1, 1, 1, 2, 1)},
    {false, 2, 16, 9, 8, 5, 3, 3, ARGS(2, 2, 1, 2, 2, 2, 0, 0)},
    {true, 2, 5, 4, 5, 16, 3, 3, ARGS(2, 2, 1, 2, 2, 2, 1, 1)},
    {false, 1, 32, 9, 8, 2, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 0, 0)},
    {true, 1, 2, 4, 3, 32, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 2, 3)},
    {false, 2, 16, 7, 9, 4, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 0, 0)},
    {true, 2, 4, 4, 5, 16, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1)},
    {false, 2, 48, 8, 8, 3, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 2, 3, 4, 4, 48, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 30, 2, 3, 3, 16, 3, 2, ARGS(2, 1, 1, 0, 1, 2, 1, 0)},
};

/* Forward values, then the gradients of x, W and b for a random seed
 * gradient, concatenated into out (returns the count). */
static size_t run_path(const path_case *c, tg_tensor **in, const float *seed,
                       float *out)
{
    for (int i = 0; i < 3; i++)
        tg_tensor_zero_grad(in[i]);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = c->transpose
                       ? tg_conv_transpose2d_ex(tp, in[0], in[1], in[2], &c->a)
                       : tg_conv2d_ex(tp, in[0], in[1], in[2], &c->a);
    tg_backward_with(tp, y, seed);
    size_t k = 0;
    for (size_t i = 0; i < y->size; i++)
        out[k++] = y->data[i];
    for (int j = 0; j < 3; j++)
        for (size_t i = 0; i < in[j]->size; i++)
            out[k++] = in[j]->grad[i];
    tg_tape_free(tp);
    return k;
}

/* The implicit GEMM's products make the same FMA chains with the AVX2 and
 * the AVX-512 tiles: conv2d's y and dW, conv_transpose2d's dx and dW are
 * the same bits (the other products go through the GEMM, whose K blocks
 * may differ between the families). out as run_path's. */
static void assert_implicit_same_bits(const path_case *c, tg_tensor **in,
                                      size_t ny, const float *a, const float *z)
{
    /* the implicit GEMM: 16k channels on the column side and more than one
     * on the image side; the gathered image side: 16k channels there (and
     * at most 64 stride phases) */
    int col_ch = c->transpose ? c->C : c->OC,
        img_ch = c->transpose ? c->OC : c->C;
    bool implicit = col_ch % 16 == 0 && img_ch > 1,
         gathered = img_ch % 16 == 0 &&
                    (c->a.stride[0] ? c->a.stride[0] : 1) * 1L *
                            (c->a.stride[1] ? c->a.stride[1] : 1) <=
                        64;
    size_t nx = in[0]->size, nw = in[1]->size;
    /* out: y [0, ny), dx [ny, ny + nx), dW [ny + nx, ny + nx + nw) */
    size_t range[3][2] = {{0, ny}, {ny, ny + nx}, {ny + nx, ny + nx + nw}};
    /* conv2d: y, dW implicit, dx gathered; conv_transpose2d: y gathered,
     * dx, dW implicit */
    bool same[3] = {c->transpose ? gathered : implicit,
                    c->transpose ? implicit : gathered, implicit};
    for (int p = 0; p < 3; p++)
        for (size_t e = range[p][0]; same[p] && e < range[p][1]; e++)
            assert_memory_equal(&a[e], &z[e], sizeof a[e]);
}

static void test_kernel_paths_agree(void **state)
{
    (void)state;
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    if (!tg_gemm_set_kernel("avx2")) {
        printf("  no AVX2 here: the direct and implicit kernels do not "
               "run\n");
        return;
    }
    const bool avx512 = tg_gemm_set_kernel("avx512");
    if (!avx512)
        printf("  no AVX-512 here: its implicit tiles are not run\n");
    enum { CAP = 1 << 17 };
    float *a = malloc(CAP * sizeof *a), *b = malloc(CAP * sizeof *b),
          *z = malloc(CAP * sizeof *z), *seed = malloc(CAP * sizeof *seed);
    for (size_t e = 0; e < CAP; e++)
        seed[e] = (float)(uniform() * 2.0 - 1.0);
    double worst = 0.0;
    for (size_t k = 0; k < sizeof path_cases / sizeof path_cases[0]; k++) {
        const path_case *c = &path_cases[k];
        tg_tensor *in[3] = {rand4(c->N, c->C, c->H, c->W),
                            c->transpose ? rand4(c->C, c->OC, c->kh, c->kw)
                                         : rand4(c->OC, c->C, c->kh, c->kw),
                            rand1(c->OC)};
        for (int i = 0; i < 3; i++)
            tg_tensor_require_grad(in[i]);
        assert_true(tg_gemm_set_kernel("avx2"));
        size_t na = run_path(c, in, seed, a);
        assert_true(tg_gemm_set_kernel("portable"));
        size_t nb = run_path(c, in, seed, b);
        assert_true(na == nb && na < CAP);
        size_t nz = 0;
        if (avx512) {
            assert_true(tg_gemm_set_kernel("avx512"));
            nz = run_path(c, in, seed, z);
            assert_true(nz == na);
            size_t ny = na - in[0]->size - in[1]->size - in[2]->size;
            assert_implicit_same_bits(c, in, ny, a, z);
        }
        double diff = 0.0, scale = 1.0;
        for (size_t e = 0; e < na; e++) {
            diff = fmax(diff, fabs((double)a[e] - b[e]));
            if (nz)
                diff = fmax(diff, fabs((double)z[e] - b[e]));
            scale = fmax(scale, fabs((double)b[e]));
        }
        if (diff > 2e-6 * scale) {
            char name[160];
            conv_case cc = {c->N,  c->C,  c->H, c->W, c->OC,
                            c->kh, c->kw, c->a, true};
            describe(&cc, c->transpose ? "conv_transpose2d" : "conv2d", name);
            printf("  direct and im2col differ by %g (scale %g): %s\n", diff,
                   scale, name);
        }
        assert_true(diff <= 2e-6 * scale);
        worst = fmax(worst, diff / scale);
        for (int i = 0; i < 3; i++)
            tg_tensor_free(in[i]);
    }
    printf("  direct/implicit vs im2col: worst difference %.3g of the "
           "largest value\n",
           worst);
    assert_true(tg_gemm_set_kernel(saved));
    free(a);
    free(b);
    free(z);
    free(seed);
}

/* The gathered image side (conv2d's dx, conv_transpose2d's y with 16k
 * image channels) against the reference and the gradient check, on every
 * kernel: the geometries whose phases take unequal taps or none. */
static const conv_case gathered_cases[] = {
    /* k4 s3: phases of 2, 1, 1 taps; padding >= kernel/2 */
    {2, 16, 8, 7, 3, 4, 4, ARGS(3, 3, 2, 2, 1, 1, 2, 1), true},
    /* dilation 2, stride 2: one phase takes every tap, the other none */
    {2, 16, 7, 6, 2, 3, 3, ARGS(2, 2, 1, 1, 2, 2, 1, 1), true},
    /* stride > kernel, non-square, a single image */
    {1, 16, 7, 8, 3, 2, 3, ARGS(3, 2, 0, 1, 1, 1, 0, 1), false},
    /* 1x1 stride 2; dilation 3 along w only */
    {2, 16, 5, 6, 2, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1), true},
    {2, 16, 6, 7, 2, 2, 3, ARGS(1, 2, 1, 1, 1, 3, 0, 1), true},
    /* 48 channels: an odd panel on AVX-512 (k2: K = 192, whose forward
     * stays within check_case's 1e-5 of the reference) */
    {1, 48, 4, 4, 2, 2, 2, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
};

static void test_gathered_image_side(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "portable"};
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int ran = 0, avail = kernels_available(names, 3);
    for (int k = 0; k < 3; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        int rank = ran++;
        worst w = {0, 0};
        for (size_t e = 0; e < sizeof gathered_cases / sizeof *gathered_cases;
             e++) {
            if (!case_runs(rank, avail, (long)e))
                continue;
            /* under valgrind a case runs one op, in turn, so that each
             * kernel still meets both (the gradient checks dominate) */
            long turn = (long)e / avail % 2;
            bool both = !quick() || avail <= 1;
            conv_case c = gathered_cases[e];
            /* conv_transpose2d: C in -> 16k out (its y gathered) */
            int img = c.C;
            c.C = c.OC, c.OC = img;
            if (both || turn == 0)
                check_case(&c, true, &w);
            /* conv2d: 16k in (its dx gathered) */
            c.OC = c.C, c.C = img;
            c.a.output_padding[0] = c.a.output_padding[1] = 0;
            if (both || turn == 1)
                check_case(&c, false, &w);
        }
        printf("  gathered, %s: worst gradcheck abs err %.3g, rel err %.3g\n",
               names[k], w.abs_err, w.rel_err);
    }
    assert_true(tg_gemm_set_kernel(saved));
}

/* A stride of 2^30 on one input channel (a 1 x 1 output): the direct
 * kernels' phase count sh*sw overflowed int (UBSan) before it was taken in
 * 64 bits; the geometry must fall back to the im2col path and agree with
 * the reference. The same stride with 2 -> 16 channels goes through the
 * implicit GEMM. */
static void test_huge_stride_one_channel(void **state)
{
    (void)state;
    conv_case c = {
        2, 1, 5, 5, 3, 2, 2, ARGS(1 << 30, 1 << 30, 0, 0, 1, 1, 0, 0), true};
    worst w = {0, 0};
    check_case(&c, false, &w);
    c.C = 2, c.OC = 16; /* the implicit GEMM's geometry, same stride */
    check_case(&c, false, &w);
    /* 16 image channels (the gathered image side's) with a dilation of
     * 2^20 rows: its column planes would be padded 2^19 rows deep, so
     * the GEMM + col2im path takes it; both ops */
    conv_case d = {
        1, 16, 3, 3, 3, 2, 2, ARGS(1, 1, 1 << 19, 0, 1 << 20, 1, 0, 0), true};
    check_case(&d, false, &w);
    d.C = 3, d.OC = 16, d.H = 2, d.W = 2;
    check_case(&d, true, &w);
}

/* ---- the first writer of a gradient and the ones that add --------------
 * The backward op that reaches an intermediate's gradient first writes it
 * (grad_fresh), the others add to it. An intermediate a feeds five ops
 * (bce_with_logits among them) and
 * c = reshape(a) as an image feeds three, and d = conv2d(c) two, recorded
 * in a rotating order, so that each op is the first writer in one rotation
 * and adds in the others (smooth ops: no kink near the finite differences); the
 * 16-channel conv2d and conv_transpose2d take the implicit GEMM, the
 * one-channel conv_transpose2d the direct kernels (with the AVX kernels), the
 * im2col path with the portable one; e = a as one-channel images feeds a
 * conv2d (direct kernels) and a sigmoid, in turn first. */
static tg_tensor *mean_sq(tg_tape *tp, tg_tensor *t) /* mean: a loss near 1 */
{
    return tg_mean(tp, tg_mul(tp, t, t));
}

static tg_tensor *f_fan_out(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const int rot = *(const int *)ctx;
    tg_tensor *x = in[0], *W = in[1], *b = in[2], *W2 = in[3], *Wc = in[4],
              *Wt = in[5], *Wt2 = in[6];
    tg_tensor *a = tg_tanh(tp, tg_dense(tp, x, W, b)); /* [2, 32] */
    tg_tensor *c = tg_reshape(tp, a, 4, (int[]){2, 2, 4, 4});
    tg_tensor *loss = NULL, *term = NULL;
    for (int k = 0; k < 5; k++) {
        switch ((k + rot) % 5) {
        case 0:
            term = mean_sq(tp, tg_relu(tp, a));
            break;
        case 1:
            term = mean_sq(tp, tg_reshape(tp, a, 1, (int[]){64}));
            break;
        case 2:
            term = mean_sq(tp, tg_dense(tp, a, W2, NULL));
            break;
        case 3: { /* targets 0, 0.25, .. 1: a constant; per pixel, so the
                     loss stays near 1 (finite differences of a sum of 32
                     terms lose digits) */
            tg_tensor *z = tg_tape_tensor2(tp, 2, 32, false);
            for (size_t e = 0; e < z->size; e++)
                z->data[e] = 0.25f * (float)(e % 5);
            term = tg_scale(tp, tg_mean(tp, tg_bce_with_logits(tp, a, z)),
                            1.0f / 32);
            break;
        }
        default:
            term = mean_sq(tp, tg_sigmoid(tp, a));
            break;
        }
        loss = loss ? tg_add(tp, loss, term) : term;
    }
    tg_conv2d_args p1 = {
        .stride = {1, 1}, .padding = {1, 1}, .dilation = {1, 1}};
    tg_tensor *d = NULL;
    for (int k = 0; k < 3; k++) {
        switch ((k + rot) % 3) {
        case 0: /* [2, 16, 4, 4]: implicit GEMM */
            d = tg_conv2d_ex(tp, c, Wc, NULL, &p1);
            term = mean_sq(tp, d);
            break;
        case 1: /* one output channel: direct kernels */
            term = mean_sq(tp, tg_conv_transpose2d_ex(tp, c, Wt, NULL, &p1));
            break;
        default:
            term = mean_sq(tp, tg_relu(tp, c));
            break;
        }
        loss = tg_add(tp, loss, term);
    }
    for (int k = 0; k < 2; k++) /* 16 channels in: implicit dx */
        term = (k + rot) % 2
                   ? mean_sq(tp, tg_relu(tp, d))
                   : mean_sq(tp, tg_conv_transpose2d_ex(tp, d, Wt2, NULL, &p1)),
        loss = tg_add(tp, loss, term);
    /* e = a as one-channel images feeds a conv2d (one channel in: the
     * direct kernels' dx) and a sigmoid */
    tg_tensor *e = tg_reshape(tp, a, 4, (int[]){2, 1, 4, 8});
    for (int k = 0; k < 2; k++)
        term = (k + rot) % 2
                   ? mean_sq(tp, tg_sigmoid(tp, e))
                   : mean_sq(tp, tg_conv2d_ex(tp, e, in[7], NULL, &p1)),
        loss = tg_add(tp, loss, term);
    return loss;
}

static void test_fan_out_first_writer(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "portable"};
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int dense_in = 5;
    tg_tensor *in[8] = {
        tg_tensor_new(2, (int[]){2, dense_in}),
        tg_tensor_new(2, (int[]){32, dense_in}),
        rand1(32),
        tg_tensor_new(2, (int[]){3, 32}),
        rand4(16, 2, 3, 3),
        rand4(2, 1, 3, 3),
        rand4(16, 2, 3, 3),
        rand4(3, 1, 3, 3),
    };
    for (int i = 0; i < 8; i++)
        for (size_t e = 0; e < in[i]->size; e++)
            in[i]->data[e] = (float)(uniform() - 0.5);
    int ran = 0, avail = kernels_available(names, 3);
    for (int k = 0; k < 3; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        int rank = ran++;
        for (int rot = 0; rot < 5; rot++) {
            if (!case_runs(rank, avail, rot))
                continue;
            tg_gradcheck_report rep;
            bool ok = tg_gradcheck(f_fan_out, 8, in, &rot, NULL, &rep);
            if (!ok || rot == 0) {
                char what[64];
                snprintf(what, sizeof what, "fan-out, %s, rotation %d",
                         names[k], rot);
                tg_gradcheck_print(&rep, what);
            }
            assert_true(ok);
        }
    }
    assert_true(tg_gemm_set_kernel(saved));
    for (int i = 0; i < 8; i++)
        tg_tensor_free(in[i]);
}

/* One intermediate as both the input and the weights (conv2d(h, h)): the
 * input gradient must not be written fresh over the weight gradient added
 * into the same buffer first (it was, for conv2d, silently). */
typedef struct twice_case {
    int op; /* 0 conv2d, 1 conv_transpose2d, 2 dense */
    int shape[4], stride, pad;
} twice_case;

static tg_tensor *f_twice(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const twice_case *c = ctx;
    tg_tensor *h = tg_tanh(tp, in[0]);
    if (c->op == 0)
        return tg_conv2d(tp, h, h, NULL, c->stride, c->pad, 1);
    if (c->op == 1)
        return tg_conv_transpose2d(tp, h, h, NULL, c->stride, c->pad, 0, 1);
    return tg_dense(tp, h, h, NULL);
}

static void test_one_tensor_as_two_inputs(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "portable"};
    static const twice_case cases[] = {
        {0, {16, 2, 3, 3}, 1, 1}, /* OC 16: the implicit path on x86 */
        {0, {2, 2, 2, 2}, 1, 0},  {0, {3, 3, 2, 2}, 2, 1},
        {1, {2, 2, 2, 2}, 1, 0},  {1, {2, 2, 3, 3}, 2, 1},
        {2, {3, 3, 0, 0}, 0, 0},
    };
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    for (int k = 0; k < 3; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            const twice_case *c = &cases[i];
            tg_tensor *x = c->op == 2 ? tg_tensor_new(2, c->shape)
                                      : tg_tensor_new(4, c->shape);
            for (size_t e = 0; e < x->size; e++)
                x->data[e] = (float)(uniform() - 0.5);
            tg_gradcheck_report rep;
            bool ok = tg_gradcheck(f_twice, 1, &x, (void *)c, NULL, &rep);
            if (!ok) {
                char what[64];
                snprintf(what, sizeof what, "op %d twice, case %zu, %s", c->op,
                         i, names[k]);
                tg_gradcheck_print(&rep, what);
            }
            assert_true(ok);
            tg_tensor_free(x);
        }
    }
    assert_true(tg_gemm_set_kernel(saved));
}

/* ---- same bits on 1 and 2 threads ------------------------------------------
 */

/* conv2d -> max_pool -> conv_transpose2d -> avg_pool: forward and every
 * gradient, large enough that the GEMM and the loops go parallel. */
static void run_stack(int threads, tg_tensor **p, float **out, size_t *n)
{
    tg_set_threads(threads);
    for (int i = 0; i < 5; i++)
        tg_tensor_zero_grad(p[i]);
    tg_tape *tp = tg_tape_new();
    tg_tensor *h = tg_conv2d(tp, p[0], p[1], p[2], 1, 1, 1);
    h = tg_max_pool2d(tp, tg_relu(tp, h), 2, 2, 0);
    h = tg_conv_transpose2d(tp, h, p[3], p[4], 2, 1, 0, 1);
    h = tg_upsample2d(tp, tg_avg_pool2d(tp, h, 3, 2, 1), 2);
    tg_backward(tp, tg_sum(tp, tg_square(tp, h)));
    size_t k = 0;
    for (size_t i = 0; i < h->size; i++)
        out[0][k++] = h->data[i];
    for (int j = 0; j < 5; j++)
        for (size_t i = 0; i < p[j]->size; i++)
            out[0][k++] = p[j]->grad[i];
    *n = k;
    tg_tape_free(tp);
}

static void threads_bit_identical(int cin, int c1, int c2)
{
    tg_tensor *p[5] = {rand4(8, cin, 22, 20), rand4(c1, cin, 3, 3), rand1(c1),
                       rand4(c1, c2, 4, 4), rand1(c2)};
    for (int i = 0; i < 5; i++)
        tg_tensor_require_grad(p[i]);
    size_t cap = 1 << 20, n1, n2;
    float *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
    int old = tg_get_threads();
    run_stack(1, p, &a, &n1);
    run_stack(2, p, &b, &n2);
    tg_set_threads(old);
    assert_true(n1 == n2 && n1 < cap);
    assert_memory_equal(a, b, n1 * sizeof *a);
    free(a);
    free(b);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(p[i]);
}

/* 24 and 7 channels; 32 and 16, whose products the AVX2 GEMM runs in its
 * other tile (6x16 on rows); 1 -> 32 -> 1, through the direct kernels of a
 * one-channel image side; 16 in, whose input gradient (and
 * conv_transpose2d's 16-channel output) is gathered by phase. */
static void test_threads_bit_identical(void **state)
{
    (void)state;
    threads_bit_identical(5, 24, 7);
    threads_bit_identical(5, 32, 16);
    threads_bit_identical(1, 32, 1);
    threads_bit_identical(16, 32, 16);
}

/* args.relu against tg_relu after the op: values and every gradient the
 * same bits, for each edge case, both ops and every GEMM kernel the CPU
 * runs (the generic, direct and implicit paths each fuse it in their own
 * output pass); the fused run on 2 threads, tg_relu's on 1. */
static void relu_run(const conv_case *c, bool transpose, bool fused,
                     tg_tensor **in, const float *seed, float *out, size_t *n)
{
    int n_in = c->bias ? 3 : 2;
    for (int i = 0; i < n_in; i++)
        if (in[i]->grad)
            tg_tensor_zero_grad(in[i]);
    conv_case cc = *c;
    cc.a.relu = fused;
    tg_tape *tp = tg_tape_new();
    tg_tensor *y =
        transpose ? f_conv_transpose2d(tp, in, &cc) : f_conv2d(tp, in, &cc);
    if (!fused)
        y = tg_relu(tp, y);
    tg_backward_with(tp, y, seed);
    size_t k = 0;
    for (size_t i = 0; i < y->size; i++)
        out[k++] = y->data[i];
    for (int j = 0; j < n_in; j++)
        for (size_t i = 0; in[j]->grad && i < in[j]->size; i++)
            out[k++] = in[j]->grad[i];
    *n = k;
    tg_tape_free(tp);
}

/* Adds the case's outputs and its outputs clipped to 0 to counts. With
 * x_grad false, x is data (the VAE's first layer: no input gradient). */
static void relu_case(const conv_case *c, bool transpose, bool x_grad,
                      size_t counts[2])
{
    tg_tensor *in[3] = {rand4(c->N, c->C, c->H, c->W),
                        transpose ? rand4(c->C, c->OC, c->kh, c->kw)
                                  : rand4(c->OC, c->C, c->kh, c->kw),
                        rand1(c->OC)};
    for (int i = x_grad ? 0 : 1; i < 3; i++)
        tg_tensor_require_grad(in[i]);
    size_t cap = 1 << 20, n1, n2;
    float *seed = malloc(cap * sizeof *seed), *a = malloc(cap * sizeof *a),
          *b = malloc(cap * sizeof *b);
    for (size_t i = 0; i < cap; i++)
        seed[i] = (float)(uniform() * 2.0 - 1.0);
    int old = tg_get_threads();
    tg_set_threads(2);
    relu_run(c, transpose, true, in, seed, a, &n1);
    tg_set_threads(1);
    relu_run(c, transpose, false, in, seed, b, &n2);
    tg_set_threads(old);
    size_t zeros = 0, outs = n1 - ((x_grad ? in[0]->size : 0) + in[1]->size +
                                   (c->bias ? in[2]->size : 0));
    for (size_t i = 0; i < outs; i++)
        zeros += a[i] == 0.0f;
    char name[160];
    describe(c, transpose ? "conv_transpose2d" : "conv2d", name);
    if (n1 != n2 || memcmp(a, b, n1 * sizeof *a) != 0)
        printf("  fused relu differs from tg_relu: %s\n", name);
    assert_true(n1 == n2 && n1 < cap);
    assert_memory_equal(a, b, n1 * sizeof *a);
    counts[0] += outs, counts[1] += zeros;
    free(seed);
    free(a);
    free(b);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
}

static void test_fused_relu(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "avx2-4x24",
                                        "avx2-6x16", "portable"};
    /* larger than the edge cases, so the loops go parallel: the conv
     * VAE's 32 -> 64 and 1 -> 32 layers on 8 images */
    static const conv_case big[] = {
        {8, 32, 14, 14, 64, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
        {8, 1, 28, 28, 32, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
    };
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int ran = 0;
    for (int k = 0; k < 5; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        ran++;
        size_t counts[2] = {0, 0};
        for (int e = 0; e < N_EDGE; e++) {
            conv_case c = edge_cases[e];
            relu_case(&c, true, true, counts);
            c.a.output_padding[0] = c.a.output_padding[1] = 0;
            if (conv_out(c.H, c.kh, stride_h(&c), c.a.padding[0], dil_h(&c)) >=
                    1 &&
                conv_out(c.W, c.kw, stride_w(&c), c.a.padding[1], dil_w(&c)) >=
                    1)
                relu_case(&c, false, true, counts);
        }
        for (int e = 0; e < 2; e++) {
            relu_case(&big[e], false, true, counts);
            relu_case(&big[e], false, false, counts);
            /* as conv_transpose2d: 64 -> 32 and 32 -> 1 on 7x7 and 14x14 */
            conv_case t = {8,
                           big[e].OC,
                           big[e].H / 2,
                           big[e].W / 2,
                           big[e].C,
                           4,
                           4,
                           ARGS(2, 2, 1, 1, 1, 1, 0, 0),
                           true};
            relu_case(&t, true, true, counts);
        }
        /* a third to two thirds of the outputs clipped: the mask is used */
        assert_true(counts[1] > counts[0] / 3 && counts[1] < counts[0] / 3 * 2);
    }
    assert_true(tg_gemm_set_kernel(saved));
    assert_true(ran >= 1);
}

/* A 0-image batch goes through every op; parameter gradients stay zero
 * (the bias's too: a sum over no images). */
/* The bias gradient sums N * OH * OW terms per channel. It must be the
 * float nearest their exact sum: in float (8 running sums) 65,536 terms in
 * [0.5, 1.5] came out several ulp off, and bench/conv_check_dump found a
 * [5, 7, 48, 50] conv_transpose2d's db 1.2e-4 from PyTorch's. */
static void test_bias_grad_is_the_nearest_float(void **state)
{
    (void)state;
    enum { C = 2, HW = 256 };
    uint32_t lcg = 12345;
    for (int transpose = 0; transpose < 2; transpose++) {
        tg_tensor *x = tg_tensor_new(4, (int[]){1, C, HW, HW});
        tg_tensor *W = tg_tensor_new(4, (int[]){C, C, 1, 1});
        tg_tensor *b = tg_tensor_new(1, (int[]){C});
        tg_tensor_require_grad(b);
        for (size_t i = 0; i < x->size; i++)
            x->data[i] = 0.25f;
        for (size_t i = 0; i < W->size; i++)
            W->data[i] = 0.5f;
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = transpose ? tg_conv_transpose2d(tp, x, W, b, 1, 0, 0, 1)
                                 : tg_conv2d(tp, x, W, b, 1, 0, 1);
        float *dy = malloc(y->size * sizeof *dy);
        for (size_t i = 0; i < y->size; i++) {
            lcg = lcg * 1664525u + 1013904223u;
            dy[i] = 0.5f + (float)(lcg >> 8) / 16777216.0f;
        }
        tg_backward_with(tp, y, dy);
        for (int c = 0; c < C; c++) {
            double exact = 0.0;
            for (size_t i = 0; i < (size_t)HW * HW; i++)
                exact += dy[(size_t)c * HW * HW + i];
            float want = (float)exact;
            float ulp = nextafterf(want, INFINITY) - want;
            if (fabsf(b->grad[c] - want) > ulp) {
                printf("%s: db[%d] = %.9g, exact sum %.9g\n",
                       transpose ? "conv_transpose2d" : "conv2d", c,
                       (double)b->grad[c], exact);
                fail();
            }
        }
        free(dy);
        tg_tape_free(tp);
        tg_tensor_free(x);
        tg_tensor_free(W);
        tg_tensor_free(b);
    }
}

static void test_empty_batch(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new(4, (int[]){0, 2, 8, 6});
    tg_tensor *p[4] = {rand4(3, 2, 3, 3), rand1(3), rand4(3, 2, 4, 4),
                       rand1(2)};
    for (int i = 0; i < 4; i++)
        tg_tensor_require_grad(p[i]);
    for (int fused = 0; fused < 2; fused++) { /* then with args.relu */
        tg_conv2d_args a1 = {.stride = {1, 1},
                             .padding = {1, 1},
                             .relu = fused},
                       a2 = {
                           .stride = {2, 2}, .padding = {1, 1}, .relu = fused};
        tg_tape *tp = tg_tape_new();
        tg_tensor *h = tg_conv2d_ex(tp, x, p[0], p[1], &a1);
        h = tg_max_pool2d(tp, h, 2, 2, 0);
        h = tg_conv_transpose2d_ex(tp, h, p[2], p[3], &a2);
        h = tg_upsample2d(tp, tg_avg_pool2d(tp, h, 2, 2, 0), 2);
        int want[] = {0, 2, 8, 6};
        for (int d = 0; d < 4; d++)
            assert_int_equal(h->shape[d], want[d]);
        tg_backward(tp, tg_sum(tp, h));
        for (int i = 0; i < 4; i++)
            for (size_t k = 0; k < p[i]->size; k++)
                assert_float_equal(p[i]->grad[k], 0.0f, 0.0f);
        tg_tape_free(tp);
    }
    tg_tensor_free(x);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(p[i]);
}

/* ---- misuse dies with a message naming the op and the shapes ------------ */

static void misuse_kernel_too_big(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 3, 3), rand4(4, 2, 5, 5), NULL, 1, 0, 1);
}
static void misuse_channels(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 3, 5, 5), rand4(4, 2, 3, 3), NULL, 1, 0, 1);
}
static void misuse_transpose_channels(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(4, 3, 3, 3), NULL, 1, 0, 0,
                        1);
}
static void misuse_output_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), NULL, 2, 0, 2,
                        1);
}
static void misuse_conv_output_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_args a = {.output_padding = {1, 0}};
    tg_conv2d_ex(tp, rand4(1, 3, 5, 5), rand4(2, 3, 3, 3), NULL, &a);
}
static void misuse_transpose_size(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 1, 1), rand4(3, 2, 1, 1), NULL, 1, 1, 0,
                        1);
}
static void misuse_bias(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), rand1(3), 1, 0, 1);
}
/* The right count in the wrong shape: PyTorch refuses a bias that is not
 * 1-D [OC] (a [OC, 1] column went through, read as [OC]). */
static tg_tensor *bias_column(int oc)
{
    tg_tensor *t = tg_tensor_new(2, (int[]){oc, 1});
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}
static void misuse_bias_column(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), bias_column(4), 1, 0,
              1);
}
static void misuse_bias_column_ex(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_ex(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), bias_column(4),
                 NULL);
}
static void misuse_transpose_bias_column(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3),
                        bias_column(2), 1, 0, 0, 1);
}
static void misuse_transpose_bias_row_ex(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *b = tg_tensor_new(2, (int[]){1, 2});
    tg_conv_transpose2d_ex(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), b, NULL);
}
static void misuse_pool_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_max_pool2d(tp, rand4(1, 2, 5, 5), 2, 2, 2);
}
static void misuse_pool_rank(void)
{
    tg_tape *tp = tg_tape_new();
    tg_avg_pool2d(tp, tg_tensor_new2(4, 4), 2, 2, 0);
}

/* Geometry whose output length overflows int: the size arithmetic was
 * signed-overflow UB, and in practice wrapped: a stride of 2^30 made
 * conv_transpose2d of a 5x5 input a 3x3 output without a word. */
static void misuse_huge_padding(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), rand4(4, 2, 3, 3), NULL, 1, 1 << 30, 1);
}
static void misuse_transpose_huge_stride(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv_transpose2d(tp, rand4(1, 3, 5, 5), rand4(3, 2, 3, 3), NULL, 1 << 30,
                        0, 0, 1);
}

/* one axis past INT_MAX, the other 1: the length's clamp to INT_MAX gave
 * N * OH * OW = INT_MAX, which passed (an output cut short) */
static void misuse_one_axis_huge(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_args a = {.padding = {1 << 30, 0}};
    tg_conv2d_ex(tp, rand4(1, 1, 10, 1), rand4(1, 1, 1, 1), NULL, &a);
}

static void misuse_null(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d(tp, rand4(1, 2, 5, 5), NULL, NULL, 1, 0, 1);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_null, "conv2d", "NULL");
    expect_abort(misuse_kernel_too_big, "conv2d", "[1, 2, 3, 3]");
    expect_abort(misuse_channels, "conv2d", "[4, 2, 3, 3]");
    expect_abort(misuse_transpose_channels, "conv_transpose2d", "[1, 3, 5, 5]");
    expect_abort(misuse_output_padding, "conv_transpose2d", "output padding");
    expect_abort(
        misuse_conv_output_padding, "conv2d",
        "output_padding (1, 0) with x [1, 3, 5, 5] and W [2, 3, 3, 3]");
    expect_abort(misuse_transpose_size, "conv_transpose2d", "[3, 2, 1, 1]");
    expect_abort(misuse_bias, "conv2d", "bias [3]");
    expect_abort(misuse_bias_column, "tapegrad: conv2d: ", "bias [4, 1]",
                 "W [4, 2, 3, 3]", "[4]");
    expect_abort(misuse_bias_column_ex, "tapegrad: conv2d: ", "bias [4, 1]",
                 "W [4, 2, 3, 3]");
    expect_abort(misuse_transpose_bias_column,
                 "tapegrad: conv_transpose2d: ", "bias [2, 1]",
                 "W [3, 2, 3, 3]", "[2]");
    expect_abort(misuse_transpose_bias_row_ex,
                 "tapegrad: conv_transpose2d: ", "bias [1, 2]",
                 "W [3, 2, 3, 3]");
    expect_abort(misuse_pool_padding, "max_pool2d", "[1, 2, 5, 5]");
    expect_abort(misuse_pool_rank, "avg_pool2d", "[4, 4]");
    expect_abort(misuse_huge_padding, "conv2d", "too many output positions");
    expect_abort(misuse_transpose_huge_stride, "conv_transpose2d",
                 "too many output positions");
    expect_abort(misuse_one_axis_huge, "conv2d", "too many output positions");
}

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv_transpose2d),
        cmocka_unit_test(test_every_gemm_kernel),
        cmocka_unit_test(test_square_entry_points),
        cmocka_unit_test(test_pooling),
        cmocka_unit_test(test_max_pool_ties),
        cmocka_unit_test(test_upsample),
        cmocka_unit_test(test_avg_pool_huge_kernel),
        cmocka_unit_test(test_avg_pool_of_a_constant_is_the_constant),
        cmocka_unit_test(test_avg_pool_gradient_is_the_rounded_quotient),
        cmocka_unit_test(test_kernel_paths_agree),
        cmocka_unit_test(test_gathered_image_side),
        cmocka_unit_test(test_fan_out_first_writer),
        cmocka_unit_test(test_one_tensor_as_two_inputs),
        cmocka_unit_test(test_huge_stride_one_channel),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_fused_relu),
        cmocka_unit_test(test_bias_grad_is_the_nearest_float),
        cmocka_unit_test(test_empty_batch),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests_name("conv", tests, NULL, NULL);
}

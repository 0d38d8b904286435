/* conv2d and conv_transpose2d: forward values against the direct references
 * (conv_common.h) and gradient checks of x, W and b, on the edge cases and
 * random geometries, through every GEMM kernel the CPU runs, and the
 * square-geometry (int argument) entry points. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_autograd.h"

#define TEST_SEED 20261202
#include "conv_common.h"

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
    };
    return cmocka_run_group_tests_name("conv_gradcheck", tests, NULL, NULL);
}

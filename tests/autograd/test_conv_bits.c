/* The convolutions' exact results: the same bits on 1 and 2 threads (a
 * conv -> pool -> conv_transpose -> pool stack), the fused ReLU (args.relu)
 * the same bits as tg_relu after the op on every GEMM kernel, and the bias
 * gradient the float nearest its exact sum. */
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

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_fused_relu),
        cmocka_unit_test(test_bias_grad_is_the_nearest_float),
    };
    return cmocka_run_group_tests_name("conv_bits", tests, NULL, NULL);
}

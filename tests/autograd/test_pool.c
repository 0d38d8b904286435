/* Pooling and upsampling: max_pool2d and avg_pool2d against direct window
 * loops and gradient checks (edge cases and random geometries), max-pool
 * ties, upsample2d, and avg_pool's kernel^2 overflow and once-rounded
 * averages and gradients (avg_pool1d too). Their misuse aborts are in
 * test_conv_edges.c. */
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
#include "float_equal.h"

#define TEST_SEED 20261202
#include "conv_common.h"

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

/* Each op's output and then its input, flattened and joined: the input's
 * gradient holds the check's weights before the op's backward runs, which
 * must add to them (upsample2d's dx = sum had passed: nothing else wrote
 * dx first, and its blocks do not overlap). */
typedef struct fan_out_ctx {
    tg_graph_fn f;
    void *ctx;
} fan_out_ctx;

static tg_tensor *f_fan_out(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fan_out_ctx *fo = ctx;
    tg_tensor *y = fo->f(tp, in, fo->ctx);
    tg_tensor *parts[2] = {
        tg_reshape(tp, y, 2, (int[]){1, (int)y->size}),
        tg_reshape(tp, in[0], 2, (int[]){1, (int)in[0]->size})};
    return tg_concat(tp, 2, parts);
}

static void test_gradients_add_to_what_dx_holds(void **state)
{
    (void)state;
    int s = 2;
    for (size_t k = 0; k < sizeof pool_edges / sizeof *pool_edges; k++) {
        const pool_case *c = &pool_edges[k];
        fan_out_ctx fo[3] = {
            {f_max_pool, (void *)c}, {f_avg_pool, (void *)c}, {f_upsample, &s}};
        for (int o = 0; o < 3; o++) {
            tg_tensor *x = distinct4(c->N, c->C, c->H, c->W);
            tg_gradcheck_report rep;
            bool ok = tg_gradcheck(f_fan_out, 1, &x, &fo[o], NULL, &rep);
            if (!ok)
                tg_gradcheck_print(&rep, o == 0   ? "max_pool2d, fan-out"
                                         : o == 1 ? "avg_pool2d, fan-out"
                                                  : "upsample2d, fan-out");
            assert_true(ok);
            tg_tensor_free(x);
        }
    }
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

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pooling),
        cmocka_unit_test(test_max_pool_ties),
        cmocka_unit_test(test_upsample),
        cmocka_unit_test(test_gradients_add_to_what_dx_holds),
        cmocka_unit_test(test_avg_pool_huge_kernel),
        cmocka_unit_test(test_avg_pool_of_a_constant_is_the_constant),
        cmocka_unit_test(test_avg_pool_gradient_is_the_rounded_quotient),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}

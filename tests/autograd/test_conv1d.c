/* 1-D convolution and pooling (conv1d, conv_transpose1d, max_pool1d,
 * avg_pool1d): forward values against loop nests written here from
 * PyTorch's definitions, gradient checks on edge-case and random
 * geometries (stride > kernel, k = 1, dilation, output padding, one
 * sample, 1 and 16 channels: the 2-D op's direct and implicit paths), the
 * same bits on 1 and 2 threads, and misuse naming the 1-D op. */
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

#define TEST_SEED 1202
#include "test_random.h"

static tg_tensor *rand_t(int ndim, const int *shape)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 2.0 - 1.0);
    return t;
}

/* ---- convolutions -------------------------------------------------------- */

typedef struct conv1_case {
    int N, C, L, OC, k, s, p, d, op; /* op: output padding (transpose) */
    bool bias, transpose;
} conv1_case;

static int out_len(const conv1_case *c)
{
    if (c->transpose)
        return (c->L - 1) * c->s - 2 * c->p + c->d * (c->k - 1) + c->op + 1;
    int span = c->L + 2 * c->p - c->d * (c->k - 1) - 1;
    return span < 0 ? 0 : span / c->s + 1;
}

static tg_tensor *f_conv(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const conv1_case *c = ctx;
    tg_tensor *b = c->bias ? in[2] : NULL;
    return c->transpose ? tg_conv_transpose1d(tp, in[0], in[1], b, c->s, c->p,
                                              c->op, c->d)
                        : tg_conv1d(tp, in[0], in[1], b, c->s, c->p, c->d);
}

/* y[n, o, t] from the definitions, in double. conv1d: b[o] + sum over c, j
 * of W[o, c, j] x[n, c, t*s - p + j*d]; conv_transpose1d: each x[n, c, t]
 * adds x W[c, o, j] to y[n, o, t*s - p + j*d]. */
static void reference(const conv1_case *c, const float *x, const float *W,
                      const float *b, double *y)
{
    int OL = out_len(c);
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            for (int t = 0; t < OL; t++)
                y[((size_t)n * c->OC + o) * OL + t] = b ? b[o] : 0.0;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->OC; o++)
            for (int ch = 0; ch < c->C; ch++)
                for (int j = 0; j < c->k; j++) {
                    if (!c->transpose) {
                        double w = W[((size_t)o * c->C + ch) * c->k + j];
                        for (int t = 0; t < OL; t++) {
                            int i = t * c->s - c->p + j * c->d;
                            if (i >= 0 && i < c->L)
                                y[((size_t)n * c->OC + o) * OL + t] +=
                                    w * x[((size_t)n * c->C + ch) * c->L + i];
                        }
                    } else {
                        double w = W[((size_t)ch * c->OC + o) * c->k + j];
                        for (int t = 0; t < c->L; t++) {
                            int u = t * c->s - c->p + j * c->d;
                            if (u >= 0 && u < OL)
                                y[((size_t)n * c->OC + o) * OL + u] +=
                                    w * x[((size_t)n * c->C + ch) * c->L + t];
                        }
                    }
                }
}

/* Whether some output reads some input (padding can hide every one: the
 * output is then the bias alone, and no gradient reaches x or W). */
static bool reads_input(const conv1_case *c)
{
    int OL = out_len(c);
    for (int t = 0; t < (c->transpose ? c->L : OL); t++)
        for (int j = 0; j < c->k; j++) {
            int i = t * c->s - c->p + j * c->d;
            if (i >= 0 && i < (c->transpose ? OL : c->L))
                return true;
        }
    return false;
}

static void check_conv(const conv1_case *c)
{
    tg_tensor *in[3];
    in[0] = rand_t(3, (int[]){c->N, c->C, c->L});
    in[1] = c->transpose ? rand_t(3, (int[]){c->C, c->OC, c->k})
                         : rand_t(3, (int[]){c->OC, c->C, c->k});
    in[2] = rand_t(1, &c->OC);
    int n_in = c->bias ? 3 : 2, OL = out_len(c);
    char name[160];
    snprintf(name, sizeof name, "%s N%d C%d L%d OC%d k%d s%d p%d d%d op%d%s",
             c->transpose ? "conv_transpose1d" : "conv1d", c->N, c->C, c->L,
             c->OC, c->k, c->s, c->p, c->d, c->op, c->bias ? " bias" : "");
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = f_conv(tp, in, (void *)c);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[0], c->N);
    assert_int_equal(y->shape[1], c->OC);
    assert_int_equal(y->shape[2], OL);
    double *ref = malloc(y->size * sizeof *ref);
    reference(c, in[0]->data, in[1]->data, c->bias ? in[2]->data : NULL, ref);
    for (size_t e = 0; e < y->size; e++)
        if (fabs(y->data[e] - ref[e]) > 1e-5 * (1.0 + fabs(ref[e]))) {
            printf("%s: y[%zu] = %.9g, reference %.9g\n", name, e,
                   (double)y->data[e], ref[e]);
            fail();
        }
    free(ref);
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_conv, n_in, in, (void *)c, NULL, &rep);
    if (!ok)
        tg_gradcheck_print(&rep, name);
    assert_true(ok);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
}

static void test_convolutions(void **state)
{
    (void)state;
    static const conv1_case edges[] = {
        /* N C L OC k s p d op bias transpose */
        {2, 3, 9, 4, 3, 1, 1, 1, 0, true, false},   /* "same" padding */
        {1, 2, 7, 3, 2, 3, 0, 1, 0, true, false},   /* stride > kernel */
        {3, 2, 5, 2, 1, 1, 0, 1, 0, false, false},  /* k = 1 */
        {2, 1, 11, 4, 3, 2, 2, 2, 0, true, false},  /* one channel, dilation */
        {2, 16, 8, 16, 4, 2, 1, 1, 0, true, false}, /* 16 channels */
        {1, 3, 1, 2, 1, 1, 0, 1, 0, true, false},   /* L = 1 */
        {2, 3, 4, 2, 3, 2, 1, 1, 1, true, true},    /* output padding */
        {2, 4, 5, 1, 4, 2, 1, 1, 0, true, true},    /* one output channel */
        {1, 2, 3, 3, 2, 3, 0, 1, 2, false, true},   /* stride > kernel */
        {2, 16, 4, 16, 4, 2, 1, 1, 0, true, true},  /* 16 channels */
        {2, 3, 5, 2, 3, 1, 0, 2, 1, true, true},    /* dilation, op < d */
    };
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++)
        check_conv(&edges[i]);
    for (int i = 0; i < 40; i++) {
        conv1_case c = {randint(1, 3),
                        randint(1, 4),
                        randint(1, 10),
                        randint(1, 4),
                        randint(1, 4),
                        randint(1, 3),
                        0,
                        randint(1, 2),
                        0,
                        i % 3 != 0,
                        i % 2 == 1};
        c.p = randint(0, c.k);
        if (c.transpose)
            c.op = randint(0, (c.s > c.d ? c.s : c.d) - 1);
        if (out_len(&c) < 1 || !reads_input(&c))
            continue;
        check_conv(&c);
    }
}

/* ---- pooling ------------------------------------------------------------- */

typedef struct pool1_case {
    int N, C, L, k, s, p;
} pool1_case;

static int pool_stride(const pool1_case *c) { return c->s ? c->s : c->k; }

static tg_tensor *f_max(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const pool1_case *c = ctx;
    return tg_max_pool1d(tp, in[0], c->k, c->s, c->p);
}
static tg_tensor *f_avg(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const pool1_case *c = ctx;
    return tg_avg_pool1d(tp, in[0], c->k, c->s, c->p);
}

static void check_pool(const pool1_case *c, bool is_max)
{
    /* distinct values 0.05 apart in a shuffled order: no near-ties for the
     * finite differences to cross */
    tg_tensor *x = tg_tensor_new(3, (int[]){c->N, c->C, c->L});
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = 0.05f * (float)i - 1.0f;
    for (size_t i = x->size; i > 1; i--) {
        size_t j = (size_t)(uniform() * (double)i);
        float t = x->data[i - 1];
        x->data[i - 1] = x->data[j];
        x->data[j] = t;
    }
    int s = pool_stride(c), OL = (c->L + 2 * c->p - c->k) / s + 1;
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = is_max ? f_max(tp, &x, (void *)c) : f_avg(tp, &x, (void *)c);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], OL);
    for (int r = 0; r < c->N * c->C; r++)
        for (int t = 0; t < OL; t++) {
            double acc = is_max ? -INFINITY : 0.0;
            for (int j = 0; j < c->k; j++) {
                int i = t * s - c->p + j;
                if (i < 0 || i >= c->L)
                    continue;
                double v = x->data[(size_t)r * c->L + i];
                acc = is_max ? fmax(acc, v) : acc + v;
            }
            double ref = is_max ? acc : acc / c->k;
            assert_true(fabs(y->data[(size_t)r * OL + t] - ref) < 1e-5);
        }
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok =
        tg_gradcheck(is_max ? f_max : f_avg, 1, &x, (void *)c, NULL, &rep);
    if (!ok)
        tg_gradcheck_print(&rep, is_max ? "max_pool1d" : "avg_pool1d");
    assert_true(ok);
    tg_tensor_free(x);
}

static void test_pooling(void **state)
{
    (void)state;
    static const pool1_case edges[] = {
        {2, 3, 8, 2, 0, 0}, /* stride = kernel */
        {1, 2, 7, 3, 1, 1}, /* overlapping, padded */
        {2, 1, 9, 2, 3, 0}, /* stride > kernel */
        {1, 1, 1, 1, 1, 0}, /* one element */
        {3, 2, 6, 4, 2, 2}, /* padding = kernel/2 */
    };
    for (int is_max = 0; is_max < 2; is_max++) {
        for (size_t i = 0; i < sizeof edges / sizeof *edges; i++)
            check_pool(&edges[i], is_max);
        for (int i = 0; i < 20; i++) {
            pool1_case c = {randint(1, 3), randint(1, 3), randint(1, 12),
                            randint(1, 4), randint(0, 3), 0};
            c.p = randint(0, c.k / 2);
            if (c.L + 2 * c.p < c.k)
                continue;
            check_pool(&c, is_max);
        }
    }
}

/* ---- same bits on 1 and 2 threads ---------------------------------------- */

static void run(int threads, float *out)
{
    tg_set_threads(threads);
    rng_state = 9;
    tg_tensor *x = rand_t(3, (int[]){64, 16, 50});
    tg_tensor *W1 = rand_t(3, (int[]){32, 16, 5});
    tg_tensor *W2 = rand_t(3, (int[]){32, 16, 4});
    tg_tensor *ps[] = {x, W1, W2};
    for (int i = 0; i < 3; i++)
        tg_tensor_require_grad(ps[i]);
    tg_tape *tp = tg_tape_new();
    tg_tensor *h = tg_relu(tp, tg_conv1d(tp, x, W1, NULL, 2, 2, 1));
    h = tg_max_pool1d(tp, h, 2, 0, 0);
    h = tg_conv_transpose1d(tp, h, W2, NULL, 2, 1, 0, 1);
    tg_tensor *loss = tg_sum(tp, tg_square(tp, tg_avg_pool1d(tp, h, 3, 1, 1)));
    tg_backward(tp, loss);
    size_t o = 0;
    out[o++] = loss->data[0];
    for (int i = 0; i < 3; i++) {
        memcpy(out + o, ps[i]->grad, ps[i]->size * sizeof *out);
        o += ps[i]->size;
    }
    tg_tape_free(tp);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(ps[i]);
}

static void test_threads_bit_identical(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    size_t n = 1 + 64 * 16 * 50 + 32 * 16 * 5 + 32 * 16 * 4;
    float *a = calloc(n, sizeof *a), *b = calloc(n, sizeof *b);
    run(1, a);
    run(2, b);
    tg_set_threads(saved);
    assert_true(isfinite(a[0]) && a[0] > 0.0f);
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
}

/* ---- misuse ---------------------------------------------------------------
 */

static tg_tape *mtp;
static void conv_4d_input(void)
{
    tg_conv1d(mtp, tg_tensor_new(4, (int[]){2, 3, 1, 5}),
              tg_tensor_new(3, (int[]){4, 3, 2}), NULL, 1, 0, 1);
}
static void conv_channels(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
              tg_tensor_new(3, (int[]){4, 2, 2}), NULL, 1, 0, 1);
}
static void conv_too_short(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
              tg_tensor_new(3, (int[]){4, 3, 7}), NULL, 1, 0, 1);
}
static void conv_bias(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
              tg_tensor_new(3, (int[]){4, 3, 2}), tg_tensor_new(1, (int[]){3}),
              1, 0, 1);
}
/* [OC, 1]: the right count, refused as PyTorch does (it was read as [OC]) */
static void conv_bias_column(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
              tg_tensor_new(3, (int[]){4, 3, 2}),
              tg_tensor_new(2, (int[]){4, 1}), 1, 0, 1);
}
static void transpose_bias_column(void)
{
    tg_conv_transpose1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
                        tg_tensor_new(3, (int[]){3, 4, 2}),
                        tg_tensor_new(2, (int[]){4, 1}), 1, 0, 0, 1);
}
static void transpose_output_padding(void)
{
    tg_conv_transpose1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
                        tg_tensor_new(3, (int[]){3, 4, 2}), NULL, 2, 0, 2, 1);
}
static void transpose_channels(void)
{
    tg_conv_transpose1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}),
                        tg_tensor_new(3, (int[]){4, 3, 2}), NULL, 1, 0, 0, 1);
}
static void pool_padding(void)
{
    tg_max_pool1d(mtp, tg_tensor_new(3, (int[]){2, 3, 5}), 2, 2, 2);
}
static void pool_rank(void)
{
    tg_avg_pool1d(mtp, tg_tensor_new2(3, 5), 2, 2, 0);
}
static void pool_too_short(void)
{
    tg_max_pool1d(mtp, tg_tensor_new(3, (int[]){2, 3, 2}), 4, 1, 0);
}

/* a length past INT_MAX with one sample: refused naming the 1-D op (the
 * clamped length went through with N = 1; with N = 2 the 2-D op's message
 * named conv2d and the view [2, 3, 1, 10]) */
static void conv_huge_padding(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){1, 1, 10}),
              tg_tensor_new(3, (int[]){1, 1, 1}), NULL, 1, 1 << 30, 1);
}
static void conv_huge_padding_two(void)
{
    tg_conv1d(mtp, tg_tensor_new(3, (int[]){2, 3, 10}),
              tg_tensor_new(3, (int[]){1, 3, 1}), NULL, 1, 1 << 30, 1);
}
static void transpose_huge_stride(void)
{
    tg_conv_transpose1d(mtp, tg_tensor_new(3, (int[]){1, 1, 5}),
                        tg_tensor_new(3, (int[]){1, 1, 1}), NULL, 1 << 30, 0, 0,
                        1);
}
/* an input another tape computed: named by the 1-D op, not "reshape" */
static tg_tensor *from_other_tape(void)
{
    tg_tape *other = tg_tape_new();
    tg_tensor *x = tg_tensor_new(3, (int[]){2, 3, 5});
    tg_tensor_require_grad(x);
    return tg_scale(other, x, 2.0f);
}
static void conv_other_tape(void)
{
    tg_conv1d(mtp, from_other_tape(), tg_tensor_new(3, (int[]){4, 3, 2}), NULL,
              1, 0, 1);
}
static void pool_other_tape(void)
{
    tg_max_pool1d(mtp, from_other_tape(), 2, 2, 0);
}

static void test_misuse_aborts(void **state)
{
    (void)state;
    mtp = tg_tape_new();
    expect_abort(conv_4d_input, "tapegrad: conv1d: ", "[2, 3, 1, 5]");
    expect_abort(conv_channels, "tapegrad: conv1d: ", "[2, 3, 5]", "[4, 2, 2]");
    expect_abort(conv_too_short, "tapegrad: conv1d: ", "length");
    expect_abort(conv_bias, "tapegrad: conv1d: ", "bias [3]");
    expect_abort(conv_bias_column, "tapegrad: conv1d: ", "bias [4, 1]",
                 "W [4, 3, 2]");
    expect_abort(transpose_bias_column,
                 "tapegrad: conv_transpose1d: ", "bias [4, 1]", "W [3, 4, 2]");
    expect_abort(transpose_output_padding,
                 "tapegrad: conv_transpose1d: ", "output padding 2");
    expect_abort(transpose_channels,
                 "tapegrad: conv_transpose1d: ", "[in, out, k]");
    expect_abort(pool_padding, "tapegrad: max_pool1d: ", "[2, 3, 5]");
    expect_abort(pool_rank, "tapegrad: avg_pool1d: ", "[N, C, L]");
    expect_abort(pool_too_short, "tapegrad: max_pool1d: ", "[2, 3, 2]",
                 "length");
    expect_abort(conv_huge_padding, "tapegrad: conv1d: ", "[1, 1, 10]",
                 "too many positions");
    expect_abort(conv_huge_padding_two, "tapegrad: conv1d: ", "[2, 3, 10]",
                 "too many positions");
    expect_abort(transpose_huge_stride,
                 "tapegrad: conv_transpose1d: ", "too many positions");
    expect_abort(conv_other_tape, "tapegrad: conv1d: ", "another tape");
    expect_abort(pool_other_tape, "tapegrad: max_pool1d: ", "another tape");
    tg_tape_free(mtp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_convolutions),
        cmocka_unit_test(test_pooling),
        cmocka_unit_test(test_threads_bit_identical),
        cmocka_unit_test(test_misuse_aborts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

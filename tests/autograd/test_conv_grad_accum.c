/* Gradient accumulation through the convolutions: an intermediate that
 * feeds several ops (each in turn the first writer of its gradient, the
 * others adding), and one tensor given as both the input and the weights;
 * gradient-checked on every GEMM kernel the CPU runs. */
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

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fan_out_first_writer),
        cmocka_unit_test(test_one_tensor_as_two_inputs),
    };
    return cmocka_run_group_tests_name("conv_grad_accum", tests, NULL, NULL);
}

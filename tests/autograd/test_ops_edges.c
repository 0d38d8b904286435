/* The ops added for issue 13 at their edges: a batch of 0 rows goes through
 * each forward and backward, the same bits come out on 1 and 2 threads, and
 * misuse aborts with a message naming the op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

/* ---- 0-row batches
 * ------------------------------------------------------------ Every op takes x
 * [0, C] (a rank handed no rows) forward and backward. */

static tg_tensor *zero_row_op(tg_tape *tp, int k, tg_tensor *x, tg_tensor *row)
{
    switch (k) {
    case 0:
        return tg_neg(tp, x);
    case 1:
        return tg_abs(tp, x);
    case 2:
        return tg_sqrt(tp, x);
    case 3:
        return tg_pow(tp, x, 2.5f);
    case 4:
        return tg_leaky_relu(tp, x, 0.1f);
    case 5:
        return tg_gelu(tp, x);
    case 6:
        return tg_softmax(tp, x);
    case 7:
        return tg_log_softmax(tp, x);
    case 8:
        return tg_logsumexp(tp, x);
    case 9:
        return tg_sum_axis0(tp, x);
    case 10:
        return tg_transpose(tp, x);
    case 11:
        return tg_slice_cols(tp, x, 1, 2);
    case 12:
        return tg_slice_rows(tp, x, 0, 0);
    case 13:
        return tg_gather_rows(tp, x, NULL, 0);
    case 14:
        return tg_layer_norm(tp, x, row, row, 1e-5f);
    case 15:
        return tg_mask_scale(tp, x, NULL, 2.0f);
    case 16:
        return tg_bce(tp, x, x);
    case 17:
        return tg_kl_normals(tp, x, x, row, row);
    case 18:
        return tg_kl_normals(tp, x, x, x, x);
    case 19:
        return tg_group_norm(tp, x, 3, row, row, 1e-5f);
    case 20:
        return tg_div(tp, x, row);
    case 21:
        return tg_maximum(tp, x, row);
    case 22:
        return tg_minimum(tp, x, x);
    case 23:
        return tg_mean_axis0(tp, x);
    case 24:
        return tg_permute(tp, x, (const int[]){1, 0});
    case 25:
        return tg_cb_log_norm(tp, x);
    case 26:
        return tg_add(tp, tg_detach(tp, x), row);
    default:
        return NULL;
    }
}

/* down the rows: [1, 3] of zeros; transposed: [3, 0] */
static bool down_rows(int k) { return k == 9 || k == 23; }
static bool transposed(int k) { return k == 10 || k == 24; }

static void zero_rows_pass_through_every_op(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new2(0, 3);
    tg_tensor *row = tg_tensor_new(1, (int[]){3});
    tg_tensor_require_grad(x);
    tg_tensor_require_grad(row);
    tg_tape *tp = tg_tape_new();
    for (int k = 0;; k++) {
        tg_tape_reset(tp);
        tg_tensor *y = zero_row_op(tp, k, x, row);
        if (!y)
            break;
        assert_int_equal(y->size, down_rows(k) ? 3 : 0);
        if (down_rows(k)) { /* sum or mean down no rows: [1, 3] of zeros */
            for (int j = 0; j < 3; j++)
                assert_float_equal(y->data[j], 0.0, 0);
        }
        if (transposed(k)) {
            assert_int_equal(y->shape[0], 3);
            assert_int_equal(y->shape[1], 0);
        } else if (!down_rows(k)) {
            assert_int_equal(y->shape[0], 0);
        }
        tg_backward(tp, tg_sum(tp, y));
    }
    /* layer_norm, group_norm, the shared prior and the broadcast rows of
     * div, maximum and add got a zero gradient from no rows */
    for (int j = 0; j < 3; j++)
        assert_float_equal(row->grad[j], 0.0, 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(row);
}

/* The 1-D convolution and pooling ops on a batch of no sequences, [0, 2, 8]:
 * forward and backward, the weights' and bias's gradients zero. */
static void zero_batch_through_1d_ops(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new(3, (int[]){0, 2, 8});
    tg_tensor *w = tg_tensor_new(3, (int[]){4, 2, 3});
    tg_tensor *wt = tg_tensor_new(3, (int[]){2, 4, 3});
    tg_tensor *b = tg_tensor_new(1, (int[]){4});
    tg_tensor *all[] = {x, w, wt, b};
    for (int i = 0; i < 4; i++)
        tg_tensor_require_grad(all[i]);
    static const int want_len[] = {8, 10, 4, 4}, want_c[] = {4, 4, 2, 2};
    tg_tape *tp = tg_tape_new();
    for (int k = 0; k < 4; k++) {
        tg_tape_reset(tp);
        tg_tensor *y = k == 0   ? tg_conv1d(tp, x, w, b, 1, 1, 1)
                       : k == 1 ? tg_conv_transpose1d(tp, x, wt, b, 1, 0, 0, 1)
                       : k == 2 ? tg_max_pool1d(tp, x, 2, 2, 0)
                                : tg_avg_pool1d(tp, x, 2, 2, 0);
        assert_int_equal(y->ndim, 3);
        assert_int_equal(y->shape[0], 0);
        assert_int_equal(y->shape[1], want_c[k]);
        assert_int_equal(y->shape[2], want_len[k]);
        tg_backward(tp, tg_sum(tp, y));
    }
    for (int i = 1; i < 4; i++)
        for (size_t j = 0; j < all[i]->size; j++)
            assert_float_equal(all[i]->grad[j], 0.0, 0);
    tg_tape_free(tp);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(all[i]);
}

/* ---- empty inner and output dimensions -------------------------------------
 * A product over K = 0 is zeros and a layer with no inputs gives its bias;
 * a layer with no outputs gives [rows, 0]. Each way of transposing the
 * operands (the GEMM's leading dimensions are then 0) goes forward and
 * backward; the gradients that exist are the right ones. */

static tg_tensor *leaf(tg_tape *tp, int rows, int cols)
{
    tg_tensor *t = tg_tape_tensor2(tp, rows, cols, true);
    t->requires_grad = true;
    return t;
}

static void empty_inner_and_output_dims(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        tg_tape_reset(tp);
        /* op(a) [3, 0] times op(b) [0, 4] */
        tg_tensor *a = leaf(tp, ta ? 0 : 3, ta ? 3 : 0);
        tg_tensor *b = leaf(tp, tb ? 4 : 0, tb ? 0 : 4);
        tg_tensor *y = tg_matmul(tp, a, b, ta, tb);
        assert_int_equal(y->shape[0], 3);
        assert_int_equal(y->shape[1], 4);
        for (size_t e = 0; e < y->size; e++)
            assert_true(y->data[e] == 0.0f);
        tg_backward(tp, tg_sum(tp, y));
        /* op(a) [3, 2] times op(b) [2, 0]: [3, 0]; a's gradient is zeros */
        a = leaf(tp, ta ? 2 : 3, ta ? 3 : 2);
        b = leaf(tp, tb ? 0 : 2, tb ? 2 : 0);
        for (size_t e = 0; e < a->size; e++)
            a->data[e] = 1.0f + (float)e;
        y = tg_matmul(tp, a, b, ta, tb);
        assert_int_equal(y->shape[0], 3);
        assert_int_equal(y->shape[1], 0);
        tg_tensor *loss = tg_add(tp, tg_sum(tp, y), tg_sum(tp, a));
        tg_backward(tp, loss);
        for (size_t e = 0; e < a->size; e++)
            assert_true(a->grad[e] == 1.0f);
    }
    /* dense: x [3, 0], W [2, 0], b [2] gives rows of b; db = 3 per unit */
    tg_tape_reset(tp);
    tg_tensor *x = leaf(tp, 3, 0);
    tg_tensor *W = leaf(tp, 2, 0);
    tg_tensor *bias = tg_tape_tensor(tp, 1, (int[]){2}, true);
    bias->requires_grad = true;
    bias->data[0] = 0.5f, bias->data[1] = -2.0f;
    tg_tensor *y = tg_dense(tp, x, W, bias);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], 2);
    for (int i = 0; i < 3; i++) {
        assert_true(y->data[2 * i] == 0.5f);
        assert_true(y->data[2 * i + 1] == -2.0f);
    }
    tg_backward(tp, tg_sum(tp, y));
    assert_true(bias->grad[0] == 3.0f && bias->grad[1] == 3.0f);
    /* dense: x [3, 4], W [0, 4] gives [3, 0]; x's gradient is zeros */
    tg_tape_reset(tp);
    x = leaf(tp, 3, 4);
    W = leaf(tp, 0, 4);
    y = tg_dense(tp, x, W, NULL);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], 0);
    tg_backward(tp, tg_add(tp, tg_sum(tp, y), tg_sum(tp, x)));
    for (size_t e = 0; e < x->size; e++)
        assert_true(x->grad[e] == 1.0f);
    tg_tape_free(tp);
}

/* ---- same bits on 1 and 2 threads -------------------------------------------
 * Big enough (120,000 elements) for every parallel loop to split. */

enum { BIG_R = 300, BIG_C = 400 };

static void run_big(int threads, float *out, float *grads)
{
    tg_set_threads(threads);
    tg_tensor *x = tg_tensor_new2(BIG_R, BIG_C);
    tg_tensor *gamma = tg_tensor_new(1, (int[]){BIG_C});
    tg_tensor *beta = tg_tensor_new(1, (int[]){BIG_C});
    for (size_t k = 0; k < x->size; k++)
        x->data[k] = (float)((k * 2654435761u) % 1000) * 0.004f - 2.0f;
    for (int j = 0; j < BIG_C; j++) {
        gamma->data[j] = 1.0f + 0.001f * (float)j;
        beta->data[j] = 0.01f * (float)(j % 7);
    }
    tg_tensor *ts[] = {x, gamma, beta};
    for (int i = 0; i < 3; i++)
        tg_tensor_require_grad(ts[i]);
    int idx[BIG_R];
    for (int i = 0; i < BIG_R; i++)
        idx[i] = (i * 7) % (BIG_R / 2);
    tg_tape *tp = tg_tape_new();
    tg_tensor *h = tg_gather_rows(tp, x, idx, BIG_R);
    h = tg_gelu(tp, tg_layer_norm(tp, h, gamma, beta, 1e-5f));
    h = tg_maximum(tp, tg_div(tp, h, tg_add_scalar(tp, tg_abs(tp, x), 1.0f)),
                   tg_log_softmax(tp, x));
    tg_tensor *y = tg_add(tp, tg_softmax(tp, h), tg_sqrt(tp, tg_square(tp, h)));
    tg_tensor *loss =
        tg_add(tp, tg_sum(tp, tg_mean_axis0(tp, tg_transpose(tp, y))),
               tg_sum(tp, tg_logsumexp(tp, tg_slice_cols(tp, y, 5, 300))));
    tg_tensor *y3 = tg_reshape(tp, y, 3, (int[]){30, 10, BIG_C});
    tg_tensor *p = tg_permute(tp, y3, (int[]){2, 0, 1});
    loss = tg_add(tp, loss, tg_sum(tp, tg_logsumexp(tp, p)));
    tg_backward(tp, loss);
    out[0] = loss->data[0];
    memcpy(grads, x->grad, x->size * sizeof(float));
    memcpy(grads + x->size, gamma->grad, BIG_C * sizeof(float));
    memcpy(grads + x->size + BIG_C, beta->grad, BIG_C * sizeof(float));
    tg_tape_free(tp);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(ts[i]);
}

static void same_bits_on_1_and_2_threads(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    size_t n = (size_t)BIG_R * BIG_C + 2 * BIG_C;
    float out1, out2;
    float *g1 = malloc(n * sizeof *g1), *g2 = malloc(n * sizeof *g2);
    run_big(1, &out1, g1);
    run_big(2, &out2, g2);
    tg_set_threads(saved);
    assert_true(isfinite(out1));
    assert_memory_equal(&out1, &out2, sizeof out1);
    assert_memory_equal(g1, g2, n * sizeof *g1);
    free(g1);
    free(g2);
}

/* ---- permute: each element where the index math puts it ------------------
 * y[i0, i1, i2, i3] = x at the index whose axis perm[d] is i_d, for every
 * perm of 4 axes (and a 3-D one), and the gradient of sum(y * g) is g put
 * back the same way. */

static void permute_values(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    const int shp[4] = {2, 3, 4, 5};
    for (int code = 0; code < 256; code++) {
        int perm[4] = {code & 3, (code >> 2) & 3, (code >> 4) & 3, code >> 6};
        if ((1 << perm[0] | 1 << perm[1] | 1 << perm[2] | 1 << perm[3]) != 15)
            continue;
        tg_tape_reset(tp);
        tg_tensor *x = tg_tape_tensor(tp, 4, shp, true);
        x->requires_grad = true;
        for (size_t e = 0; e < x->size; e++)
            x->data[e] = (float)e;
        tg_tensor *y = tg_permute(tp, x, perm);
        tg_tensor *g = tg_tape_tensor(tp, 4, y->shape, true);
        for (size_t e = 0; e < g->size; e++)
            g->data[e] = 1000.0f + (float)e;
        tg_backward(tp, tg_sum(tp, tg_mul(tp, y, g)));
        for (int d = 0; d < 4; d++)
            assert_int_equal(y->shape[d], shp[perm[d]]);
        int i[4];
        size_t ye = 0;
        for (i[0] = 0; i[0] < y->shape[0]; i[0]++)
            for (i[1] = 0; i[1] < y->shape[1]; i[1]++)
                for (i[2] = 0; i[2] < y->shape[2]; i[2]++)
                    for (i[3] = 0; i[3] < y->shape[3]; i[3]++, ye++) {
                        int xi[4];
                        for (int d = 0; d < 4; d++)
                            xi[perm[d]] = i[d];
                        size_t xe =
                            ((size_t)(xi[0] * 3 + xi[1]) * 4 + xi[2]) * 5 +
                            xi[3];
                        assert_true(y->data[ye] == (float)xe);
                        assert_true(x->grad[xe] == g->data[ye]);
                    }
    }
    /* 3-D, with a 0 dim */
    tg_tape_reset(tp);
    tg_tensor *z = tg_tape_tensor(tp, 3, (int[]){2, 0, 3}, true);
    tg_tensor *w = tg_permute(tp, z, (int[]){2, 0, 1});
    assert_int_equal(w->shape[0], 3);
    assert_int_equal(w->shape[1], 2);
    assert_int_equal(w->shape[2], 0);
    tg_tape_free(tp);
}

/* ---- misuse aborts, naming the op (and the shapes)
 * -------------------------------------------
 */

static tg_tape *mtp;
static void bad_gather_index(void)
{
    tg_tensor *t = tg_tensor_new2(3, 2);
    tg_gather_rows(mtp, t, (int[]){0, 3}, 2);
}
static void bad_slice_cols(void)
{
    tg_slice_cols(mtp, tg_tensor_new2(2, 3), 2, 4);
}
static void bad_slice_rows(void)
{
    tg_slice_rows(mtp, tg_tensor_new2(2, 3), 1, 3);
}
static void bad_transpose(void)
{
    tg_transpose(mtp, tg_tensor_new(3, (int[]){2, 2, 2}));
}
static void bad_gamma(void)
{
    tg_layer_norm(mtp, tg_tensor_new2(2, 3), tg_tensor_new(1, (int[]){2}), NULL,
                  1e-5f);
}
static void bad_bce_shapes(void)
{
    tg_bce(mtp, tg_tensor_new2(4, 3), tg_tensor_new2(4, 1));
}
static void bad_kl_prior(void)
{
    tg_tensor *q = tg_tensor_new2(2, 3), *p = tg_tensor_new2(2, 2);
    tg_kl_normals(mtp, q, q, p, p);
}
static void bad_permute_repeat(void)
{
    tg_permute(mtp, tg_tensor_new(3, (int[]){2, 3, 4}), (int[]){0, 2, 2});
}
static void bad_permute_range(void)
{
    tg_permute(mtp, tg_tensor_new2(2, 3), (int[]){0, 2});
}
static void null_permute(void) { tg_permute(mtp, tg_tensor_new2(2, 3), NULL); }
static void null_softmax(void) { tg_softmax(mtp, NULL); }
static void null_neg(void) { tg_neg(mtp, NULL); }
static void bad_div_shapes(void)
{
    tg_div(mtp, tg_tensor_new2(3, 3), tg_tensor_new(1, (int[]){2}));
}
static void null_maximum(void) { tg_maximum(mtp, tg_tensor_new2(1, 1), NULL); }
static void short_gemm_rows(void) /* A 2 x 3 with rows 2 apart */
{
    static float A[6], B[6], C[4];
    tg_gemm(false, false, 2, 2, 3, 1.0f, A, 2, B, 2, 0.0f, C, 2);
}

/* Two widths of 2^30 (0 rows: no memory) sum past INT_MAX: the int sum had
 * overflowed (undefined; a negative dim after it). */
static void wide_concat(void)
{
    tg_tensor *a = tg_tensor_new2(0, 1 << 30);
    tg_concat(mtp, 2, (tg_tensor *[]){a, a});
}

/* A bias of out elements that is not a row: a column [out, 1] (under
 * tg_add's rules one value per row) was taken as [out] without a word. */
static void dense_column_bias(void)
{
    tg_dense(mtp, tg_tensor_new2(3, 2), tg_tensor_new2(3, 2),
             tg_tensor_new2(3, 1));
}

static void misuse_aborts_naming_the_op(void **state)
{
    (void)state;
    mtp = tg_tape_new();
    expect_abort(bad_gather_index, "tapegrad: gather_rows: ");
    expect_abort(bad_slice_cols, "tapegrad: slice_cols: ");
    expect_abort(bad_slice_rows, "tapegrad: slice_rows: ");
    expect_abort(bad_transpose, "tapegrad: transpose: ");
    expect_abort(bad_gamma, "tapegrad: layer_norm: ");
    expect_abort(bad_bce_shapes, "tapegrad: bce: ");
    expect_abort(bad_kl_prior, "tapegrad: kl_normals: ");
    expect_abort(dense_column_bias, "tapegrad: dense: ", "bias [3, 1]");
    { /* a row [1, out] is the bias [out] */
        tg_tensor *x = tg_tensor_new2(2, 2), *W = tg_tensor_new2(3, 2);
        tg_tensor *b1 = tg_tensor_new(1, (int[]){3}),
                  *b2 = tg_tensor_new2(1, 3);
        for (int i = 0; i < 6; i++)
            W->data[i] = 0.25f * (float)i - 0.5f;
        for (int i = 0; i < 4; i++)
            x->data[i] = (float)i;
        for (int i = 0; i < 3; i++)
            b1->data[i] = b2->data[i] = (float)i + 0.5f;
        tg_tensor *y1 = tg_dense(mtp, x, W, b1), *y2 = tg_dense(mtp, x, W, b2);
        for (int i = 0; i < 6; i++)
            assert_true(y1->data[i] == y2->data[i] && y1->data[i] != 0.0f);
        tg_tensor *ts[] = {x, W, b1, b2};
        for (int i = 0; i < 4; i++)
            tg_tensor_free(ts[i]);
    }
    expect_abort(bad_permute_repeat, "tapegrad: permute: ", "perm[2] = 2",
                 "[2, 3, 4]");
    expect_abort(bad_permute_range, "tapegrad: permute: ", "perm[1] = 2");
    expect_abort(null_permute, "tapegrad: permute: ", "NULL perm");
    expect_abort(null_softmax, "tapegrad: softmax: ");
    expect_abort(null_neg, "tapegrad: neg: ");
    expect_abort(bad_div_shapes, "tapegrad: div: ");
    expect_abort(null_maximum, "tapegrad: maximum: ");
    expect_abort(short_gemm_rows, "tapegrad: tg_gemm: ", "lda=2 (op(A) 2x3)");
    expect_abort(wide_concat, "tapegrad: concat: ", "[0, 1073741824]",
                 "2147483648");
    tg_tape_free(mtp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zero_rows_pass_through_every_op),
        cmocka_unit_test(zero_batch_through_1d_ops),
        cmocka_unit_test(empty_inner_and_output_dims),
        cmocka_unit_test(same_bits_on_1_and_2_threads),
        cmocka_unit_test(permute_values),
        cmocka_unit_test(misuse_aborts_naming_the_op),
    };
    return cmocka_run_group_tests_name("autograd more ops: edges", tests, NULL,
                                       NULL);
}

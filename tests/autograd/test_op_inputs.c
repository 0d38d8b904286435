/* Inputs at the edges of every op: a batch of 0 rows goes through forward
 * and backward (tg_dist_share can hand a rank no rows), and a NULL tensor
 * aborts with a message naming the op instead of a segfault. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

/* ---- 0 rows ----------------------------------------------------------------
 */

enum { C = 6, OUT = 4 };
static const int no_labels[1] = {0};

/* Each entry builds one op on 0-row inputs x, x2 [0, C] (and W [OUT, C],
 * b [OUT], a row [C]); the output must have 0 rows too. */
static tg_tensor *run_op(tg_tape *tp, int op, tg_tensor *x, tg_tensor *x2,
                         tg_tensor *W, tg_tensor *b, tg_tensor *row)
{
    tg_tensor *parts[3];
    switch (op) {
    case 0:
        return tg_dense(tp, x, W, b);
    case 1:
        return tg_dense(tp, x, W, NULL);
    case 2:
        return tg_matmul(tp, x, W, false, true);
    case 3:
        return tg_add(tp, x, row);
    case 4:
        return tg_sub(tp, x, x2);
    case 5:
        return tg_mul(tp, x, row);
    case 6:
        return tg_scale(tp, x, 2.0f);
    case 7:
        return tg_add_scalar(tp, x, 2.0f);
    case 8:
        return tg_exp(tp, x);
    case 9:
        return tg_log(tp, x);
    case 10:
        return tg_sigmoid(tp, x);
    case 11:
        return tg_relu(tp, x);
    case 12:
        return tg_tanh(tp, x);
    case 13:
        return tg_softplus(tp, x);
    case 14:
        return tg_square(tp, x);
    case 15:
        return tg_clamp(tp, x, -1.0f, 1.0f);
    case 16:
        return tg_sum_rows(tp, x);
    case 17:
        return tg_mean_rows(tp, x);
    case 18:
        tg_split(tp, x, 3, parts);
        return tg_add(tp, parts[0], parts[2]);
    case 19:
        tg_split(tp, x, 1, parts);
        return parts[0];
    case 20:
        return tg_concat(tp, 2, (tg_tensor *[]){x, x2});
    case 21:
        return tg_reshape(tp, x, 3, (int[]){0, 2, C / 2});
    case 22:
        return tg_bce_with_logits(tp, x, x2);
    case 23:
        return tg_softmax_xent(tp, x, no_labels);
    case 24:
        return tg_kl_normal(tp, x, x2);
    case 25:
        return tg_nll(tp, x, no_labels);
    default:
        return NULL;
    }
}

static void test_zero_rows_pass_every_op(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new2(0, C), *x2 = tg_tensor_new2(0, C);
    tg_tensor *W = tg_tensor_new2(OUT, C), *b = tg_tensor_new(1, (int[]){OUT});
    tg_tensor *row = tg_tensor_new(1, (int[]){C});
    tg_tensor *leaves[] = {x, x2, W, b, row};
    for (int k = 0; k < 5; k++)
        tg_tensor_require_grad(leaves[k]);
    for (size_t i = 0; i < W->size; i++)
        W->data[i] = 0.5f;
    tg_tape *tp = tg_tape_new();
    int n_ops = 0;
    for (int op = 0;; op++) {
        tg_tape_reset(tp);
        tg_tensor *y = run_op(tp, op, x, x2, W, b, row);
        if (!y)
            break;
        n_ops++;
        assert_int_equal(tg_tensor_rows(y), 0);
        assert_int_equal(y->size, 0);
        tg_tensor *s = tg_sum(tp, y), *m = tg_mean(tp, y);
        assert_float_equal(s->data[0], 0.0f, 0.0f);
        assert_float_equal(m->data[0], 0.0f, 0.0f); /* mean of nothing: 0 */
        tg_backward(tp, tg_add(tp, s, m));
        for (int k = 0; k < 5; k++)
            for (size_t i = 0; i < leaves[k]->size; i++)
                assert_float_equal(leaves[k]->grad[i], 0.0f, 0.0f);
    }
    assert_int_equal(n_ops, 26);
    /* The mean of an empty batch's per-row losses is 0, gradient none. */
    tg_tape_reset(tp);
    tg_tensor *loss = tg_mean(tp, tg_bce_with_logits(tp, x, x2));
    assert_false(isnan(loss->data[0]));
    tg_tape_free(tp);
    for (int k = 0; k < 5; k++)
        tg_tensor_free(leaves[k]);
}

/* A 0-row tape tensor and a view of no rows are fine too. */
static void test_zero_row_tape_tensors(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    tg_tensor *t = tg_tape_tensor2(tp, 0, 3, true);
    assert_int_equal(t->size, 0);
    float dummy = 0.0f;
    tg_tensor *v = tg_tape_view2(tp, &dummy, 0, 3);
    assert_int_equal(tg_tensor_rows(v), 0);
    assert_int_equal(tg_tensor_cols(v), 3);
    tg_tape_free(tp);
}

/* More rows than an int holds (all dims but the last: 2^32 here) abort
 * naming the shape: the count was truncated, and an op reading it would
 * have walked a wrong number of rows. Only the shape is read, so the
 * tensor needs no data. */
static void rows_of_huge(void)
{
    tg_tensor t;
    memset(&t, 0, sizeof t);
    t.ndim = 3;
    t.shape[0] = 65536, t.shape[1] = 65536, t.shape[2] = 1;
    t.size = (size_t)1 << 32;
    tg_tensor_rows(&t);
}
static void test_rows_past_int_abort(void **state)
{
    (void)state;
    expect_abort(rows_of_huge, "tensor_rows", "[65536, 65536, 1]");
}

/* ---- split into one part ---------------------------------------------------
 * k = 1 kept its single output where backward did not look for it: forward
 * worked, backward crashed. */

static tg_tensor *f_split1(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    tg_tensor *part;
    tg_split(tp, in[0], 1, &part);
    return tg_square(tp, part);
}

static void test_split_into_one_part(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new2(3, 5);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = 0.25f * (float)i - 1.0f;
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_split1, 1, &x, NULL, NULL, &rep);
    tg_gradcheck_print(&rep, "split k=1");
    assert_true(ok);
    tg_tensor_free(x);
}

/* ---- NULL tensors ----------------------------------------------------------
 */

static tg_tensor *some(void) { return tg_tensor_new2(2, 3); }
static tg_tape *tape(void) { return tg_tape_new(); }

static void null_dense(void) { tg_dense(tape(), NULL, some(), NULL); }
static void null_dense_w(void) { tg_dense(tape(), some(), NULL, NULL); }
static void null_matmul(void) { tg_matmul(tape(), some(), NULL, false, true); }
static void null_add(void) { tg_add(tape(), some(), NULL); }
static void null_sub(void) { tg_sub(tape(), NULL, some()); }
static void null_mul(void) { tg_mul(tape(), some(), NULL); }
static void null_scale(void) { tg_scale(tape(), NULL, 1.0f); }
static void null_add_scalar(void) { tg_add_scalar(tape(), NULL, 1.0f); }
static void null_exp(void) { tg_exp(tape(), NULL); }
static void null_log(void) { tg_log(tape(), NULL); }
static void null_sigmoid(void) { tg_sigmoid(tape(), NULL); }
static void null_relu(void) { tg_relu(tape(), NULL); }
static void null_tanh(void) { tg_tanh(tape(), NULL); }
static void null_softplus(void) { tg_softplus(tape(), NULL); }
static void null_square(void) { tg_square(tape(), NULL); }
static void null_clamp(void) { tg_clamp(tape(), NULL, 0.0f, 1.0f); }
static void null_sum(void) { tg_sum(tape(), NULL); }
static void null_mean(void) { tg_mean(tape(), NULL); }
static void null_sum_rows(void) { tg_sum_rows(tape(), NULL); }
static void null_mean_rows(void) { tg_mean_rows(tape(), NULL); }
static void null_split(void)
{
    tg_tensor *parts[2];
    tg_split(tape(), NULL, 2, parts);
}
static void null_concat(void)
{
    tg_concat(tape(), 2, (tg_tensor *[]){some(), NULL});
}
static void null_reshape(void) { tg_reshape(tape(), NULL, 1, (int[]){6}); }
static void null_bce(void) { tg_bce_with_logits(tape(), some(), NULL); }
static void null_xent(void) { tg_softmax_xent(tape(), NULL, (int[]){0, 0}); }
static void null_xent_labels(void) { tg_softmax_xent(tape(), some(), NULL); }
static void null_nll(void) { tg_nll(tape(), NULL, (int[]){0, 0}); }
static void null_nll_labels(void) { tg_nll(tape(), some(), NULL); }
static void null_kl(void) { tg_kl_normal(tape(), NULL, some()); }
static void null_backward(void) { tg_backward(tape(), NULL); }

static void test_null_tensor_aborts_naming_the_op(void **state)
{
    (void)state;
    static const struct {
        misuse_fn fn;
        const char *op, *what;
    } cases[] = {
        {null_dense, "dense:", "argument 1 is NULL"},
        {null_dense_w, "dense:", "argument 2 is NULL"},
        {null_matmul, "matmul:", "argument 2 is NULL"},
        {null_add, "add:", "argument 2 is NULL"},
        {null_sub, "sub:", "argument 1 is NULL"},
        {null_mul, "mul:", "argument 2 is NULL"},
        {null_scale, "scale:", "NULL"},
        {null_add_scalar, "add_scalar:", "NULL"},
        {null_exp, "exp:", "NULL"},
        {null_log, "log:", "NULL"},
        {null_sigmoid, "sigmoid:", "NULL"},
        {null_relu, "relu:", "NULL"},
        {null_tanh, "tanh:", "NULL"},
        {null_softplus, "softplus:", "NULL"},
        {null_square, "square:", "NULL"},
        {null_clamp, "clamp:", "NULL"},
        {null_sum, "sum:", "NULL"},
        {null_mean, "mean:", "NULL"},
        {null_sum_rows, "sum_rows:", "NULL"},
        {null_mean_rows, "mean_rows:", "NULL"},
        {null_split, "split:", "NULL"},
        {null_concat, "concat:", "argument 2 is NULL"},
        {null_reshape, "reshape:", "NULL"},
        {null_bce, "bce_with_logits:", "argument 2 is NULL"},
        {null_xent, "softmax_xent:", "NULL"},
        {null_xent_labels, "softmax_xent:", "labels is NULL"},
        {null_nll, "nll:", "NULL"},
        {null_nll_labels, "nll:", "labels is NULL"},
        {null_kl, "kl_normal:", "argument 1 is NULL"},
        {null_backward, "backward:", "NULL"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        expect_abort(cases[k].fn, cases[k].op, cases[k].what);
}

/* A label outside 0..C-1 aborts naming the op, the label and its row, in
 * the first row as in any other (the range check had no test: starting
 * it at row 1 passed every test). */
static void xent_label_row0_negative(void)
{
    tg_softmax_xent(tape(), some(), (int[]){-1, 0});
}
static void xent_label_row1_past(void)
{
    tg_softmax_xent(tape(), some(), (int[]){0, 3});
}
static void nll_label_row0_past(void) { tg_nll(tape(), some(), (int[]){3, 0}); }
static void nll_label_row1_negative(void)
{
    tg_nll(tape(), some(), (int[]){2, -1});
}

static void test_label_outside_the_classes_aborts(void **state)
{
    (void)state;
    expect_abort(xent_label_row0_negative,
                 "softmax_xent:", "label -1 of row 0 outside 0..2");
    expect_abort(xent_label_row1_past,
                 "softmax_xent:", "label 3 of row 1 outside 0..2");
    expect_abort(nll_label_row0_past, "nll:", "label 3 of row 0 outside 0..2");
    expect_abort(nll_label_row1_negative,
                 "nll:", "label -1 of row 1 outside 0..2");
}

/* A bad new shape in tg_reshape (PyTorch's -1, a dim count past 4) names
 * reshape and x's shape, not a generic "tensor:". */
static void reshape_minus_one(void)
{
    tg_reshape(tape(), some(), 2, (int[]){-1, 3});
}
static void reshape_five_dims(void)
{
    tg_reshape(tape(), some(), 5, (int[]){1, 1, 1, 2, 3});
}
static void reshape_null_shape(void) { tg_reshape(tape(), some(), 2, NULL); }

static void test_bad_reshape_aborts_naming_reshape(void **state)
{
    (void)state;
    expect_abort(reshape_minus_one, "reshape:", "[2, 3]", "-1");
    expect_abort(reshape_five_dims, "reshape:", "[2, 3]", "5 dims");
    expect_abort(reshape_null_shape, "reshape:", "shape is NULL");
}

/* ---- sizes past int --------------------------------------------------------
 * Shapes tg_tensor_new accepts (size_t element counts) whose planes, batch
 * or positions an op counts in int abort at the op, naming it and the
 * shape; they wrapped, and the op read or wrote out of bounds or walked the
 * wrong elements. Each op checks before touching data, so the tensors are
 * headers over a few floats (no huge allocation: fine under ASan and
 * valgrind). */

static float few_floats[64];

static tg_tensor *header(int ndim, const int *shape)
{
    tg_tensor *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->ndim = ndim;
    t->size = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->size *= (size_t)shape[d];
    }
    t->data = few_floats;
    return t;
}

/* N * C = 2^32 planes of 1 x 2 */
static void max_pool_many_planes(void)
{
    tg_max_pool2d(tape(), header(4, (int[]){65536, 65536, 1, 2}), 1, 1, 0);
}
/* one plane of 2^16 x 2^16: argmax and i * W + j are ints */
static void avg_pool_huge_plane(void)
{
    tg_avg_pool2d(tape(), header(4, (int[]){1, 1, 65536, 65536}), 2, 2, 0);
}
static void max_pool1d_many_planes(void)
{
    tg_max_pool1d(tape(), header(3, (int[]){65536, 65536, 2}), 2, 2, 0);
}
static void upsample_many_planes(void)
{
    tg_upsample2d(tape(), header(4, (int[]){65536, 65536, 1, 1}), 2);
}
static void upsample_huge_plane(void)
{
    tg_upsample2d(tape(), header(4, (int[]){1, 1, 65536, 65536}), 1);
}

static void test_pool_planes_past_int_abort(void **state)
{
    (void)state;
    expect_abort(max_pool_many_planes, "max_pool2d:", "[65536, 65536, 1, 2]",
                 "4294967296 planes");
    expect_abort(avg_pool_huge_plane, "avg_pool2d:", "[1, 1, 65536, 65536]",
                 "at most 2147483647");
    expect_abort(max_pool1d_many_planes, "max_pool1d:", "[65536, 65536, 2]",
                 "4294967296 planes");
    expect_abort(upsample_many_planes, "upsample2d:", "[65536, 65536, 1, 1]",
                 "planes");
    expect_abort(upsample_huge_plane, "upsample2d:", "[1, 1, 65536, 65536]",
                 "planes");
}

/* C * kh * kw = 2^31 (W is [1, 2^21, 32, 32], 8 GiB as a real tensor) */
static void conv_huge_patch(void)
{
    tg_conv2d(tape(), header(4, (int[]){1, 2097152, 32, 32}),
              header(4, (int[]){1, 2097152, 32, 32}), NULL, 1, 0, 1);
}
/* conv_transpose2d's input [1, 1, 65536, 65536] (2^32 positions) with a
 * padding that makes its output small: only the output was counted */
static void conv_transpose_huge_input(void)
{
    tg_conv_transpose2d_ex(tape(), header(4, (int[]){1, 1, 65536, 65536}),
                           header(4, (int[]){1, 1, 1, 1}), NULL,
                           &(tg_conv2d_args){.padding = {32000, 32000}});
}
/* an empty batch did not count its planes: P = OH * OW wrapped */
static void conv_empty_batch_huge_plane(void)
{
    tg_conv2d(tape(), header(4, (int[]){0, 1, 65536, 65536}),
              header(4, (int[]){1, 1, 1, 1}), NULL, 1, 0, 1);
}

static void test_conv_sizes_past_int_abort(void **state)
{
    (void)state;
    expect_abort(conv_huge_patch, "conv2d:", "[1, 2097152, 32, 32]",
                 "C * kh * kw = 2147483648");
    expect_abort(conv_transpose_huge_input,
                 "conv_transpose2d:", "[1, 1, 65536, 65536]",
                 "too many output positions");
    expect_abort(conv_empty_batch_huge_plane, "conv2d:", "[0, 1, 65536, 65536]",
                 "too many output positions");
}

/* a batch of 2^32 [1, 1] matrices: its count was an int product (0) */
static void matmul_huge_batch(void)
{
    tg_matmul(tape(), header(4, (int[]){65536, 65536, 1, 1}),
              header(4, (int[]){65536, 65536, 1, 1}), false, false);
}

static void test_matmul_batch_past_int_aborts(void **state)
{
    (void)state;
    expect_abort(matmul_huge_batch, "matmul:", "[65536, 65536, 1, 1]",
                 "4294967296 matrices");
}

/* positions per channel H * W = 2^32, and B * G = 2^32 groups */
static void group_norm_huge_plane(void)
{
    tg_group_norm(tape(), header(4, (int[]){1, 1, 65536, 65536}), 1, NULL, NULL,
                  1e-5f);
}
static void group_norm_many_groups(void)
{
    tg_group_norm(tape(), header(2, (int[]){65536, 65536}), 65536, NULL, NULL,
                  1e-5f);
}

static void test_group_norm_sizes_past_int_abort(void **state)
{
    (void)state;
    expect_abort(group_norm_huge_plane, "group_norm:", "[1, 1, 65536, 65536]",
                 "4294967296 positions");
    expect_abort(group_norm_many_groups, "group_norm:", "[65536, 65536]",
                 "4294967296 groups");
}

/* conv: N * P within 65536 of INT_MAX (the chunk loops stepped c0 + G
 * images past it), and OC past tg_gemm's sizes */
static void conv_images_near_int_max(void)
{
    tg_conv2d(tape(), header(4, (int[]){INT_MAX - 10, 1, 1, 1}),
              header(4, (int[]){1, 1, 1, 1}), NULL, 1, 0, 1);
}
static void conv_channels_near_int_max(void)
{
    tg_conv2d(tape(), header(4, (int[]){1, 1, 1, 1}),
              header(4, (int[]){INT_MAX - 10, 1, 1, 1}), NULL, 1, 0, 1);
}

static void test_conv_counts_near_int_max_abort(void **state)
{
    (void)state;
    expect_abort(conv_images_near_int_max, "conv2d:", "[2147483637, 1, 1, 1]",
                 "too many output positions");
    expect_abort(conv_channels_near_int_max, "conv2d:", "OC = 2147483637",
                 "at most 2147483519");
}

/* ---- a row of more than INT_MAX - 256 columns --------------------------
 * bce_with_logits and kl_normal walk a row in tiles of 256 (j0 += 256
 * passed INT_MAX on the last one and wrapped). The row is 8 GiB of
 * mapped zeros that are only read (no gradient wanted): the zero page, not
 * memory. Skipped under ASan and valgrind, which would check every read. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OP_INPUTS_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OP_INPUTS_ASAN 1
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

static bool under_valgrind(void)
{
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND)
        return true;
#endif
    const char *pre = getenv("LD_PRELOAD");
    return pre && strstr(pre, "vgpreload");
}

static void test_row_past_int_max_minus_tile(void **state)
{
    (void)state;
#ifdef OP_INPUTS_ASAN
    skip();
#endif
    if (under_valgrind())
        skip();
    /* mapped, not calloc'd: meson's MALLOC_PERTURB_ makes glibc's calloc
     * write every byte of even a fresh mapping */
    const int cols = INT_MAX - 100; /* the last tile: 155 columns */
    size_t bytes = (size_t)cols * sizeof(float);
    float *zeros = mmap(NULL, bytes, PROT_READ,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (zeros == MAP_FAILED)
        skip(); /* no 8 GiB of address space here */
    tg_tensor *x = header(2, (int[]){1, cols});
    x->data = zeros;
    tg_tape *tp = tg_tape_new();
    tg_tensor *bce = tg_bce_with_logits(tp, x, x); /* log 2 per column */
    assert_float_equal(bce->data[0], (float)((double)cols * log(2.0)),
                       1e-5 * cols);
    tg_tensor *kl = tg_kl_normal(tp, x, x); /* N(0, 1) from itself: 0 */
    assert_float_equal(kl->data[0], 0.0f, 0.0f);
    tg_tape_free(tp);
    free(x);
    munmap(zeros, bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_rows_pass_every_op),
        cmocka_unit_test(test_zero_row_tape_tensors),
        cmocka_unit_test(test_rows_past_int_abort),
        cmocka_unit_test(test_pool_planes_past_int_abort),
        cmocka_unit_test(test_conv_sizes_past_int_abort),
        cmocka_unit_test(test_matmul_batch_past_int_aborts),
        cmocka_unit_test(test_group_norm_sizes_past_int_abort),
        cmocka_unit_test(test_conv_counts_near_int_max_abort),
        cmocka_unit_test(test_row_past_int_max_minus_tile),
        cmocka_unit_test(test_split_into_one_part),
        cmocka_unit_test(test_null_tensor_aborts_naming_the_op),
        cmocka_unit_test(test_label_outside_the_classes_aborts),
        cmocka_unit_test(test_bad_reshape_aborts_naming_reshape),
    };
    return cmocka_run_group_tests_name("autograd op inputs", tests, NULL, NULL);
}

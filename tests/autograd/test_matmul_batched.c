/* tg_matmul on batches of matrices: [..., M, K] . [..., K, N], both
 * batched or one operand 2-D and shared. Gradient checks of every form
 * (transposes, 3-D and 4-D, a shared A or B), each matrix of the result
 * against the 2-D product of its operands, the same bits on 1 and 2
 * threads, an empty batch, and misuse aborting with the op's name. */
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
#include "float_equal.h"

static uint64_t rng_state = 77;
static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) * 0x1p-53;
}
static int randint(int lo, int hi)
{
    return lo + (int)(uniform() * (hi - lo + 1));
}

static tg_tensor *rand_t(int ndim, const int *shape)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = (float)(uniform() * 4.0 - 2.0);
    return t;
}

/* An operand: batch dims (nbd of them, from batch) then the matrix rows x
 * cols, rows and cols swapped when transposed. */
static tg_tensor *operand(int nbd, const int *batch, int rows, int cols,
                          bool trans)
{
    int shape[4], nd = 0;
    for (int d = 0; d < nbd; d++)
        shape[nd++] = batch[d];
    shape[nd++] = trans ? cols : rows;
    shape[nd++] = trans ? rows : cols;
    return rand_t(nd, shape);
}

typedef struct form {
    const char *name;
    int nbd_a, nbd_b; /* batch dims of each operand: 0 (shared), 1 or 2 */
} form;

static const form forms[] = {
    {"[B,M,K].[B,K,N]", 1, 1},
    {"[B1,B2,M,K].[B1,B2,K,N]", 2, 2},
    {"[B,M,K].[K,N] (B shared)", 1, 0},
    {"[M,K].[B,K,N] (A shared)", 0, 1},
    {"[B1,B2,M,K].[K,N] (B shared)", 2, 0},
    {"[M,K].[B1,B2,K,N] (A shared)", 0, 2},
};

static bool flag_a, flag_b;
static tg_tensor *f_matmul(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    return tg_matmul(tp, in[0], in[1], flag_a, flag_b);
}

static void gradcheck_every_form(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
        for (int t = 0; t < 4; t++)
            for (int trial = 0; trial < 3; trial++) {
                flag_a = t & 1;
                flag_b = t & 2;
                /* trial 0: 1x1 matrices, a batch of one */
                int M = trial ? randint(1, 5) : 1,
                    K = trial ? randint(1, 4) : 1,
                    N = trial ? randint(1, 5) : 1;
                int batch[2] = {trial ? randint(2, 3) : 1, randint(1, 3)};
                tg_tensor *in[2] = {
                    operand(forms[f].nbd_a, batch, M, K, flag_a),
                    operand(forms[f].nbd_b, batch, K, N, flag_b)};
                tg_gradcheck_report rep;
                if (!tg_gradcheck(f_matmul, 2, in, NULL, NULL, &rep)) {
                    char name[128];
                    snprintf(name, sizeof name, "matmul %s%s%s M%d K%d N%d",
                             forms[f].name, flag_a ? " A^T" : "",
                             flag_b ? " B^T" : "", M, K, N);
                    tg_gradcheck_print(&rep, name);
                    failures++;
                }
                tg_tensor_free(in[0]);
                tg_tensor_free(in[1]);
            }
    assert_int_equal(failures, 0);
}

/* Matrix i of an operand as a 2-D tensor (shared: the operand itself). */
static tg_tensor *matrix(const tg_tensor *t, int i)
{
    int r = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
    tg_tensor *m = tg_tensor_new2(r, c);
    size_t off = t->ndim > 2 ? (size_t)i * r * c : 0;
    memcpy(m->data, t->data + off, (size_t)r * c * sizeof(float));
    return m;
}

/* Every matrix of C, and of both gradients, against 2-D products. */
static void each_matrix_is_its_product(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int M = 7, K = 5, N = 6, batch[2] = {3, 2};
            tg_tensor *a = operand(forms[f].nbd_a, batch, M, K, ta);
            tg_tensor *b = operand(forms[f].nbd_b, batch, K, N, tb);
            tg_tensor_require_grad(a);
            tg_tensor_require_grad(b);
            tg_tape_reset(tp);
            tg_tensor *c = tg_matmul(tp, a, b, ta, tb);
            int nd = c->ndim, nb = (int)(c->size / ((size_t)M * N));
            assert_int_equal(c->shape[nd - 2], M);
            assert_int_equal(c->shape[nd - 1], N);
            bool two = forms[f].nbd_a == 2 || forms[f].nbd_b == 2;
            assert_int_equal(nb, two ? 6 : 3);
            /* loss = sum(C * G) with a fixed G: dC = G */
            tg_tensor *g = rand_t(nd, c->shape);
            tg_backward(tp, tg_sum(tp, tg_mul(tp, c, g)));
            float *da = calloc(a->size, sizeof *da),
                  *db = calloc(b->size, sizeof *db);
            tg_tape *t2 = tg_tape_new();
            for (int i = 0; i < nb; i++) {
                tg_tape_reset(t2);
                tg_tensor *ai = matrix(a, i), *bi = matrix(b, i);
                tg_tensor_require_grad(ai);
                tg_tensor_require_grad(bi);
                tg_tensor *ci = tg_matmul(t2, ai, bi, ta, tb);
                tg_tensor *gi = tg_tape_tensor2(t2, M, N, false);
                memcpy(gi->data, g->data + (size_t)i * M * N,
                       (size_t)M * N * sizeof(float));
                for (int e = 0; e < M * N; e++)
                    assert_float_equal(c->data[(size_t)i * M * N + e],
                                       ci->data[e], 1e-5);
                tg_backward(t2, tg_sum(t2, tg_mul(t2, ci, gi)));
                size_t oa = a->ndim > 2 ? (size_t)i * ai->size : 0,
                       ob = b->ndim > 2 ? (size_t)i * bi->size : 0;
                for (size_t e = 0; e < ai->size; e++)
                    da[oa + e] += ai->grad[e];
                for (size_t e = 0; e < bi->size; e++)
                    db[ob + e] += bi->grad[e];
                tg_tensor_free(ai);
                tg_tensor_free(bi);
            }
            for (size_t e = 0; e < a->size; e++)
                assert_float_equal(a->grad[e], da[e], 1e-4);
            for (size_t e = 0; e < b->size; e++)
                assert_float_equal(b->grad[e], db[e], 1e-4);
            free(da);
            free(db);
            tg_tape_free(t2);
            tg_tensor_free(g);
            tg_tensor_free(a);
            tg_tensor_free(b);
        }
    tg_tape_free(tp);
}

/* The same bits on 1 and 2 threads: small matrices (dealt to the threads
 * whole) and large ones (each product threaded), shared operands too. */
static void run(int threads, int M, int K, int N, int nbd_a, int nbd_b,
                float *out)
{
    tg_set_threads(threads);
    rng_state = 5;
    int batch[2] = {8, 3};
    tg_tensor *a = operand(nbd_a, batch, M, K, false);
    tg_tensor *b = operand(nbd_b, batch, K, N, true);
    tg_tensor_require_grad(a);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *c = tg_matmul(tp, a, b, false, true);
    tg_tensor *s = tg_matmul(tp, tg_softmax(tp, c), b, false, false);
    tg_backward(tp, tg_sum(tp, tg_square(tp, s)));
    memcpy(out, c->data, c->size * sizeof *out);
    out += c->size;
    memcpy(out, a->grad, a->size * sizeof *out);
    memcpy(out + a->size, b->grad, b->size * sizeof *out);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

static void same_bits_on_1_and_2_threads(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    static const int cases[][5] = {
        {32, 24, 32, 2, 2},   /* attention-sized: dealt whole */
        {32, 24, 32, 0, 1},   /* A shared: its gradient added in order */
        {16, 24, 16, 1, 0},   /* B shared */
        {200, 96, 200, 1, 1}, /* each product threaded */
    };
    for (int k = 0; k < 4; k++) {
        const int *p = cases[k];
        size_t n =
            (size_t)24 * p[0] * p[2] * 3 + (size_t)24 * p[1] * (p[0] + p[2]);
        float *o1 = calloc(n, sizeof *o1), *o2 = calloc(n, sizeof *o2);
        run(1, p[0], p[1], p[2], p[3], p[4], o1);
        run(2, p[0], p[1], p[2], p[3], p[4], o2);
        assert_memory_equal(o1, o2, n * sizeof *o1);
        bool nonzero = false;
        for (size_t e = 0; e < n && !nonzero; e++)
            nonzero = o1[e] != 0.0f;
        assert_true(nonzero);
        free(o1);
        free(o2);
    }
    tg_set_threads(saved);
}

/* A batch of no matrices, and matrices of no columns, forward and back. */
static void empty_batches(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    tg_tensor *a = tg_tape_tensor(tp, 3, (int[]){0, 3, 4}, true);
    tg_tensor *b = tg_tape_tensor(tp, 3, (int[]){0, 4, 5}, true);
    a->requires_grad = b->requires_grad = true;
    tg_tensor *c = tg_matmul(tp, a, b, false, false);
    assert_int_equal(c->ndim, 3);
    assert_int_equal(c->shape[0], 0);
    assert_int_equal(c->shape[2], 5);
    tg_backward(tp, tg_sum(tp, c));
    /* shared B [4, 0]: C [2, 3, 0]; A's gradient is zeros */
    tg_tape_reset(tp);
    a = tg_tape_tensor(tp, 3, (int[]){2, 3, 4}, true);
    b = tg_tape_tensor(tp, 2, (int[]){4, 0}, true);
    a->requires_grad = b->requires_grad = true;
    for (size_t e = 0; e < a->size; e++)
        a->data[e] = 1.0f;
    c = tg_matmul(tp, a, b, false, false);
    assert_int_equal(c->shape[2], 0);
    tg_backward(tp, tg_add(tp, tg_sum(tp, c), tg_sum(tp, a)));
    for (size_t e = 0; e < a->size; e++)
        assert_true(a->grad[e] == 1.0f);
    /* the other way round, a shared A [5, 4] (a long-lived leaf: its
     * gradient on the heap, exactly its size) times a batch of B [4, 0]
     * (plain, transposed, 4-D): B has a stride of 0 floats, and was taken
     * for a shared B, flattening A's rows: dA was written 2·5·4 floats
     * past its end (ASan, valgrind; a SIGSEGV for large sizes) */
    static const int bshape[3][4] = {{3, 4, 0}, {3, 0, 4}, {2, 3, 4, 0}};
    for (int k = 0; k < 3; k++) {
        tg_tape_reset(tp);
        tg_tensor *A = tg_tensor_new2(5, 4);
        tg_tensor_require_grad(A);
        b = tg_tape_tensor(tp, k == 2 ? 4 : 3, bshape[k], true);
        b->requires_grad = true;
        for (size_t e = 0; e < A->size; e++)
            A->data[e] = 1.0f;
        c = tg_matmul(tp, A, b, false, k == 1);
        assert_int_equal(c->ndim, b->ndim);
        assert_int_equal(c->shape[c->ndim - 2], 5);
        assert_int_equal(c->shape[c->ndim - 1], 0);
        tg_backward(tp, tg_add(tp, tg_sum(tp, c), tg_sum(tp, A)));
        for (size_t e = 0; e < A->size; e++)
            assert_true(A->grad[e] == 1.0f);
        tg_tensor_free(A);
    }
    tg_tape_free(tp);
}

static tg_tape *mtp;
static void batch_dims_differ(void)
{
    tg_matmul(mtp, tg_tensor_new(3, (int[]){2, 3, 4}),
              tg_tensor_new(3, (int[]){3, 4, 5}), false, false);
}
static void batch_ranks_differ(void)
{
    tg_matmul(mtp, tg_tensor_new(4, (int[]){2, 1, 3, 4}),
              tg_tensor_new(3, (int[]){2, 4, 5}), false, false);
}
static void vector_operand(void)
{
    tg_matmul(mtp, tg_tensor_new(1, (int[]){4}), tg_tensor_new2(4, 5), false,
              false);
}
static void inner_dims_differ(void)
{
    tg_matmul(mtp, tg_tensor_new(3, (int[]){2, 3, 4}), tg_tensor_new2(5, 4),
              false, false);
}

static void misuse_aborts_naming_the_op(void **state)
{
    (void)state;
    mtp = tg_tape_new();
    expect_abort(batch_dims_differ, "tapegrad: matmul: ", "[2, 3, 4]",
                 "[3, 4, 5]");
    expect_abort(batch_ranks_differ, "tapegrad: matmul: ", "batch dims");
    expect_abort(vector_operand, "tapegrad: matmul: ", "[4]");
    expect_abort(inner_dims_differ, "tapegrad: matmul: ", "inner dims");
    tg_tape_free(mtp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gradcheck_every_form),
        cmocka_unit_test(each_matrix_is_its_product),
        cmocka_unit_test(same_bits_on_1_and_2_threads),
        cmocka_unit_test(empty_batches),
        cmocka_unit_test(misuse_aborts_naming_the_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

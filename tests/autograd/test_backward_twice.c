/* tg_backward called more than once on one tape (two losses sharing a
 * hidden layer, or one loss twice) adds into the leaves exactly what one
 * backward of the sum would (PyTorch's retain_graph=True), and a loss from
 * another tape is refused. Before, the second walk added the first walk's
 * intermediate gradients again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

static uint64_t rng_state = 777;

static float uniform(float lo, float hi)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    double u = (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
    return lo + (float)u * (hi - lo);
}

static int randint(int lo, int hi) { return lo + (int)uniform(0, hi - lo + 1); }

static tg_tensor *param(int rows, int cols)
{
    tg_tensor *t = tg_tensor_new2(rows, cols);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = uniform(-1.0f, 1.0f);
    tg_tensor_require_grad(t);
    return t;
}

enum { X, W1, B1, W2, B2, W3, N_LEAVES };

typedef struct net {
    tg_tensor *leaf[N_LEAVES];
} net;

/* A shared hidden layer h and two heads on it: l1 through a dense layer,
 * l2 through a split and a product (a multi-output op inside the graph). */
static void heads(tg_tape *tp, net *n, tg_tensor **l1, tg_tensor **l2)
{
    tg_tensor **p = n->leaf;
    tg_tensor *h = tg_tanh(tp, tg_dense(tp, p[X], p[W1], p[B1]));
    *l1 = tg_mean(tp, tg_square(tp, tg_dense(tp, h, p[W2], p[B2])));
    tg_tensor *parts[2];
    tg_split(tp, tg_mul(tp, h, h), 2, parts);
    tg_tensor *g = tg_dense(tp, tg_sigmoid(tp, parts[0]), p[W3], NULL);
    *l2 = tg_sum(tp, tg_mul(tp, g, parts[1]));
}

static void zero_grads(net *n)
{
    for (int k = 0; k < N_LEAVES; k++)
        tg_tensor_zero_grad(n->leaf[k]);
}

static void expect_same_grads(net *n, float **want)
{
    for (int k = 0; k < N_LEAVES; k++)
        for (size_t i = 0; i < n->leaf[k]->size; i++) {
            float got = n->leaf[k]->grad[i], w = want[k][i];
            if (fabsf(got - w) > 1e-5f + 1e-4f * fabsf(w)) {
                printf("leaf %d [%zu]: %.9g, expected %.9g\n", k, i,
                       (double)got, (double)w);
                fail();
            }
        }
}

static void test_two_heads_match_backward_of_the_sum(void **state)
{
    (void)state;
    for (int trial = 0; trial < 20; trial++) {
        int B = randint(1, 6), in = randint(1, 7), hid = 2 * randint(1, 5);
        int out = randint(1, 5);
        net n = {{param(B, in), param(hid, in), param(1, hid), param(out, hid),
                  param(1, out), param(hid / 2, hid / 2)}};
        float *want[N_LEAVES];
        tg_tape *tp = tg_tape_new();
        tg_tensor *l1, *l2;
        heads(tp, &n, &l1, &l2);
        tg_backward(tp, tg_add(tp, l1, l2));
        for (int k = 0; k < N_LEAVES; k++) {
            want[k] = malloc(n.leaf[k]->size * sizeof(float));
            memcpy(want[k], n.leaf[k]->grad, n.leaf[k]->size * sizeof(float));
        }
        zero_grads(&n);
        tg_tape_reset(tp);
        heads(tp, &n, &l1, &l2);
        tg_backward(tp, l1);
        tg_backward(tp, l2);
        expect_same_grads(&n, want);

        /* The same loss twice is twice the gradient. */
        for (int k = 0; k < N_LEAVES; k++)
            for (size_t i = 0; i < n.leaf[k]->size; i++)
                want[k][i] = 2.0f * n.leaf[k]->grad[i];
        zero_grads(&n);
        tg_tape_reset(tp);
        heads(tp, &n, &l1, &l2);
        tg_tensor *l = tg_add(tp, l1, l2);
        tg_backward(tp, l);
        tg_backward(tp, l);
        expect_same_grads(&n, want);
        for (int k = 0; k < N_LEAVES; k++) {
            free(want[k]);
            tg_tensor_free(n.leaf[k]);
        }
        tg_tape_free(tp);
    }
}

/* The numbers: loss and gradient of a small shared layer. */
static void test_one_loss_twice_is_twice_the_gradient(void **state)
{
    (void)state;
    tg_tensor *w = param(1, 3);
    tg_tape *tp = tg_tape_new();
    tg_tensor *h = tg_exp(tp, tg_scale(tp, w, 0.5f));
    tg_tensor *l = tg_sum(tp, tg_square(tp, h));
    tg_backward(tp, l);
    float once[3];
    memcpy(once, w->grad, sizeof once);
    tg_backward(tp, l);
    for (int i = 0; i < 3; i++)
        assert_float_equal(w->grad[i], 2.0f * once[i], 1e-6f * fabsf(once[i]));
    tg_tape_free(tp);
    tg_tensor_free(w);
}

/* A long-lived tensor marked requires_grad by hand (no
 * tg_tensor_require_grad) gets its gradient on the heap, not on the arena
 * that the next reset hands to other tensors. */
static void test_hand_marked_leaf_keeps_its_gradient_across_resets(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new2(2, 3);
    x->requires_grad = true;
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, tg_sum(tp, tg_scale(tp, x, 3.0f)));
    tg_tape_reset(tp);
    for (int k = 0; k < 4; k++) { /* the arena's memory, reused */
        tg_tensor *t = tg_tape_tensor2(tp, 2, 3, false);
        for (size_t i = 0; i < t->size; i++)
            t->data[i] = 7.0f;
    }
    for (size_t i = 0; i < x->size; i++)
        assert_float_equal(x->grad[i], 3.0f, 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void misuse_other_tape(void)
{
    tg_tensor *w = param(2, 3);
    tg_tape *tp1 = tg_tape_new(), *tp2 = tg_tape_new();
    tg_tensor *loss = tg_sum(tp1, tg_exp(tp1, w));
    tg_backward(tp2, loss);
}

static void test_loss_from_another_tape_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_other_tape, "backward", "another tape");
}

/* A leaf (a parameter) passed as the loss: it was taken, its gradient set
 * to 1, though no op computed it on the tape. */
static void misuse_leaf_loss(void)
{
    tg_tensor *w = param(1, 1);
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, w);
}

static void test_leaf_as_loss_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_leaf_loss, "backward", "[1, 1] is a leaf");
}

/* An op on one tape whose input another tape computed: backward on this
 * tape cannot reach the other tape's records, so the gradient stopped there
 * without a word (the weight's gradient stayed 0). Now refused, naming the
 * op and the input's shape. */
static void misuse_input_from_another_tape(void)
{
    tg_tensor *w = param(2, 3);
    tg_tape *tp1 = tg_tape_new(), *tp2 = tg_tape_new();
    tg_tensor *h = tg_exp(tp1, w);
    tg_backward(tp2, tg_sum(tp2, tg_scale(tp2, h, 2.0f)));
}

static void test_input_computed_on_another_tape_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_input_from_another_tape, "scale", "input 0 [2, 3]",
                 "another tape");
}

/* concat records a stand-in input (the last one that requires grad), so
 * the check saw that one alone: an input another tape computed ahead of it
 * went through, and its gradient stopped at the tape's edge without a word
 * (w's gradient stayed 0). */
static void misuse_concat_input_from_another_tape(void)
{
    tg_tensor *w = param(2, 3), *v = param(2, 3);
    tg_tape *tp1 = tg_tape_new(), *tp2 = tg_tape_new();
    tg_tensor *h = tg_exp(tp1, w);
    tg_tensor *c = tg_concat(tp2, 2, (tg_tensor *[]){h, v});
    tg_backward(tp2, tg_sum(tp2, c));
}

static void test_concat_input_computed_on_another_tape_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_concat_input_from_another_tape, "concat",
                 "input 0 [2, 3]", "another tape");
}

/* What stays allowed across tapes: a leaf made on another tape and marked
 * requires_grad by hand (tg_gradcheck's inputs) gets its gradient, and a
 * detached result of another tape is a constant. */
static void test_leaf_or_detached_from_another_tape_works(void **state)
{
    (void)state;
    tg_tensor *w = param(2, 3);
    tg_tape *tp1 = tg_tape_new(), *tp2 = tg_tape_new();
    tg_tensor *leaf = tg_tape_tensor2(tp1, 2, 3, false);
    for (size_t i = 0; i < leaf->size; i++)
        leaf->data[i] = (float)i;
    leaf->requires_grad = true;
    tg_tensor *c = tg_detach(tp1, tg_exp(tp1, w));
    tg_backward(tp2, tg_sum(tp2, tg_mul(tp2, tg_scale(tp2, leaf, 3.0f), c)));
    for (size_t i = 0; i < leaf->size; i++)
        assert_float_equal(leaf->grad[i], 3.0f * expf(w->data[i]), 1e-5f);
    for (size_t i = 0; i < w->size; i++) /* the detached path: none */
        assert_float_equal(w->grad[i], 0.0f, 0.0f);
    tg_tape_free(tp1);
    tg_tape_free(tp2);
    tg_tensor_free(w);
}

/* A leaf of another tape used over several steps of this one, reset between
 * them: its gradient accumulates over the steps, as a long-lived tensor's.
 * It was allocated on this tape's arena, so after the reset the leaf still
 * pointed at memory the next step handed to other tensors: backward added
 * into (and over) them, and the leaf's gradient started from their data. */
static void
test_leaf_of_another_tape_keeps_its_gradient_past_a_reset(void **state)
{
    (void)state;
    tg_tape *tp1 = tg_tape_new(), *tp2 = tg_tape_new();
    tg_tensor *leaf = tg_tape_tensor2(tp1, 2, 3, false);
    for (size_t i = 0; i < leaf->size; i++)
        leaf->data[i] = 0.1f * (float)(i + 1);
    leaf->requires_grad = true;
    for (int step = 1; step <= 3; step++) {
        tg_tape_reset(tp2);
        tg_tensor *loss = tg_sum(tp2, tg_square(tp2, leaf));
        /* a tensor where the previous step's gradients were */
        tg_tensor *other = tg_tape_tensor2(tp2, step == 1 ? 1 : 64, 64, false);
        for (size_t i = 0; i < other->size; i++)
            other->data[i] = 1000.0f;
        tg_backward(tp2, loss);
        for (size_t i = 0; i < leaf->size; i++)
            assert_float_equal(leaf->grad[i], 2.0f * leaf->data[i] * step,
                               1e-5f);
        for (size_t i = 0; i < other->size; i++)
            assert_float_equal(other->data[i], 1000.0f, 0.0f);
    }
    tg_tape_free(tp2);
    tg_tape_free(tp1);
}

/* A loss kept past tg_tape_reset: the tape has forgotten its records, so
 * backward walked nothing and left every gradient as it was. Refused. */
static void misuse_loss_from_before_reset(void)
{
    tg_tensor *w = param(2, 3);
    tg_tape *tp = tg_tape_new();
    tg_tensor *loss = tg_sum(tp, tg_exp(tp, w));
    tg_backward(tp, loss);
    tg_tape_reset(tp);
    tg_backward(tp, loss);
}

static void test_loss_from_before_reset_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_loss_from_before_reset, "backward", "[1]",
                 "tg_tape_reset");
}

/* The same, with the arena reused after the reset, so the loss's header
 * now holds other data: the message's shape string overran its buffer
 * (a segfault) instead of aborting with a message. */
static void misuse_loss_overwritten_after_reset(void)
{
    tg_tensor *w = param(2, 3);
    tg_tape *tp = tg_tape_new();
    tg_tensor *loss = tg_sum(tp, tg_exp(tp, w));
    tg_tape_reset(tp);
    tg_tensor *junk = tg_tape_tensor2(tp, 64, 64, false);
    for (size_t i = 0; i < junk->size; i++)
        junk->data[i] = 1e9f;
    tg_backward(tp, loss);
}

static void test_loss_overwritten_after_reset_aborts(void **state)
{
    (void)state;
    expect_abort(misuse_loss_overwritten_after_reset, "backward");
}

/* Freeing a tape tensor (free() of arena memory) and a view of NULL data:
 * crashes later and elsewhere; now messages naming the call. */
static void misuse_free_tape_tensor(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor_free(tg_tape_tensor2(tp, 2, 3, true));
}

static void misuse_view_of_null(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tape_view2(tp, NULL, 4, 3);
}

static void test_free_tape_tensor_and_null_view_abort(void **state)
{
    (void)state;
    expect_abort(misuse_free_tape_tensor, "tensor_free", "[2, 3]", "tape");
    expect_abort(misuse_view_of_null, "tape_view2", "NULL", "4 x 3");
    tg_tape *tp = tg_tape_new(); /* a view of 0 rows needs no memory */
    assert_int_equal((int)tg_tape_view2(tp, NULL, 0, 3)->size, 0);
    tg_tape_free(tp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_heads_match_backward_of_the_sum),
        cmocka_unit_test(test_one_loss_twice_is_twice_the_gradient),
        cmocka_unit_test(test_loss_from_another_tape_aborts),
        cmocka_unit_test(test_input_computed_on_another_tape_aborts),
        cmocka_unit_test(test_concat_input_computed_on_another_tape_aborts),
        cmocka_unit_test(test_leaf_or_detached_from_another_tape_works),
        cmocka_unit_test(
            test_leaf_of_another_tape_keeps_its_gradient_past_a_reset),
        cmocka_unit_test(test_loss_from_before_reset_aborts),
        cmocka_unit_test(test_loss_overwritten_after_reset_aborts),
        cmocka_unit_test(test_leaf_as_loss_aborts),
        cmocka_unit_test(test_free_tape_tensor_and_null_view_abort),
        cmocka_unit_test(
            test_hand_marked_leaf_keeps_its_gradient_across_resets),
    };
    return cmocka_run_group_tests_name("autograd backward twice", tests, NULL,
                                       NULL);
}

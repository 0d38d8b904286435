/* tg_dropout: the fraction dropped and the mean kept, the three modes
 * (train, eval, auto = the tape's recording), the same mask for a seed on 1
 * and 2 threads, a gradient check through a fixed mask (in train and auto
 * mode), and misuse. The statistical bounds are > 6 standard deviations
 * wide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_nn.h"

#define ROWS 300
#define COLS 400 /* 120,000 elements: the masked scale runs on 2 threads */

static tg_tensor *ones(void)
{
    tg_tensor *x = tg_tensor_new2(ROWS, COLS);
    for (size_t k = 0; k < x->size; k++)
        x->data[k] = 1.0f;
    return x;
}

static void drops_a_fraction_p_and_keeps_the_mean(void **state)
{
    (void)state;
    tg_tensor *x = ones();
    tg_tape *tp = tg_tape_new();
    const float ps[] = {0.1f, 0.5f, 0.8f};
    for (int c = 0; c < 3; c++) {
        float p = ps[c];
        tg_rng rng;
        tg_rng_seed(&rng, 7, (uint64_t)c);
        tg_tensor *y = tg_dropout(tp, x, p, &rng, TG_DROPOUT_TRAIN);
        size_t dropped = 0;
        double sum = 0;
        for (size_t k = 0; k < y->size; k++) {
            dropped += y->data[k] == 0.0f;
            sum += y->data[k];
            /* survivors are exactly x / (1 - p) */
            assert_true(y->data[k] == 0.0f || y->data[k] == 1.0f / (1.0f - p));
        }
        double n = (double)y->size, frac = (double)dropped / n;
        double mean = sum / n;
        printf("p = %.1f: dropped %.4f, mean %.4f\n", (double)p, frac, mean);
        assert_true(fabs(frac - p) < 6.0 * sqrt(p * (1 - p) / n));
        assert_true(fabs(mean - 1.0) < 6.0 * sqrt(p / (1 - p) / n));
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* EVAL returns x itself and draws nothing; TRAIN drops with recording off
 * (MC dropout); AUTO follows the tape's recording. */
static void modes_decide_not_the_tape_alone(void **state)
{
    (void)state;
    tg_tensor *x = ones();
    tg_tape *tp = tg_tape_new();
    tg_rng rng, before;
    tg_rng_seed(&rng, 3, 0);
    before = rng;
    assert_ptr_equal(tg_dropout(tp, x, 0.5f, &rng, TG_DROPOUT_EVAL), x);
    assert_ptr_equal(tg_dropout(tp, x, 0.5f, NULL, TG_DROPOUT_EVAL), x);
    assert_ptr_equal(tg_dropout(tp, x, 0.0f, &rng, TG_DROPOUT_TRAIN), x);
    assert_memory_equal(&rng, &before, sizeof rng);

    tg_tape_set_recording(tp, false);
    assert_ptr_equal(tg_dropout(tp, x, 0.5f, &rng, TG_DROPOUT_AUTO), x);
    assert_memory_equal(&rng, &before, sizeof rng);
    tg_tensor *mc = tg_dropout(tp, x, 0.5f, &rng, TG_DROPOUT_TRAIN);
    assert_ptr_not_equal(mc, x);
    assert_false(mc->requires_grad);
    size_t zeros = 0;
    for (size_t k = 0; k < mc->size; k++)
        zeros += mc->data[k] == 0.0f;
    assert_true(zeros > 0 && zeros < mc->size);

    tg_tape_set_recording(tp, true);
    tg_tensor *on = tg_dropout(tp, x, 0.5f, &rng, TG_DROPOUT_AUTO);
    assert_ptr_not_equal(on, x);
    tg_tensor *all = tg_dropout(tp, x, 1.0f, &rng, TG_DROPOUT_TRAIN);
    for (size_t k = 0; k < all->size; k++)
        assert_true(all->data[k] == 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* Output and gradient bits for one seed on `threads` threads. */
static void run(int threads, float *y_out, float *g_out)
{
    tg_set_threads(threads);
    tg_tensor *x = tg_tensor_new2(ROWS, COLS);
    for (size_t k = 0; k < x->size; k++)
        x->data[k] = (float)(k % 97) * 0.01f - 0.3f;
    tg_tensor_require_grad(x);
    tg_rng rng;
    tg_rng_seed(&rng, 11, 5);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_dropout(tp, x, 0.3f, &rng, TG_DROPOUT_TRAIN);
    memcpy(y_out, y->data, y->size * sizeof(float));
    tg_backward(tp, tg_sum(tp, tg_square(tp, y)));
    memcpy(g_out, x->grad, x->size * sizeof(float));
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void same_seed_same_mask_on_1_and_2_threads(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    size_t n = (size_t)ROWS * COLS;
    float *y1 = malloc(n * sizeof *y1), *y2 = malloc(n * sizeof *y2);
    float *g1 = malloc(n * sizeof *g1), *g2 = malloc(n * sizeof *g2);
    run(1, y1, g1);
    run(2, y2, g2);
    tg_set_threads(saved);
    assert_memory_equal(y1, y2, n * sizeof *y1);
    assert_memory_equal(g1, g2, n * sizeof *g1);
    free(y1);
    free(y2);
    free(g1);
    free(g2);
}

/* f re-seeds its generator, so every evaluation draws the same mask. */
static tg_tensor *f_dropout(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    tg_rng rng;
    tg_rng_seed(&rng, 99, 0);
    return tg_dropout(tp, in[0], 0.4f, &rng, TG_DROPOUT_TRAIN);
}

/* tg_gradcheck of f on a 5 x 7 input */
static void check_gradient(tg_graph_fn f, const char *what)
{
    tg_tensor *x = tg_tensor_new2(5, 7);
    for (size_t k = 0; k < x->size; k++)
        x->data[k] = (float)k * 0.1f - 1.0f;
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f, 1, &x, NULL, NULL, &rep);
    tg_gradcheck_print(&rep, what);
    assert_true(ok);
    tg_tensor_free(x);
}

static void gradient_check_through_a_fixed_mask(void **state)
{
    (void)state;
    check_gradient(f_dropout, "dropout 0.4");
}

/* TG_DROPOUT_AUTO drops while the tape records: the check's differences
 * must run on a recording tape too, or they differentiate another graph. */
static tg_tensor *f_dropout_auto(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    tg_rng rng;
    tg_rng_seed(&rng, 99, 0);
    return tg_tanh(tp, tg_dropout(tp, in[0], 0.4f, &rng, TG_DROPOUT_AUTO));
}

static void gradient_check_through_auto_mode(void **state)
{
    (void)state;
    check_gradient(f_dropout_auto, "dropout 0.4, auto mode");
}

static bool aborts(void (*f)(void))
{
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr))
            _exit(1);
        f();
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void p_too_large(void)
{
    tg_tape *tp = tg_tape_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_dropout(tp, tg_tensor_new2(2, 2), 1.5f, &rng, TG_DROPOUT_TRAIN);
}
static void p_nan(void)
{
    tg_tape *tp = tg_tape_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_dropout(tp, tg_tensor_new2(2, 2), NAN, &rng, TG_DROPOUT_TRAIN);
}
static void no_rng(void)
{
    tg_tape *tp = tg_tape_new();
    tg_dropout(tp, tg_tensor_new2(2, 2), 0.5f, NULL, TG_DROPOUT_TRAIN);
}

static void misuse_aborts(void **state)
{
    (void)state;
    assert_true(aborts(p_too_large));
    assert_true(aborts(p_nan));
    assert_true(aborts(no_rng));
}

/* One draw from rng per call; element k and k + 1 (one 64-bit draw) and
 * the blocks are independent: the drop fractions of even and odd positions
 * and of both in a pair match p and p^2 within 6 standard errors. */
static void one_draw_and_independent_halves(void **state)
{
    (void)state;
    tg_tensor *x = ones();
    tg_tape *tp = tg_tape_new();
    tg_rng rng, after;
    tg_rng_seed(&rng, 3, 3);
    after = rng;
    tg_rng_u64(&after);
    const float p = 0.4f;
    tg_tensor *y = tg_dropout(tp, x, p, &rng, TG_DROPOUT_TRAIN);
    assert_memory_equal(&rng, &after, sizeof rng);
    size_t pairs = y->size / 2, even = 0, odd = 0, both = 0;
    for (size_t j = 0; j < pairs; j++) {
        bool a = y->data[2 * j] == 0.0f, b = y->data[2 * j + 1] == 0.0f;
        even += a, odd += b, both += a && b;
    }
    double n = (double)pairs, q = (double)p * p;
    assert_true(fabs(even / n - p) < 6.0 * sqrt(p * (1 - p) / n));
    assert_true(fabs(odd / n - p) < 6.0 * sqrt(p * (1 - p) / n));
    assert_true(fabs(both / n - q) < 6.0 * sqrt(q * (1 - q) / n));
    /* blocks of 16,384 are not copies of each other */
    assert_true(memcmp(y->data, y->data + 16384, 16384 * sizeof(float)) != 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(drops_a_fraction_p_and_keeps_the_mean),
        cmocka_unit_test(one_draw_and_independent_halves),
        cmocka_unit_test(modes_decide_not_the_tape_alone),
        cmocka_unit_test(same_seed_same_mask_on_1_and_2_threads),
        cmocka_unit_test(gradient_check_through_a_fixed_mask),
        cmocka_unit_test(gradient_check_through_auto_mode),
        cmocka_unit_test(misuse_aborts),
    };
    return cmocka_run_group_tests_name("nn dropout", tests, NULL, NULL);
}

/* The tape: records, reset, recording off, allocation-free steps, the
 * messages API misuse dies with, checks and the profile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "expect_abort.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tg_autograd.h"
#include "float_equal.h"

#if defined(__SANITIZE_ADDRESS__)
#define TG_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_TEST_ASAN 1
#endif
#endif
#ifdef TG_TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

static tg_tensor *filled(int rows, int cols, float start)
{
    tg_tensor *t = tg_tensor_new2(rows, cols);
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = start + 0.01f * (float)i;
    return t;
}

/* One "training step" of a small MLP on the tape. */
static float step(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b)
{
    tg_tape_reset(tp);
    tg_tensor *h = tg_relu(tp, tg_dense(tp, x, W, b));
    tg_tensor *loss = tg_mean(tp, tg_square(tp, h));
    tg_backward(tp, loss);
    return loss->data[0];
}

static void test_steps_after_warmup_do_not_allocate(void **state)
{
    (void)state;
    tg_tensor *x = filled(64, 300, -1.0f), *W = filled(500, 300, -0.5f);
    tg_tensor *b = filled(1, 500, 0.0f);
    tg_tensor_require_grad(W);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    step(tp, x, W, b); /* grows the arena past its first block */
    step(tp, x, W, b); /* runs on the coalesced block */
    size_t allocs = tg_tape_heap_allocs(tp), bytes = tg_tape_arena_bytes(tp);
    for (int i = 0; i < 5; i++)
        step(tp, x, W, b);
    assert_int_equal(tg_tape_heap_allocs(tp), allocs);
    assert_int_equal(tg_tape_arena_bytes(tp), bytes);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(W);
    tg_tensor_free(b);
}

static void test_gradients_accumulate_until_zeroed(void **state)
{
    (void)state;
    tg_tensor *x = filled(2, 3, 0.5f);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, tg_sum(tp, tg_scale(tp, x, 3.0f)));
    tg_tape_reset(tp);
    tg_backward(tp, tg_sum(tp, tg_scale(tp, x, 3.0f)));
    for (size_t i = 0; i < x->size; i++)
        assert_float_equal(x->grad[i], 6.0f, 0.0f);
    tg_tensor_zero_grad(x);
    assert_float_equal(x->grad[0], 0.0f, 0.0f);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void test_recording_off_keeps_no_records(void **state)
{
    (void)state;
    tg_tensor *x = filled(4, 4, 0.1f);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    bool was = tg_tape_set_recording(tp, false);
    assert_true(was);
    tg_tensor *y = tg_exp(tp, tg_sum(tp, x));
    assert_int_equal(tg_tape_records(tp), 0);
    assert_false(y->requires_grad);
    tg_tape_set_recording(tp, true);
    tg_exp(tp, tg_sum(tp, x));
    assert_int_equal(tg_tape_records(tp), 2);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void test_constants_record_nothing(void **state)
{
    (void)state;
    tg_tensor *x = filled(4, 4, 0.1f); /* no requires_grad */
    tg_tape *tp = tg_tape_new();
    tg_exp(tp, x);
    assert_int_equal(tg_tape_records(tp), 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void test_reshape_is_a_view(void **state)
{
    (void)state;
    tg_tensor *x = filled(2, 6, 0.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_reshape(tp, x, 3, (int[]){3, 2, 2});
    assert_ptr_equal(y->data, x->data);
    assert_int_equal(tg_tensor_rows(y), 6);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void test_view_reads_caller_memory_without_copy(void **state)
{
    (void)state;
    float buf[6] = {1, 2, 3, 4, 5, 6};
    tg_tensor *W = filled(2, 3, 0.5f);
    tg_tensor_require_grad(W);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_view2(tp, buf + 3, 1, 3); /* the second row */
    assert_ptr_equal(x->data, buf + 3);
    assert_false(x->requires_grad);
    tg_tensor *y = tg_dense(tp, x, W, NULL); /* [1, 2] */
    assert_float_equal(y->data[0], 4 * 0.5f + 5 * 0.51f + 6 * 0.52f, 1e-5f);
    tg_backward(tp, tg_sum(tp, y));
    assert_float_equal(W->grad[1], 5.0f, 0.0f); /* dW = dy^T x */
    for (int i = 0; i < 6; i++)
        assert_float_equal(buf[i], (float)(i + 1), 0.0f); /* untouched */
    tg_tape_free(tp);
    tg_tensor_free(W);
}

/* ---- misuse dies with a message naming the op and the shapes ------------ */

static void misuse_dense(void)
{
    tg_tape *tp = tg_tape_new();
    tg_dense(tp, tg_tensor_new2(4, 3), tg_tensor_new2(5, 7), NULL);
}
static void misuse_add(void)
{
    tg_tape *tp = tg_tape_new();
    tg_add(tp, tg_tensor_new2(4, 3), tg_tensor_new2(2, 3));
}
static void misuse_matmul(void)
{
    tg_tape *tp = tg_tape_new();
    tg_matmul(tp, tg_tensor_new2(4, 3), tg_tensor_new2(4, 3), false, false);
}
static void misuse_split(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *parts[3];
    tg_split(tp, tg_tensor_new2(2, 5), 3, parts);
}
static void misuse_backward(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tensor_new2(2, 3);
    tg_tensor_require_grad(x);
    tg_backward(tp, tg_exp(tp, x));
}
static void misuse_bce(void)
{
    tg_tape *tp = tg_tape_new();
    tg_bce_with_logits(tp, tg_tensor_new2(2, 3), tg_tensor_new2(3, 2));
}

/* a [B, C, H, W] map with B labels (PyTorch's dim-1 classes): read past
 * the labels' end before (an ASan stack-buffer overflow) */
static void misuse_xent_rank(void)
{
    tg_tape *tp = tg_tape_new();
    int labels[2] = {0, 1};
    tg_softmax_xent(tp, tg_tensor_new(4, (int[]){2, 3, 4, 4}), labels);
}
static void misuse_nll_rank(void)
{
    tg_tape *tp = tg_tape_new();
    int labels[2] = {0, 1};
    tg_nll(tp, tg_tensor_new(3, (int[]){2, 3, 4}), labels);
}

static void test_misuse_aborts_naming_op_and_shapes(void **state)
{
    (void)state;
    expect_abort(misuse_dense, "dense", "[4, 3]");
    expect_abort(misuse_add, "add", "[2, 3]");
    expect_abort(misuse_matmul, "matmul", "[4, 3]");
    expect_abort(misuse_split, "split", "[2, 5]");
    expect_abort(misuse_backward, "backward", "[2, 3]");
    expect_abort(misuse_bce, "bce_with_logits", "[3, 2]");
    expect_abort(misuse_xent_rank, "softmax_xent",
                 "[2, 3, 4, 4] must be [R, C]");
    expect_abort(misuse_nll_rank, "nll", "[2, 3, 4] must be [R, C]");
}

/* ---- TG_TAPE_CHECKS: a tensor changed between an op's forward and its
 * backward (exp's backward reads its output; mul's its inputs) aborts,
 * naming the op, instead of giving a wrong gradient. */
static void changed_output(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *w = tg_tensor_new2(2, 3);
    tg_tensor_require_grad(w);
    tg_tensor *y = tg_exp(tp, w);
    y->data[0] = 0.0f; /* dw[0] would come out 0 */
    tg_backward(tp, tg_sum(tp, y));
}

static void changed_input(void)
{
    float rows[6] = {1, 2, 3, 4, 5, 6};
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *w = tg_tensor_new2(2, 3);
    tg_tensor_require_grad(w);
    tg_tensor *x = tg_tape_view2(tp, rows, 2, 3);
    tg_tensor *loss = tg_sum(tp, tg_mul(tp, x, w));
    rows[4] = -5.0f; /* dw = x, read at backward */
    tg_backward(tp, loss);
}

/* A loss kept past tg_tape_reset: the same graph rebuilt put the new loss
 * at its address, and backward of the old one quietly gave the new graph's
 * gradient. With checks on, the old step's arena is poisoned and kept
 * aside for two resets, so the stale loss (or a stale op input) is caught. */
static void stale_loss_backward(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *x = filled(1, 1, 0.1f);
    tg_tensor_require_grad(x);
    tg_tensor *old = tg_sum(tp, tg_exp(tp, x));
    tg_tape_reset(tp);
    tg_sum(tp, tg_scale(tp, x, 0.2f));
    tg_backward(tp, old);
}
static void stale_op_input(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *x = filled(1, 3, 0.1f);
    tg_tensor *y = tg_exp(tp, x);
    tg_tape_reset(tp);
    tg_exp(tp, x);
    tg_tape_reset(tp); /* two resets back: still caught */
    tg_add(tp, x, y);
}
/* three resets back and more: past the checks' window, yet an abort, not
 * a segfault (the arena leaving the window had been freed while stale
 * pointers into it were still read) */
static void stale_past_the_window(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *x = filled(2, 3, 0.1f);
    tg_tensor *y = tg_exp(tp, x);
    for (int k = 0; k < 5; k++) {
        tg_tape_reset(tp);
        tg_tape_tensor2(tp, 64, 64, true);
        if (k >= 2)
            tg_mul(tp, y, x);
    }
}
/* Under AddressSanitizer each arena allocation ends where it was asked to:
 * the rest of its slot and a redzone after it are poisoned, so an op that
 * writes one float past its output is an ASan error (a sum_axis0 whose
 * accumulator was one double short passed every value and gradient check,
 * and ASan, while the arena was one unmarked malloc). */
static void test_arena_marks_where_each_tensor_ends(void **state)
{
    (void)state;
#ifdef TG_TEST_ASAN
    tg_tape *tp = tg_tape_new();
    for (int k = 0; k < 3; k++) { /* a fresh arena, then reset ones */
        tg_tape_reset(tp);
        tg_tensor *a = tg_tape_tensor2(tp, 1, 3, true);
        tg_tensor *b = tg_tape_tensor2(tp, 4, 4, true);
        assert_false(__asan_address_is_poisoned(&a->data[2]));
        assert_true(__asan_address_is_poisoned(&a->data[3]));
        assert_false(__asan_address_is_poisoned(&b->data[15]));
        assert_true(__asan_address_is_poisoned(&b->data[16]));
        assert_true(__asan_address_is_poisoned(&b->data[16 + 15]));
        double *d = tg_tape_alloc(tp, 5 * sizeof *d);
        assert_false(__asan_address_is_poisoned(&d[4]));
        assert_true(__asan_address_is_poisoned(&d[5]));
    }
    tg_tape_free(tp);
#else
    skip();
#endif
}

/* tg_tape_alloc promises 64-byte aligned memory: on a fresh arena, after
 * a reset, in a block grown past the first, for sizes that are and are
 * not multiples of 64, and tape tensors' data with it. A zeroed tape
 * tensor reads zeros in memory a step before filled. */
static void test_arena_is_aligned_and_zeroed_tensors_are_zero(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 3, 64, 100, 4096, (size_t)3 << 20, 8};
    tg_tape *tp = tg_tape_new();
    for (int k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            unsigned char *p = tg_tape_alloc(tp, sizes[s]);
            assert_int_equal((uintptr_t)p % 64, 0);
            memset(p, 0xff, sizes[s]); /* NaN bits, for the next step */
            tg_tensor *t = tg_tape_tensor2(tp, 1, 5, false);
            assert_int_equal((uintptr_t)t->data % 64, 0);
        }
        tg_tensor *z = tg_tape_tensor2(tp, 300, 301, true);
        assert_int_equal((uintptr_t)z->data % 64, 0);
        for (size_t i = 0; i < z->size; i++)
            assert_true(z->data[i] == 0.0f);
        memset(z->data, 0xff, z->size * sizeof(float));
        tg_tape_reset(tp);
    }
    tg_tape_free(tp);
}

/* With checks, a reset keeps the step's blocks aside for two resets
 * (stale pointers read poison) and, once steps settle on one block, the
 * step after them runs on the block that left the graveyard: three blocks
 * in turn, no new ones, the arena's size fixed. */
static void test_checked_resets_cycle_three_blocks(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    enum { STEPS = 9 };
    void *first[STEPS];
    size_t bytes[STEPS];
    for (int k = 0; k < STEPS; k++) {
        tg_tape_reset(tp);
        first[k] = tg_tape_alloc(tp, 64); /* the step's block's start */
        (void)tg_tape_alloc(tp, 1000 * sizeof(float));
        bytes[k] = tg_tape_arena_bytes(tp);
    }
    for (int k = 3; k < STEPS; k++) {
        assert_int_equal(bytes[k], bytes[2]);
        assert_ptr_equal(first[k], first[k - 3]);
        assert_ptr_not_equal(first[k], first[k - 1]);
        assert_ptr_not_equal(first[k], first[k - 2]);
    }
    tg_tape_free(tp);
}

static void test_checks_catch_a_tensor_kept_past_reset(void **state)
{
    (void)state;
    expect_abort(stale_loss_backward, "backward", "before its tape's last");
    expect_abort(stale_op_input, "add", "tensor argument 2 was made on a tape");
    expect_abort(stale_past_the_window, "mul");
    /* a checked tape still trains: fresh memory each step, same values */
    tg_tape *tp = tg_tape_new(), *plain = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *x = filled(2, 3, 0.5f);
    for (int k = 0; k < 3; k++) {
        tg_tape_reset(tp);
        tg_tape_reset(plain);
        tg_tensor *a = tg_sum(tp, tg_exp(tp, x)),
                  *b = tg_sum(plain, tg_exp(plain, x));
        assert_true(a->data[0] == b->data[0]);
    }
    tg_tape_free(tp);
    tg_tape_free(plain);
    tg_tensor_free(x);
}

static void test_checks_catch_a_tensor_changed_before_backward(void **state)
{
    (void)state;
    expect_abort(changed_output, "exp", "output 0 [2, 3] changed");
    expect_abort(changed_input, "mul", "input 0 [2, 3] changed");
    /* unchanged, with checks on: the gradient, no abort; off: the check
     * costs nothing and sees nothing */
    for (int on = 0; on < 2; on++) {
        tg_tape *tp = tg_tape_new();
        tg_tape_set_checks(tp, on);
        tg_tensor *w = tg_tensor_new2(1, 2);
        w->data[0] = 0.5f, w->data[1] = -1.0f;
        tg_tensor_require_grad(w);
        tg_tensor *y = tg_exp(tp, w);
        tg_backward(tp, tg_sum(tp, tg_mul(tp, y, w)));
        for (int i = 0; i < 2; i++)
            assert_float_equal(w->grad[i],
                               expf(w->data[i]) * (1.0f + w->data[i]), 1e-6);
        tg_tensor_free(w);
        tg_tape_free(tp);
    }
}

/* Ops of an earlier step left on the tape (no tg_tape_reset), whose weight
 * the optimizer has since moved: their backward does not run, so checks
 * leave them alone and the gradient is this step's. They were checked all
 * the same, and the abort named an input "changed between this op's
 * forward and its backward" of an op that had no backward to run. */
static void test_checks_skip_ops_this_backward_does_not_reach(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    tg_tape_set_checks(tp, true);
    tg_tensor *w = filled(1, 2, 0.5f);
    tg_tensor_require_grad(w);
    for (int k = 0; k < 3; k++) {
        tg_tensor_zero_grad(w);
        tg_tensor *loss = tg_sum(tp, tg_square(tp, w));
        tg_backward(tp, loss);
        for (int i = 0; i < 2; i++)
            assert_float_equal(w->grad[i], 2.0f * w->data[i], 1e-6);
        for (int i = 0; i < 2; i++) /* the optimizer's step */
            w->data[i] -= 0.1f * w->grad[i];
    }
    assert_int_equal(tg_tape_records(tp), 6); /* every step's ops kept */
    tg_tape_free(tp);
    tg_tensor_free(w);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* The profile counts each recorded op once per call, forward and backward
 * timed, and a profiled step after warm-up still allocates nothing;
 * turning it on again keeps its rows. The times are the op's: together no
 * more than the steps took by the clock, the rows adding up to the total
 * line, the shares to 100%. */
static void test_profile_counts_calls_per_op(void **state)
{
    (void)state;
    tg_tensor *x = filled(4, 8, -0.2f), *W = filled(3, 8, 0.1f),
              *b = filled(1, 3, 0.0f);
    tg_tensor_require_grad(W);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    double t0 = now_ms();
    tg_tape_set_profile(tp, true);
    step(tp, x, W, b);
    size_t allocs = tg_tape_heap_allocs(tp);
    assert_true(tg_tape_set_profile(tp, true));
    for (int i = 0; i < 4; i++)
        step(tp, x, W, b);
    double elapsed = now_ms() - t0;
    assert_int_equal(tg_tape_heap_allocs(tp), allocs);
    FILE *f = tmpfile();
    assert_non_null(f);
    tg_tape_profile_print(tp, f);
    rewind(f);
    char line[256];
    int seen = 0;
    double rows_ms = 0.0, share = 0.0, total_ms = -1.0;
    while (fgets(line, sizeof line, f)) {
        char op[64];
        long calls;
        double fwd, bwd, pct;
        if (sscanf(line, "tapegrad profile: total %lf ms in all", &total_ms) ==
            1)
            continue;
        if (sscanf(line, "tapegrad profile: %63s %ld %lf %lf %lf%%", op, &calls,
                   &fwd, &bwd, &pct) != 5)
            continue;
        /* dense, relu, square, mean: five steps each */
        assert_int_equal(calls, 5);
        assert_true(fwd >= 0.0 && bwd >= 0.0 && pct >= 0.0);
        rows_ms += fwd + bwd;
        share += pct;
        seen++;
    }
    fclose(f);
    assert_int_equal(seen, 4);
    /* printed to 0.001 ms and 0.1% a row */
    assert_true(total_ms >= 0.0 && total_ms <= elapsed);
    assert_true(fabs(rows_ms - total_ms) <= 0.001 * 2 * seen + 1e-9);
    assert_true(fabs(share - 100.0) <= 0.05 * seen + 1e-9);
    assert_true(tg_tape_set_profile(tp, false)); /* nothing printed at free */
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(W);
    tg_tensor_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_after_warmup_do_not_allocate),
        cmocka_unit_test(test_gradients_accumulate_until_zeroed),
        cmocka_unit_test(test_recording_off_keeps_no_records),
        cmocka_unit_test(test_constants_record_nothing),
        cmocka_unit_test(test_reshape_is_a_view),
        cmocka_unit_test(test_view_reads_caller_memory_without_copy),
        cmocka_unit_test(test_misuse_aborts_naming_op_and_shapes),
        cmocka_unit_test(test_checks_catch_a_tensor_changed_before_backward),
        cmocka_unit_test(test_arena_marks_where_each_tensor_ends),
        cmocka_unit_test(test_arena_is_aligned_and_zeroed_tensors_are_zero),
        cmocka_unit_test(test_checks_catch_a_tensor_kept_past_reset),
        cmocka_unit_test(test_checked_resets_cycle_three_blocks),
        cmocka_unit_test(test_checks_skip_ops_this_backward_does_not_reach),
        cmocka_unit_test(test_profile_counts_calls_per_op),
    };
    return cmocka_run_group_tests_name("autograd tape", tests, NULL, NULL);
}

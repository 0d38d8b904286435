/* Parameter sets: names, lookup, and sealing into one contiguous data buffer
 * and one grad buffer in the order added, values preserved. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_nn.h"
#include "float_equal.h"

static tg_params *three_params(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "enc.weight", 2, (int[]){3, 4});
    tg_params_add(ps, "enc.bias", 1, (int[]){3});
    tg_params_add(ps, "dec.weight", 3, (int[]){2, 1, 5});
    return ps;
}

static void names_count_and_find(void **state)
{
    (void)state;
    tg_params *ps = three_params();
    assert_int_equal(tg_params_count(ps), 3);
    assert_int_equal(tg_params_numel(ps), 12 + 3 + 10);
    assert_string_equal(tg_params_name(ps, 0), "enc.weight");
    assert_string_equal(tg_params_name(ps, 2), "dec.weight");
    assert_ptr_equal(tg_params_find(ps, "enc.bias"), tg_params_get(ps, 1));
    assert_null(tg_params_find(ps, "enc"));
    assert_null(tg_params_find(ps, "enc.bias2"));
    assert_int_equal(tg_params_get(ps, 2)->shape[2], 5);
    tg_params_free(ps);
}

static void data_and_grad_are_contiguous_from_the_start(void **state)
{
    (void)state;
    tg_params *ps = three_params();
    tg_tensor *t[3];
    for (int i = 0; i < 3; i++) {
        t[i] = tg_params_get(ps, i);
        assert_false(t[i]->owns_data);
        assert_true(t[i]->requires_grad);
        assert_non_null(t[i]->grad);
        for (size_t j = 0; j < t[i]->size; j++)
            t[i]->data[j] = (float)(100 * i + (int)j);
    }
    tg_tensor_require_grad(t[1]);
    t[1]->grad[2] = 7.0f;

    float *data = tg_params_data(ps), *grad = tg_params_grad(ps);
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(t[i]->data, data + off);
        assert_ptr_equal(t[i]->grad, grad + off);
        assert_false(t[i]->owns_data);
        assert_true(t[i]->requires_grad);
        for (size_t j = 0; j < t[i]->size; j++)
            assert_true(data[off + j] == (float)(100 * i + (int)j));
        off += t[i]->size;
    }
    assert_int_equal(off, tg_params_numel(ps));
    assert_true(grad[12 + 2] == 7.0f); /* the grad written before */
    assert_true(grad[0] == 0.0f);

    tg_params_seal(ps); /* idempotent */
    assert_ptr_equal(tg_params_data(ps), data);
    for (size_t i = 0; i < tg_params_numel(ps); i++)
        grad[i] = 1.0f;
    tg_params_zero_grad(ps);
    for (size_t i = 0; i < tg_params_numel(ps); i++)
        assert_true(grad[i] == 0.0f);
    tg_params_free(ps);
}

/* Issue 13: a layer used before anything sealed its set had no gradient
 * storage (backward aborted), and sealing moved every data pointer. Here:
 * loss = sum(x W^T + b) for x [2, 3], W [2, 3], so dL/dW[o][i] = x[0][i] +
 * x[1][i] and dL/db[o] = 2; then one SGD step (lr 0.5), which seals. */
static void a_layer_works_before_the_set_is_sealed(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_dense_layer l;
    tg_dense_layer_init(&l, ps, "fc", 3, 2, TG_INIT_TORCH, &rng);
    float w0[6], b0[2];
    memcpy(w0, l.W->data, sizeof w0);
    memcpy(b0, l.b->data, sizeof b0);

    tg_tape *tp = tg_tape_new();
    float xs[6] = {1, 2, 3, -1, 0.5f, 4};
    tg_tensor *x = tg_tape_view2(tp, xs, 2, 3);
    tg_backward(tp, tg_sum(tp, tg_dense_apply(tp, &l, x)));
    for (int o = 0; o < 2; o++) {
        for (int i = 0; i < 3; i++)
            assert_float_equal(l.W->grad[o * 3 + i], xs[i] + xs[3 + i], 0);
        assert_float_equal(l.b->grad[o], 2.0f, 0);
    }
    tg_optim *opt = tg_sgd_new(ps, 0.5f, 0.0f);
    tg_optim_step(opt);
    for (int o = 0; o < 2; o++) {
        for (int i = 0; i < 3; i++)
            assert_float_equal(l.W->data[o * 3 + i],
                               w0[o * 3 + i] - 0.5f * (xs[i] + xs[3 + i]),
                               1e-6);
        assert_float_equal(l.b->data[o], b0[o] - 1.0f, 1e-6);
    }
    tg_optim_free(opt);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* A float pointer taken at tg_params_add is the one the optimizer, the
 * checkpoint loader and zero_grad write through, before and after sealing. */
static void pointers_kept_from_before_sealing_stay_valid(void **state)
{
    (void)state;
    tg_params *ps = three_params();
    tg_tensor *w = tg_params_get(ps, 0);
    float *data = w->data, *grad = w->grad;
    data[5] = 3.0f;
    grad[5] = 1.0f;
    tg_params_seal(ps);
    tg_optim *opt = tg_sgd_new(ps, 0.25f, 0.0f);
    assert_ptr_equal(w->data, data);
    assert_ptr_equal(w->grad, grad);
    assert_ptr_equal(tg_params_data(ps), data);
    tg_optim_step(opt);
    assert_float_equal(data[5], 2.75f, 0);
    tg_params_zero_grad(ps);
    assert_float_equal(grad[5], 0.0f, 0);
    tg_optim_free(opt);
    tg_params_free(ps);
}

static void finite_names_the_first_bad_tensor(void **state)
{
    (void)state;
    tg_params *ps = three_params();
    const char *where = NULL;
    assert_true(tg_params_finite(ps, &where));
    tg_params_seal(ps);
    tg_params_get(ps, 2)->data[4] = NAN;
    assert_false(tg_params_finite(ps, &where));
    assert_string_equal(where, "dec.weight");
    tg_params_get(ps, 2)->data[4] = 0;
    tg_params_get(ps, 1)->grad[0] = INFINITY;
    assert_false(tg_params_finite(ps, NULL));
    assert_false(tg_params_finite(ps, &where));
    assert_string_equal(where, "enc.bias");
    tg_params_free(ps);
}

/* One pass over values and gradients, large enough for several blocks on
 * the library's threads: each maximum sees every element of its buffer,
 * and the guard built on it names the tensor and the reason. */
static void absmax_and_guard_see_values_and_gradients(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "a", 2, (int[]){300, 400});
    tg_tensor *b = tg_params_add(ps, "b", 1, (int[]){5000});
    tg_params_zero_grad(ps);
    size_t n = tg_params_numel(ps);
    float *x = tg_params_data(ps), *g = tg_params_grad(ps);
    float value, grad;
    tg_params_absmax(ps, &value, &grad);
    assert_true(value == 0.0f && grad == 0.0f);
    x[7] = -2.0f;
    g[n - 1] = -3.0f; /* last element, a partial block */
    tg_params_absmax(ps, &value, &grad);
    assert_true(value == 2.0f && grad == 3.0f);
    assert_null(tg_params_nonfinite(ps, NULL));

    const char *why = NULL;
    b->data[4999] = NAN;
    tg_params_absmax(ps, &value, &grad);
    assert_true(isnan(value) && grad == 3.0f);
    assert_string_equal(tg_params_nonfinite(ps, &why), "b");
    assert_string_equal(why, "value is not finite");
    b->data[4999] = 0.0f;
    g[100000] = 0x1p64f; /* finite, but its square is not */
    assert_string_equal(tg_params_nonfinite(ps, &why), "a");
    assert_string_equal(why, "gradient overflows when squared");
    g[100000] = -INFINITY;
    assert_string_equal(tg_params_nonfinite(ps, &why), "a");
    assert_string_equal(why, "gradient is not finite");
    tg_params_free(ps);
}

static void grad_absmax_is_the_largest_magnitude_or_nan(void **state)
{
    (void)state;
    tg_params *ps = three_params();
    tg_params_zero_grad(ps);
    assert_true(tg_params_grad_absmax(ps) == 0.0f);
    float *grad = tg_params_grad(ps);
    size_t n = tg_params_numel(ps);
    grad[0] = 3.0f;
    grad[n - 1] = -7.5f; /* the largest is negative, and last */
    assert_true(tg_params_grad_absmax(ps) == 7.5f);
    grad[n / 2] = -INFINITY;
    assert_true(isinf(tg_params_grad_absmax(ps)));
    grad[1] = NAN;
    assert_true(isnan(tg_params_grad_absmax(ps)));
    tg_params_free(ps);
}

/* Runs f in a child; true when it died of SIGABRT (tg_fatal). */
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

static void add_duplicate(void)
{
    tg_params *ps = three_params();
    tg_params_add(ps, "enc.bias", 1, (int[]){3});
}

static void add_after_seal(void)
{
    tg_params *ps = three_params();
    tg_params_seal(ps);
    tg_params_add(ps, "late", 1, (int[]){3});
}

/* a name a checkpoint reserves: its save had written a file its own load
 * refused ("tensor 'optim.m.x' is not a parameter") */
static void add_reserved(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "optim.m.x", 1, (int[]){3});
}
static void add_metadata_name(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "__metadata__", 1, (int[]){3});
}

static void misuse_aborts(void **state)
{
    (void)state;
    assert_true(aborts(add_duplicate));
    assert_true(aborts(add_after_seal));
    assert_true(aborts(add_reserved));
    assert_true(aborts(add_metadata_name));
}

static void empty_set_seals(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    assert_int_equal(tg_params_numel(ps), 0);
    assert_non_null(tg_params_data(ps));
    tg_params_zero_grad(ps);
    assert_true(tg_params_finite(ps, NULL));
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_count_and_find),
        cmocka_unit_test(data_and_grad_are_contiguous_from_the_start),
        cmocka_unit_test(a_layer_works_before_the_set_is_sealed),
        cmocka_unit_test(pointers_kept_from_before_sealing_stay_valid),
        cmocka_unit_test(finite_names_the_first_bad_tensor),
        cmocka_unit_test(grad_absmax_is_the_largest_magnitude_or_nan),
        cmocka_unit_test(absmax_and_guard_see_values_and_gradients),
        cmocka_unit_test(misuse_aborts),
        cmocka_unit_test(empty_set_seals),
    };
    return cmocka_run_group_tests_name("nn_params", tests, NULL, NULL);
}

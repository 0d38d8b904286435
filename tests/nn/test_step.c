/* The guarded step (tg_step_finish) in one process: non-finite losses and
 * gradients stop or skip, the skip limits, divergence after diverge_steps
 * steps far above the lowest running level, and the optimizer stepping
 * only on TG_STEP_TAKEN. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "tapegrad.h"

typedef struct fixture {
    tg_params *ps;
    tg_tensor *w;
    tg_optim *opt;
} fixture;

static fixture make(void)
{
    fixture f = {.ps = tg_params_new()};
    f.w = tg_params_add(f.ps, "w", 1, (int[]){3});
    f.opt = tg_sgd_new(f.ps, 0.1f, 0.0f);
    return f;
}

static void drop(fixture *f)
{
    tg_optim_free(f->opt);
    tg_params_free(f->ps);
}

/* One step with per-row loss m over 4 rows and gradient g everywhere. */
static tg_step_verdict step(tg_step_guard *g, fixture *f, double m, float grad)
{
    tg_params_zero_grad(f->ps);
    for (int i = 0; i < 3; i++)
        f->w->grad[i] = grad;
    tg_step s = {.loss = 4 * m, .parts = {1.0, 2.0}};
    tg_step_finish(g, &s, 4);
    assert_true(s.part_sums[1] == 2.0);
    return s.verdict;
}

static void nonfinite_stops_or_skips(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    assert_int_equal(step(&g, &f, 1.0, 1.0f), TG_STEP_TAKEN);
    assert_int_equal(f.opt->step, 1);
    assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_NONFINITE);
    assert_int_equal(step(&g, &f, 1.0, INFINITY), TG_STEP_NONFINITE);
    assert_int_equal(step(&g, &f, 1.0, 1e30f), TG_STEP_NONFINITE); /* g^2 */
    assert_int_equal(f.opt->step, 1);

    tg_step_guard_init(&g, f.ps, f.opt,
                       &(tg_step_config){.skip_nonfinite = true});
    for (int i = 0; i < 9; i++)
        assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_SKIPPED);
    assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_SKIPPED_TOO_OFTEN);
    /* not in a row, but more than 25 of the last 100 */
    tg_step_guard_init(&g, f.ps, f.opt,
                       &(tg_step_config){.skip_nonfinite = true});
    tg_step_verdict last = TG_STEP_TAKEN;
    for (int i = 0; i < 60 && last != TG_STEP_SKIPPED_TOO_OFTEN; i++)
        last = step(&g, &f, i % 2 ? NAN : 1.0, 1.0f);
    assert_int_equal(last, TG_STEP_SKIPPED_TOO_OFTEN);
    drop(&f);
}

static void divergence_after_steps_far_above(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, &(tg_step_config){.diverge_steps = 5});
    for (int i = 0; i < 30; i++) /* falling, with 3x spikes: fine */
        assert_int_equal(
            step(&g, &f, (i % 7 == 3 ? 3.0 : 1.0) * (100 - i), 0.1f),
            TG_STEP_TAKEN);
    assert_false(tg_step_suspect(&g));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(step(&g, &f, 1e4, 0.1f), TG_STEP_TAKEN);
        assert_true(tg_step_suspect(&g));
    }
    assert_int_equal(step(&g, &f, 1e4, 0.1f), TG_STEP_DIVERGED);
    /* a spike that recovers resets the count */
    tg_step_guard_init(&g, f.ps, f.opt, &(tg_step_config){.diverge_steps = 5});
    for (int k = 0; k < 10; k++) {
        assert_int_equal(step(&g, &f, 1.0, 0.1f), TG_STEP_TAKEN);
        for (int i = 0; i < 4; i++)
            assert_int_equal(step(&g, &f, 1e4, 0.1f), TG_STEP_TAKEN);
    }
    drop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nonfinite_stops_or_skips),
        cmocka_unit_test(divergence_after_steps_far_above),
    };
    return cmocka_run_group_tests_name("step", tests, NULL, NULL);
}

/* The guarded step (tg_step_finish) in one process: non-finite losses and
 * gradients stop or skip, the skip limits, divergence after diverge_steps
 * steps far above the lowest running level, the optimizer stepping only on
 * TG_STEP_TAKEN, and shards: several in one process sum in shard order,
 * and a step that does not pass each one aborts instead of summing
 * wrongly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "autograd/expect_abort.h"
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

/* Weights after a step skipped as non-finite are suspect until a step is
 * taken; an evaluation's loss is judged against the training loss's
 * lowest running level (a wild step had wrecked the weights, every later
 * step was skipped, and the wreck was saved). */
static void suspect_after_skips_and_far_losses(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt,
                       &(tg_step_config){.skip_nonfinite = true});
    assert_false(tg_step_loss_far_above(&g, 1e30)); /* no level yet */
    assert_true(tg_step_loss_far_above(&g, NAN));
    for (int i = 0; i < 5; i++)
        assert_int_equal(step(&g, &f, 100.0, 0.1f), TG_STEP_TAKEN);
    assert_false(tg_step_suspect(&g));
    assert_int_equal(step(&g, &f, NAN, 0.1f), TG_STEP_SKIPPED);
    assert_true(tg_step_suspect(&g));
    assert_int_equal(step(&g, &f, 100.0, 0.1f), TG_STEP_TAKEN);
    assert_false(tg_step_suspect(&g));
    /* the limit: best + (10 - 1) |best| = 1000 */
    assert_false(tg_step_loss_far_above(&g, 999.0));
    assert_true(tg_step_loss_far_above(&g, 1001.0));
    assert_true(tg_step_loss_far_above(&g, INFINITY));
    assert_false(tg_step_loss_far_above(&g, -1e9)); /* lower is fine */
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

/* Three shards in one process: the gradient is the shards' sum in shard
 * order (in double), the loss sums likewise, and the SGD step uses it. */
static void shards_sum_in_one_process(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    tg_dist_set_shards(3);
    int k0, count = tg_dist_my_shards(&k0);
    assert_int_equal(k0, 0);
    assert_int_equal(count, 3);
    const float parts[3][3] = {
        {1.0f, 2.0f, 3.0f}, {1e8f, 1.0f, -4.0f}, {-1e8f, 0.5f, 0.25f}};
    tg_step s = {0};
    for (int k = 0; k < 3; k++) {
        tg_params_zero_grad(f.ps);
        for (int i = 0; i < 3; i++)
            f.w->grad[i] = parts[k][i];
        s.loss = 10.0 * (k + 1);
        tg_step_shard(&g, &s);
        assert_true(f.w->grad[0] == 0.0f); /* kept, and cleared */
    }
    float w0[3];
    memcpy(w0, f.w->data, sizeof w0);
    tg_step_finish(&g, &s, 3);
    assert_int_equal(s.verdict, TG_STEP_TAKEN);
    assert_true(s.loss_sum == 60.0);
    for (int i = 0; i < 3; i++) {
        double sum = ((double)parts[0][i] + parts[1][i]) + parts[2][i];
        assert_true(f.w->data[i] == w0[i] - 0.1f * (float)sum);
        assert_true(f.w->grad[i] == 0.0f); /* zeroed after the step */
    }
    /* in float, (1 + 1e8) - 1e8 is 0: the double sum keeps the 1 */
    assert_true(f.w->data[0] == w0[0] - 0.1f);
    tg_dist_set_shards(1);
    drop(&f);
}

/* Steps without tg_params_zero_grad between them (tg_dist.h's first sketch
 * had none): the same weights as with it, because tg_step_finish zeroes the
 * gradients after its step. Before, the summed gradient was added into the
 * next step's first shard, once per rank: a model that depended on the rank
 * count. Without an optimizer the summed gradient is left, for the caller
 * to clip and step. */
static void finish_leaves_gradients_zero(void **state)
{
    (void)state;
    float w[2][3];
    for (int zero = 0; zero < 2; zero++) {
        fixture f = make();
        tg_step_guard g;
        tg_step_guard_init(&g, f.ps, f.opt, NULL);
        for (int t = 0; t < 3; t++) {
            if (zero)
                tg_params_zero_grad(f.ps);
            for (int i = 0; i < 3; i++) /* a backward adds */
                f.w->grad[i] += 0.5f * (float)(t + i + 1);
            tg_step s = {.loss = 4.0};
            tg_step_finish(&g, &s, 4);
            assert_int_equal(s.verdict, TG_STEP_TAKEN);
            for (int i = 0; i < 3; i++)
                assert_true(f.w->grad[i] == 0.0f);
        }
        memcpy(w[zero], f.w->data, sizeof w[zero]);
        drop(&f);
    }
    assert_memory_equal(w[0], w[1], sizeof w[0]);

    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, NULL, NULL);
    f.w->grad[1] = 2.0f;
    tg_step s = {.loss = 4.0};
    tg_step_finish(&g, &s, 4);
    assert_true(f.w->grad[1] == 2.0f);
    drop(&f);
}

/* cfg.clip_norm clips the summed gradient before the step and reports its
 * norm; a negative or infinite one aborts. */
static void clip_before_the_step(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, &(tg_step_config){.clip_norm = 1.0f});
    float w0[3];
    memcpy(w0, f.w->data, sizeof w0);
    f.w->grad[0] = 3.0f, f.w->grad[1] = 4.0f, f.w->grad[2] = 0.0f;
    tg_step s = {.loss = 4.0};
    tg_step_finish(&g, &s, 4);
    assert_int_equal(s.verdict, TG_STEP_TAKEN);
    assert_true(fabs(s.grad_norm - 5.0) < 1e-6);
    /* the step took the gradient scaled to norm 1: (0.6, 0.8, 0) */
    assert_true(fabsf(f.w->data[0] - (w0[0] - 0.1f * 0.6f)) < 1e-6f);
    assert_true(fabsf(f.w->data[1] - (w0[1] - 0.1f * 0.8f)) < 1e-6f);
    assert_true(f.w->data[2] == w0[2]);
    drop(&f);
}

/* The guard's state round-trips through a checkpoint's metadata exactly,
 * so a resumed run's guard takes the verdicts of one never stopped; a
 * malformed value is refused, an absent one leaves the guard fresh. */
static void guard_state_round_trips(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_guard g, back;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    tg_step_guard_init(&back, f.ps, f.opt, NULL);
    tg_meta m = TG_META_INIT;
    assert_int_equal(tg_step_guard_restore(&back, &m), TG_OK); /* absent */
    assert_true(isnan(back.level));
    tg_step_guard_save(&g, &m); /* before the first step: nan levels */
    assert_int_equal(tg_step_guard_restore(&back, &m), TG_OK);
    assert_true(isnan(back.level));
    const double losses[] = {1.0, 0.7, 0.9, 30.0, NAN, 0.8};
    for (int t = 0; t < 6; t++)
        step(&g, &f, losses[t], 1.0f);
    tg_step_guard_save(&g, &m);
    assert_int_equal(tg_step_guard_restore(&back, &m), TG_OK);
    assert_memory_equal(&back.level, &g.level, sizeof g.level);
    assert_memory_equal(&back.best, &g.best, sizeof g.best);
    assert_int_equal(back.above, g.above);
    assert_int_equal(back.skipped_run, g.skipped_run);
    assert_int_equal(back.steps, g.steps);
    assert_memory_equal(back.recent, g.recent, sizeof g.recent);
    assert_int_equal(back.steps, 6);
    const char *bad[] = {"1 2 0 0 5",
                         "0x1p+0 0x1p+1 0 0 3 " /* best > level */
                         "0000000000000000000000000000000000000"
                         "0000000000000000000000000000000000000"
                         "00000000000000000000000000",
                         "nan nan -1 0 0 x", "inf inf 0 0 0 0",
                         /* counts that would overflow as steps go on */
                         "nan 0x0p+0 0 0 9223372036854775807 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000",
                         /* unreachable: steps above the level before
                          * any level; more skips in a row than steps */
                         "nan 0x0p+0 7 0 3 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000",
                         "0x1p+0 0x1p+0 0 50 20 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000",
                         "nan 0x0p+0 2147483647 0 0 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000",
                         /* skip flags no run leaves: a window of skips
                          * with none in a row, flags past 'steps', a run
                          * of 2 whose flags are clear, a run of 1 that
                          * follows a skip */
                         "0x1p+0 0x1p+0 0 0 200 "
                         "11111111111111111111111111111111111111111111111111"
                         "11111111111111111111111111111111111111111111111111",
                         "0x1p+0 0x1p+0 0 0 3 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000001",
                         "0x1p+0 0x1p+0 0 2 30 "
                         "00000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000",
                         "0x1p+0 0x1p+0 0 1 2 "
                         "11000000000000000000000000000000000000000000000000"
                         "00000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tg_meta_set(&m, "guard", bad[i]);
        assert_int_equal(tg_step_guard_restore(&back, &m), TG_ERR_FORMAT);
        assert_non_null(strstr(tg_errmsg(), "metadata 'guard'"));
    }
    drop(&f);
}

/* A run of skipped steps longer than the window of 100 (max_skipped_run
 * above 100, max_skipped 100 or more) is a state the guard reaches: its
 * saved state was refused as malformed. */
static void long_skip_run_round_trips(void **state)
{
    (void)state;
    fixture f = make();
    tg_step_config cfg = {
        .skip_nonfinite = true, .max_skipped_run = 200, .max_skipped = 100};
    tg_step_guard g, back;
    tg_step_guard_init(&g, f.ps, f.opt, &cfg);
    tg_step_guard_init(&back, f.ps, f.opt, &cfg);
    for (int t = 0; t < 150; t++)
        assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_SKIPPED);
    assert_int_equal(g.skipped_run, 150);
    tg_meta m = TG_META_INIT;
    tg_step_guard_save(&g, &m);
    assert_int_equal(tg_step_guard_restore(&back, &m), TG_OK);
    assert_int_equal(back.skipped_run, 150);
    assert_int_equal(back.steps, 150);
    assert_memory_equal(back.recent, g.recent, sizeof g.recent);
    /* both go on alike: the 200th skip in a row stops */
    for (int t = 150; t < 199; t++) {
        assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_SKIPPED);
        assert_int_equal(step(&back, &f, NAN, 1.0f), TG_STEP_SKIPPED);
    }
    assert_int_equal(step(&g, &f, NAN, 1.0f), TG_STEP_SKIPPED_TOO_OFTEN);
    assert_int_equal(step(&back, &f, NAN, 1.0f), TG_STEP_SKIPPED_TOO_OFTEN);
    drop(&f);
}

static void clip_negative(void)
{
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, &(tg_step_config){.clip_norm = -1.0f});
}
static void clip_infinite(void)
{
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt,
                       &(tg_step_config){.clip_norm = INFINITY});
}
static void clip_norm_checked(void **state)
{
    (void)state;
    expect_abort(clip_negative, "step_guard_init", "clip_norm -1");
    expect_abort(clip_infinite, "step_guard_init", "clip_norm inf");
}

/* A step over `shards` shards with `calls` calls of tg_step_shard. */
static void step_with_shard_calls(int shards, int calls)
{
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    tg_dist_set_shards(shards);
    tg_step s = {0};
    for (int i = 0; i < calls; i++)
        tg_step_shard(&g, &s);
    tg_step_finish(&g, &s, 8);
}

static void finish_without_shard_calls(void) { step_with_shard_calls(2, 0); }
static void shard_called_once_too_often(void) { step_with_shard_calls(1, 2); }
static void finish_after_too_few_shard_calls(void)
{
    step_with_shard_calls(3, 1);
}

/* Misuse that would sum only part of the batch aborts, naming the call. */
static void set_zero_shards(void) { tg_dist_set_shards(0); }

static void shard_misuse_aborts(void **state)
{
    (void)state;
    expect_abort(finish_without_shard_calls, "step_finish",
                 "holds 2 of the batch's 2 shards",
                 "call tg_step_shard after each");
    expect_abort(shard_called_once_too_often, "step_shard",
                 "one call per shard");
    expect_abort(finish_after_too_few_shard_calls, "step_finish",
                 "called 1 time,", "holds 3 shards");
    expect_abort(set_zero_shards, "dist_set_shards", "0 shards");
}

/* Two guards' shards interleaved (a GAN's two models) had summed each
 * model's losses and gradients into the other's step without a word (one
 * scratch and one gradient sum in dist.c), and a shard count changed
 * mid-step had dropped the kept gradient: each now aborts, naming the
 * call. Steps taken one after the other stay each model's own. */
static void interleaved_guards(void)
{
    fixture a = make(), b = make();
    tg_step_guard ga, gb;
    tg_step_guard_init(&ga, a.ps, a.opt, NULL);
    tg_step_guard_init(&gb, b.ps, b.opt, NULL);
    tg_dist_set_shards(2);
    tg_step sa = {0}, sb = {0};
    for (int k = 0; k < 2; k++) {
        a.w->grad[0] = 1.0f;
        tg_step_shard(&ga, &sa);
        b.w->grad[0] = 100.0f;
        tg_step_shard(&gb, &sb);
    }
    tg_step_finish(&ga, &sa, 4);
    tg_step_finish(&gb, &sb, 4);
}
static void finish_between_other_guard_shards(void)
{
    fixture a = make(), b = make();
    tg_step_guard ga, gb;
    tg_step_guard_init(&ga, a.ps, a.opt, NULL);
    tg_step_guard_init(&gb, b.ps, b.opt, NULL);
    tg_step sa = {.loss = 1.0}, sb = {.loss = 100.0};
    tg_step_shard(&gb, &sb); /* one shard: S = 1 */
    tg_step_finish(&ga, &sa, 4);
    tg_step_finish(&gb, &sb, 4);
}
static void shards_changed_mid_step(void)
{
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    tg_dist_set_shards(2);
    tg_step s = {0};
    f.w->grad[0] = 1.0f;
    tg_step_shard(&g, &s);
    tg_dist_set_shards(1);
    tg_step_finish(&g, &s, 4);
}
static void step_reused_without_zeroing(void)
{
    fixture f = make();
    tg_step_guard g;
    tg_step_guard_init(&g, f.ps, f.opt, NULL);
    tg_dist_set_shards(2);
    tg_step s = {0};
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < 2 && t == 0; k++)
            tg_step_shard(&g, &s);
        tg_step_finish(&g, &s, 4); /* t = 1: the last step's sums again */
    }
}

static void one_step_at_a_time(void **state)
{
    (void)state;
    expect_abort(interleaved_guards, "step_shard",
                 "another guard's step is under way");
    expect_abort(finish_between_other_guard_shards, "step_finish",
                 "another guard's step is under way");
    expect_abort(shards_changed_mid_step, "step_finish",
                 "shard count changed from 2 to 1");
    expect_abort(step_reused_without_zeroing, "step_finish",
                 "counts 2 tg_step_shard calls");
    /* one after the other: each model's own losses and gradients */
    fixture a = make(), b = make();
    tg_step_guard ga, gb;
    tg_step_guard_init(&ga, a.ps, a.opt, NULL);
    tg_step_guard_init(&gb, b.ps, b.opt, NULL);
    tg_dist_set_shards(2);
    tg_step sa = {0}, sb = {0};
    for (int k = 0; k < 2; k++) {
        a.w->grad[0] = 1.0f;
        sa.loss = 1.0;
        tg_step_shard(&ga, &sa);
    }
    tg_step_finish(&ga, &sa, 4);
    for (int k = 0; k < 2; k++) {
        b.w->grad[0] = 100.0f;
        sb.loss = 100.0;
        tg_step_shard(&gb, &sb);
    }
    tg_step_finish(&gb, &sb, 4);
    assert_true(sa.loss_sum == 2.0 && sb.loss_sum == 200.0);
    assert_true(a.w->data[0] == -0.1f * 2.0f);
    assert_true(b.w->data[0] == -0.1f * 200.0f);
    tg_dist_set_shards(1);
    drop(&a);
    drop(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nonfinite_stops_or_skips),
        cmocka_unit_test(suspect_after_skips_and_far_losses),
        cmocka_unit_test(divergence_after_steps_far_above),
        cmocka_unit_test(shards_sum_in_one_process),
        cmocka_unit_test(shard_misuse_aborts),
        cmocka_unit_test(one_step_at_a_time),
        cmocka_unit_test(finish_leaves_gradients_zero),
        cmocka_unit_test(clip_before_the_step),
        cmocka_unit_test(clip_norm_checked),
        cmocka_unit_test(guard_state_round_trips),
        cmocka_unit_test(long_skip_run_round_trips),
    };
    return cmocka_run_group_tests_name("step", tests, NULL, NULL);
}

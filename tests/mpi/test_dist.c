/* tg_dist under mpirun (any number of ranks; 1 without mpirun): shares
 * cover a batch once, the gradient all-reduce sums, broadcast copies rank
 * 0's weights and Adam state, failure agreement names the lowest failing
 * rank, and a VAE gradient computed by shares and summed equals the one
 * process gradient of the global batch's mean -ELBO. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tapegrad.h"

/* Every row of batches of 0..40 rows belongs to exactly one rank, in rank
 * order, and shares differ by at most one row. */
static void test_share_covers_batch_once(void **state)
{
    (void)state;
    int size = tg_dist_size(), rank = tg_dist_rank();
    for (int n = 0; n <= 40; n++) {
        double owner[41], counts[64] = {0};
        int first, mine = tg_dist_share(n, &first);
        for (int i = 0; i < n; i++)
            owner[i] = i >= first && i < first + mine ? 1.0 + rank : 0.0;
        double hits[41];
        for (int i = 0; i < n; i++)
            hits[i] = i >= first && i < first + mine;
        tg_dist_sum(owner, n);
        tg_dist_sum(hits, n);
        if (size <= 64)
            counts[rank] = mine;
        tg_dist_sum(counts, size <= 64 ? size : 0);
        for (int i = 0; i < n; i++) {
            assert_true(hits[i] == 1.0);
            if (i > 0)
                assert_true(owner[i] >= owner[i - 1]); /* in rank order */
        }
        for (int r = 0; r < size && r < 64; r++)
            assert_true(fabs(counts[r] - (double)n / size) < 1.0);
    }
}

static tg_params *two_params(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "a", 2, (int[]){3, 5});
    tg_params_add(ps, "b", 1, (int[]){7});
    tg_params_seal(ps);
    return ps;
}

/* grad[i] = (rank + 1) * (i + 1) on each rank; the sum over ranks is
 * size (size + 1) / 2 * (i + 1), exact in float for these sizes. */
static void test_allreduce_sums_gradients(void **state)
{
    (void)state;
    tg_params *ps = two_params();
    float *g = tg_params_grad(ps);
    size_t n = tg_params_numel(ps);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)((tg_dist_rank() + 1) * (i + 1));
    tg_dist_allreduce_grads(ps);
    double ranks = tg_dist_size() * (tg_dist_size() + 1) / 2.0;
    for (size_t i = 0; i < n; i++)
        assert_true(g[i] == (float)(ranks * (double)(i + 1)));
    /* the grads of each tensor are views of the one buffer */
    assert_true(tg_params_get(ps, 1)->grad[0] == g[15]);
    tg_params_free(ps);
}

static void test_broadcast_copies_rank0_weights_and_adam(void **state)
{
    (void)state;
    tg_params *ps = two_params();
    tg_optim *opt = tg_adam_new(ps, 1e-3f);
    size_t n = tg_params_numel(ps);
    float *w = tg_params_data(ps);
    for (size_t i = 0; i < n; i++) {
        w[i] = (float)(tg_dist_rank() * 100 + (int)i);
        opt->m[i] = (float)tg_dist_rank() + 0.5f;
        opt->v[i] = (float)tg_dist_rank() + 0.25f;
    }
    opt->step = 10 + tg_dist_rank();
    tg_dist_broadcast(ps, opt);
    for (size_t i = 0; i < n; i++) {
        assert_true(w[i] == (float)i);
        assert_true(opt->m[i] == 0.5f && opt->v[i] == 0.25f);
    }
    assert_int_equal(opt->step, 10);
    tg_optim_free(opt);
    tg_params_free(ps);
}

/* Rank size-1 fails (rank 0 too when alone): every rank hears it, and the
 * lowest failing rank is named; then all ok. */
static void test_all_ok_agrees(void **state)
{
    (void)state;
    int last = tg_dist_size() - 1;
    assert_false(tg_dist_all_ok(tg_dist_rank() != last));
    assert_int_equal(tg_dist_first_failed(), last);
    assert_false(tg_dist_all_ok(tg_dist_rank() == 0 && tg_dist_size() > 1));
    assert_int_equal(tg_dist_first_failed(), tg_dist_size() > 1 ? 1 : 0);
    assert_true(tg_dist_all_ok(true));
}

/* A small VAE and a batch of N rows for it: x uniform, eps normal. */
enum { N = 13, IN = 12, HID = 8, LAT = 3 };

static tg_vae *small_vae(float x[N * IN], float eps[N * LAT])
{
    tg_rng rng;
    tg_rng_seed(&rng, 3, 9);
    tg_rng_fill_uniform(&rng, x, N * IN, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, eps, N * LAT, 0.0f, 1.0f);
    return tg_vae_new(
        (tg_vae_config){.input = IN, .hidden = HID, .latent = LAT}, 7);
}

/* One process: gradient of the mean -ELBO over a batch of n rows. Sharded:
 * each rank the gradient of (sum over its rows) / n, all-reduced. Equal up
 * to float summation order (n = 13 does not divide by 2 or 3). */
static void test_sharded_vae_gradient_is_global_mean(void **state)
{
    (void)state;
    float x[N * IN], eps[N * LAT];
    tg_vae *vae = small_vae(x, eps);
    tg_params *ps = tg_vae_params(vae);
    size_t np = tg_params_numel(ps);

    tg_tape *tp = tg_tape_new();
    tg_tensor *xt = tg_tape_tensor2(tp, N, IN, false);
    tg_tensor *et = tg_tape_tensor2(tp, N, LAT, false);
    memcpy(xt->data, x, sizeof x);
    memcpy(et->data, eps, sizeof eps);
    tg_params_zero_grad(ps);
    tg_backward(tp, tg_vae_forward_eps(tp, vae, xt, et).loss);
    float *whole = malloc(np * sizeof(float));
    assert_non_null(whole);
    memcpy(whole, tg_params_grad(ps), np * sizeof(float));

    tg_tape_reset(tp);
    tg_params_zero_grad(ps);
    int first, mine = tg_dist_share(N, &first);
    if (mine > 0) {
        xt = tg_tape_tensor2(tp, mine, IN, false);
        et = tg_tape_tensor2(tp, mine, LAT, false);
        memcpy(xt->data, x + first * IN, sizeof(float) * mine * IN);
        memcpy(et->data, eps + first * LAT, sizeof(float) * mine * LAT);
        tg_vae_out out = tg_vae_forward_eps(tp, vae, xt, et);
        tg_backward(tp, tg_scale(tp, tg_sum(tp, tg_add(tp, out.rec, out.kl)),
                                 1.0f / N));
    }
    tg_dist_allreduce_grads(ps);
    const float *g = tg_params_grad(ps);
    double worst = 0.0;
    for (size_t i = 0; i < np; i++) {
        double d = fabs((double)g[i] - whole[i]) / (1e-3 + fabs(whole[i]));
        worst = d > worst ? d : worst;
        if (tg_dist_size() == 1)
            assert_true(g[i] == whole[i]); /* bit for bit alone */
    }
    assert_true(worst < 1e-5);
    free(whole);
    tg_tape_free(tp);
    tg_vae_free(vae);
}

/* Shard k's gradient: magnitudes about 1, 3e16, -3e16 in turn, so that
 * the double sum depends on the order (1 + 3e16 - 3e16 is 0 from the
 * left, 1 from the right). */
static float shard_value(int k, size_t i)
{
    static const float scale[3] = {1.0f, 3e16f, -3e16f};
    float small = k % 3 == 0 ? 1.0f + 0.001f * (float)k : 1.0f;
    return scale[k % 3] * (float)(i + 1) * small;
}

/* With S shards on any rank count, the gradient and loss sums are the sums
 * over shards in shard order, in double, rounded once: exactly what one
 * process computes. */
static void test_shards_sum_in_shard_order(void **state)
{
    (void)state;
    tg_params *ps = two_params();
    size_t n = tg_params_numel(ps);
    int shard_counts[] = {1, 2, 3, 4, 5, 7};
    for (size_t c = 0; c < sizeof shard_counts / sizeof *shard_counts; c++) {
        int S = shard_counts[c];
        tg_dist_set_shards(S);
        assert_int_equal(tg_dist_shards(), S);
        tg_step_guard g;
        tg_step_guard_init(&g, ps, NULL, NULL);
        tg_step s = {0};
        int k0, mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
        for (int k = k0; k < k1; k++) {
            tg_params_zero_grad(ps);
            float *grad = tg_params_grad(ps);
            for (size_t i = 0; i < n; i++)
                grad[i] = shard_value(k, i);
            s.loss = shard_value(k, 0);
            s.parts[1] = shard_value(k, 1);
            tg_step_shard(&g, &s);
        }
        tg_step_finish(&g, &s, 101);
        assert_int_equal(s.verdict, TG_STEP_TAKEN);
        const float *grad = tg_params_grad(ps);
        bool order_matters = false;
        for (size_t i = 0; i < n; i++) {
            double acc = 0.0, from_right = 0.0;
            for (int k = 0; k < S; k++)
                acc += shard_value(k, i);
            for (int k = S - 1; k >= 0; k--)
                from_right += shard_value(k, i);
            order_matters |= (float)acc != (float)from_right;
            assert_true(grad[i] == (float)acc);
            if (i < 2) {
                double got = i == 0 ? s.loss_sum : s.part_sums[1];
                assert_true(got == acc);
            }
        }
        if (S >= 3 && S % 3 != 2)       /* (then a 3e16 is left over) */
            assert_true(order_matters); /* the test can tell orders apart */
    }
    tg_dist_set_shards(tg_dist_size());
    tg_params_free(ps);
}

/* The VAE's gradient of (sum of -ELBO over rows [first, first + rows) of
 * x and eps) / n, into the zeroed gradient buffer; returns that sum. */
static double shard_backward(tg_tape *tp, const tg_vae *vae, tg_params *ps,
                             float *x, float *eps, int first, int rows, int n)
{
    int in = vae->cfg.input, lat = vae->cfg.latent;
    tg_params_zero_grad(ps);
    tg_tape_reset(tp);
    tg_tensor *xt = tg_tape_view2(tp, x + first * in, rows, in);
    tg_tensor *et = tg_tape_view2(tp, eps + first * lat, rows, lat);
    tg_vae_out out = tg_vae_forward_eps(tp, vae, xt, et);
    tg_backward(tp, tg_scale(tp, tg_sum(tp, tg_add(tp, out.rec, out.kl)),
                             1.0f / (float)n));
    return (double)out.loss->data[0] * rows;
}

/* A VAE's gradient over S shards on this many ranks is, bit for bit, the
 * one this rank computes alone shard after shard (the sum in double in
 * shard order), for S below, equal to and above the rank count. */
static void test_sharded_vae_gradient_is_bit_identical(void **state)
{
    (void)state;
    float x[N * IN], eps[N * LAT];
    tg_vae *vae = small_vae(x, eps);
    tg_params *ps = tg_vae_params(vae);
    size_t np = tg_params_numel(ps);
    tg_tape *tp = tg_tape_new();
    double *acc = malloc(np * sizeof(double));
    assert_non_null(acc);
    int shard_counts[] = {1, 2, 3, 5};
    for (size_t c = 0; c < sizeof shard_counts / sizeof *shard_counts; c++) {
        int S = shard_counts[c];
        tg_dist_set_shards(S);
        /* alone: every shard, in order */
        for (int k = 0; k < S; k++) {
            int first, rows = tg_dist_shard_rows(N, k, &first);
            shard_backward(tp, vae, ps, x, eps, first, rows, N);
            const float *g = tg_params_grad(ps);
            for (size_t i = 0; i < np; i++)
                acc[i] = k == 0 ? g[i] : acc[i] + g[i];
        }
        /* shared out over the ranks */
        tg_step_guard guard;
        tg_step_guard_init(&guard, ps, NULL, NULL);
        tg_step s = {0};
        int k0, mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
        for (int k = k0; k < k1; k++) {
            int first, rows = tg_dist_shard_rows(N, k, &first);
            s.loss = shard_backward(tp, vae, ps, x, eps, first, rows, N);
            tg_step_shard(&guard, &s);
        }
        tg_step_finish(&guard, &s, N);
        assert_int_equal(s.verdict, TG_STEP_TAKEN);
        const float *g = tg_params_grad(ps);
        for (size_t i = 0; i < np; i++)
            assert_true(g[i] == (float)acc[i]);
    }
    tg_dist_set_shards(tg_dist_size());
    free(acc);
    tg_tape_free(tp);
    tg_vae_free(vae);
}

/* Shards cut a batch in order, and a rank's share is its shards' rows. */
static void test_shard_rows_cover_batch(void **state)
{
    (void)state;
    for (int S = 1; S <= 9; S++) {
        tg_dist_set_shards(S);
        for (int n = 0; n <= 23; n++) {
            int next = 0;
            for (int k = 0; k < S; k++) {
                int first, rows = tg_dist_shard_rows(n, k, &first);
                assert_int_equal(first, next);
                assert_true(rows == n / S || rows == n / S + 1);
                next += rows;
            }
            assert_int_equal(next, n);
            int k0, count = tg_dist_my_shards(&k0), first;
            int mine = tg_dist_share(n, &first), lo, hi;
            if (count == 0) {
                assert_int_equal(mine, 0);
                continue;
            }
            tg_dist_shard_rows(n, k0, &lo);
            tg_dist_shard_rows(n, k0 + count - 1, &hi);
            hi += tg_dist_shard_rows(n, k0 + count - 1, NULL);
            assert_int_equal(first, lo);
            assert_int_equal(mine, hi - lo);
        }
    }
    tg_dist_set_shards(tg_dist_size());
}

int main(int argc, char **argv)
{
    tg_dist_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_share_covers_batch_once),
        cmocka_unit_test(test_allreduce_sums_gradients),
        cmocka_unit_test(test_broadcast_copies_rank0_weights_and_adam),
        cmocka_unit_test(test_all_ok_agrees),
        cmocka_unit_test(test_sharded_vae_gradient_is_global_mean),
        cmocka_unit_test(test_shards_sum_in_shard_order),
        cmocka_unit_test(test_sharded_vae_gradient_is_bit_identical),
        cmocka_unit_test(test_shard_rows_cover_batch),
    };
    int failed = cmocka_run_group_tests_name("dist", tests, NULL, NULL);
    /* every rank must agree before finalizing, or one waits forever */
    bool ok = tg_dist_all_ok(failed == 0);
    tg_dist_finalize();
    return ok ? 0 : 1;
}

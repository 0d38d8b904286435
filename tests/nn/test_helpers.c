/* Model helpers (reparameterization, one-hot) and the batcher over float
 * arrays. */
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

#include "autograd/expect_abort.h"
#include "tg_nn.h"
#include "float_equal.h"

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

static void reparameterize_is_mean_plus_std_times_seeded_noise(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    float m[6] = {0, 1, -2, 0.5f, 3, -1}, lv[6] = {0, -1, 2, 0.3f, -4, 1};
    tg_tensor *mean = tg_tape_view2(tp, m, 2, 3);
    tg_tensor *logvar = tg_tape_view2(tp, lv, 2, 3);
    tg_rng rng, again;
    tg_rng_seed(&rng, 42, 5);
    tg_rng_seed(&again, 42, 5);
    tg_tensor *eps = NULL;
    tg_tensor *z = tg_reparameterize(tp, mean, logvar, &rng, &eps);
    assert_int_equal(z->shape[0], 2);
    assert_int_equal(z->shape[1], 3);
    float want[6];
    tg_rng_fill_normal(&again, want, 6, 0.0f, 1.0f); /* one stream, in order */
    for (int i = 0; i < 6; i++) {
        float e = want[i];
        assert_true(eps->data[i] == e);
        assert_float_equal(z->data[i], m[i] + expf(lv[i] / 2) * e, 1e-5);
    }
    tg_tape_free(tp);
}

static tg_tensor *reparam_graph(tg_tape *tp, tg_tensor **in, void *ctx)
{
    tg_rng rng;
    tg_rng_seed(&rng, *(uint64_t *)ctx, 0); /* the same eps every call */
    return tg_reparameterize(tp, in[0], in[1], &rng, NULL);
}

static void reparameterize_gradient_check(void **state)
{
    (void)state;
    tg_tensor *mean = tg_tensor_new2(3, 5), *logvar = tg_tensor_new2(3, 5);
    tg_rng rng;
    tg_rng_seed(&rng, 9, 0);
    tg_rng_fill_normal(&rng, mean->data, mean->size, 0, 1);
    tg_rng_fill_normal(&rng, logvar->data, logvar->size, 0, 1);
    tg_tensor_require_grad(mean);
    tg_tensor_require_grad(logvar);
    uint64_t seed = 3;
    tg_gradcheck_report r;
    bool ok = tg_gradcheck(reparam_graph, 2, (tg_tensor *[]){mean, logvar},
                           &seed, NULL, &r);
    if (!ok)
        tg_gradcheck_print(&r, "reparameterize");
    assert_true(ok);
    tg_tensor_free(mean);
    tg_tensor_free(logvar);
}

static void one_hot_rows(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    int labels[3] = {2, 0, 3};
    tg_tensor *y = tg_one_hot(tp, labels, 3, 4);
    assert_int_equal(y->shape[0], 3);
    assert_int_equal(y->shape[1], 4);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++)
            assert_true(y->data[r * 4 + c] == (c == labels[r] ? 1.0f : 0.0f));
    assert_false(y->requires_grad);
    tg_tape_free(tp);
}

static void one_hot_bad_label(void)
{
    tg_tape *tp = tg_tape_new();
    tg_one_hot(tp, (int[]){1, 4}, 2, 4);
}

static void one_hot_out_of_range_aborts(void **state)
{
    (void)state;
    assert_true(aborts(one_hot_bad_label));
}

/* x row i = (i, 10 i), y row i = -i, label i = i % 3. */
enum { NR = 10, DIM = 2 };
static float xs[NR * DIM], ys[NR];
static int ls[NR];

static void fill_data(void)
{
    for (int i = 0; i < NR; i++) {
        xs[i * DIM] = (float)i;
        xs[i * DIM + 1] = 10.0f * (float)i;
        ys[i] = -(float)i;
        ls[i] = i % 3;
    }
}

static void an_epoch_covers_every_row_once_with_matching_targets(void **state)
{
    (void)state;
    fill_data();
    tg_array_batcher b;
    tg_array_batcher_init(&b, xs, NR, DIM, 4, 7);
    b.y = ys;
    b.y_dim = 1;
    b.labels = ls;
    assert_int_equal(tg_array_batcher_count(&b), 3);
    tg_tape *tp = tg_tape_new();
    int seen[NR] = {0}, sizes[3], k = 0, count;
    tg_tensor *x, *y;
    const int *l;
    while ((count = tg_array_batcher_next(&b, tp, &x, &y, &l)) > 0) {
        sizes[k++] = count;
        assert_int_equal(x->shape[0], count);
        assert_int_equal(x->shape[1], DIM);
        assert_int_equal(y->shape[1], 1);
        for (int r = 0; r < count; r++) {
            int i = (int)x->data[r * DIM];
            seen[i]++;
            assert_true(x->data[r * DIM + 1] == 10.0f * (float)i);
            assert_true(y->data[r] == -(float)i);
            assert_int_equal(l[r], i % 3);
        }
        tg_tape_reset(tp);
    }
    assert_int_equal(k, 3);
    assert_int_equal(sizes[2], 2); /* the last batch is short */
    for (int i = 0; i < NR; i++)
        assert_int_equal(seen[i], 1);
    tg_tape_free(tp);
    tg_array_batcher_free(&b);
}

/* First rows of each batch of an epoch, from batch first on. */
static void firsts(tg_array_batcher *b, int64_t epoch, int first, int *out)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x;
    tg_array_batcher_start(b, epoch, first);
    int k = 0;
    while (tg_array_batcher_next(b, tp, &x, NULL, NULL) > 0)
        out[k++] = (int)x->data[0];
    tg_tape_free(tp);
}

static void order_depends_on_seed_and_epoch_only(void **state)
{
    (void)state;
    fill_data();
    tg_array_batcher a, b;
    tg_array_batcher_init(&a, xs, NR, DIM, 2, 11);
    tg_array_batcher_init(&b, xs, NR, DIM, 2, 11);
    int fa[5], fb[5], fc[5];
    firsts(&a, 3, 0, fa);
    firsts(&b, 3, 2, fb); /* resumed at batch 2 */
    assert_memory_equal(fa + 2, fb, 3 * sizeof(int));
    firsts(&b, 4, 0, fc);
    assert_true(memcmp(fa, fc, sizeof fa) != 0);
    tg_array_batcher_free(&a);
    tg_array_batcher_free(&b);
}

static void unshuffled_batches_are_views_and_drop_last_skips(void **state)
{
    (void)state;
    fill_data();
    tg_array_batcher b;
    tg_array_batcher_init(&b, xs, NR, DIM, 4, 1);
    b.shuffle = false;
    b.drop_last = true;
    tg_array_batcher_start(&b, 0, 0);
    assert_int_equal(tg_array_batcher_count(&b), 2);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x;
    assert_int_equal(tg_array_batcher_next(&b, tp, &x, NULL, NULL), 4);
    assert_ptr_equal(x->data, xs); /* no copy */
    assert_int_equal(tg_array_batcher_next(&b, tp, &x, NULL, NULL), 4);
    assert_ptr_equal(x->data, xs + 4 * DIM);
    assert_int_equal(tg_array_batcher_next(&b, tp, &x, NULL, NULL), 0);
    tg_tape_free(tp);
    tg_array_batcher_free(&b);
}

/* A batcher used after its free: a segfault on the freed order (NULL);
 * now an abort naming the call. */
static void array_next_after_free(void)
{
    static float x[4 * 2];
    tg_array_batcher b;
    tg_array_batcher_init(&b, x, 4, 2, 2, 1);
    tg_array_batcher_free(&b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *t;
    tg_array_batcher_next(&b, tp, &t, NULL, NULL);
}
static void array_start_after_free(void)
{
    static float x[4 * 2];
    tg_array_batcher b;
    tg_array_batcher_init(&b, x, 4, 2, 2, 1);
    tg_array_batcher_free(&b);
    tg_array_batcher_start(&b, 1, 0);
}
static void next_after_free(void)
{
    static float images[4 * 2];
    tg_dataset ds = {.n = 4, .rows = 1, .cols = 2, .images = images};
    tg_batcher b;
    tg_batcher_init(&b, &ds, 2, 1);
    tg_batcher_free(&b);
    float out[4];
    tg_batcher_next(&b, out, NULL);
}

static void batchers_used_after_free_abort(void **state)
{
    (void)state;
    expect_abort(array_next_after_free, "array_batcher_next", "was freed");
    expect_abort(array_start_after_free, "array_batcher_start", "was freed");
    expect_abort(next_after_free, "batcher_next", "was freed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reparameterize_is_mean_plus_std_times_seeded_noise),
        cmocka_unit_test(reparameterize_gradient_check),
        cmocka_unit_test(one_hot_rows),
        cmocka_unit_test(one_hot_out_of_range_aborts),
        cmocka_unit_test(an_epoch_covers_every_row_once_with_matching_targets),
        cmocka_unit_test(order_depends_on_seed_and_epoch_only),
        cmocka_unit_test(unshuffled_batches_are_views_and_drop_last_skips),
        cmocka_unit_test(batchers_used_after_free_abort),
    };
    return cmocka_run_group_tests_name("nn_helpers", tests, NULL, NULL);
}

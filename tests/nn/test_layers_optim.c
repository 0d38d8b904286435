/* Dense layer init statistics, the layer's output against x . W^T + b, the
 * losses against their formulas, and SGD / Adam steps against the update
 * rules evaluated here in double. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "tg_nn.h"

/* Sample mean, variance and extremes of n floats. */
typedef struct stats {
    double mean, var, min, max;
} stats;

static stats stats_of(const float *x, size_t n)
{
    stats s = {0, 0, INFINITY, -INFINITY};
    for (size_t i = 0; i < n; i++) {
        s.mean += x[i];
        s.min = fmin(s.min, x[i]);
        s.max = fmax(s.max, x[i]);
    }
    s.mean /= (double)n;
    for (size_t i = 0; i < n; i++)
        s.var += (x[i] - s.mean) * (x[i] - s.mean);
    s.var /= (double)(n - 1);
    return s;
}

/* A layer with in=400, out=300 (120,000 weights): the sample mean is within
 * 5 standard errors of 0, the variance within 3% of the target. */
static tg_dense_layer layer(tg_params *ps, tg_init init, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_dense_layer l;
    tg_dense_layer_init(&l, ps, "fc", 400, 300, init, &rng);
    return l;
}

static void glorot_uniform_bound_and_variance(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_dense_layer l = layer(ps, TG_INIT_GLOROT, 1);
    double a = sqrt(6.0 / 700.0), var = a * a / 3.0;
    stats s = stats_of(l.W->data, l.W->size);
    assert_true(s.min >= -a && s.max <= a);
    assert_true(s.max > 0.99 * a && s.min < -0.99 * a);
    assert_true(fabs(s.mean) < 5 * sqrt(var / l.W->size));
    assert_true(fabs(s.var / var - 1.0) < 0.03);
    for (int i = 0; i < 300; i++)
        assert_true(l.b->data[i] == 0.0f);
    assert_int_equal(l.W->shape[0], 300);
    assert_int_equal(l.W->shape[1], 400);
    assert_non_null(tg_params_find(ps, "fc.weight"));
    assert_non_null(tg_params_find(ps, "fc.bias"));
    tg_params_free(ps);
}

static void he_normal_variance_and_tails(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_dense_layer l = layer(ps, TG_INIT_HE, 2);
    double var = 2.0 / 400.0, sd = sqrt(var);
    stats s = stats_of(l.W->data, l.W->size);
    assert_true(fabs(s.mean) < 5 * sqrt(var / l.W->size));
    assert_true(fabs(s.var / var - 1.0) < 0.03);
    /* A normal, not a uniform: values beyond 3 sd exist (~0.27%). */
    size_t beyond = 0;
    for (size_t i = 0; i < l.W->size; i++)
        beyond += fabs(l.W->data[i]) > 3 * sd;
    assert_true(beyond > 200 && beyond < 450);
    for (int i = 0; i < 300; i++)
        assert_true(l.b->data[i] == 0.0f);
    tg_params_free(ps);
}

static void torch_uniform_weight_and_bias(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_dense_layer l = layer(ps, TG_INIT_TORCH, 3);
    double a = 1.0 / sqrt(400.0);
    stats w = stats_of(l.W->data, l.W->size);
    assert_true(w.min >= -a && w.max <= a);
    assert_true(fabs(w.var / (a * a / 3.0) - 1.0) < 0.03);
    stats b = stats_of(l.b->data, l.b->size);
    assert_true(b.min >= -a && b.max <= a);
    assert_true(b.max - b.min > a); /* the bias is drawn too */
    tg_params_free(ps);
}

static void same_seed_same_weights(void **state)
{
    (void)state;
    tg_params *p1 = tg_params_new(), *p2 = tg_params_new();
    tg_dense_layer a = layer(p1, TG_INIT_TORCH, 9),
                   b = layer(p2, TG_INIT_TORCH, 9);
    for (size_t i = 0; i < a.W->size; i++)
        assert_true(a.W->data[i] == b.W->data[i]);
    tg_params_free(p1);
    tg_params_free(p2);
}

static void dense_apply_is_x_wt_plus_b(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 5, 0);
    tg_dense_layer l;
    tg_dense_layer_init(&l, ps, "fc", 7, 3, TG_INIT_TORCH, &rng);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 4, 7, false);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_tensor *y = tg_dense_apply(tp, &l, x);
    assert_int_equal(y->shape[0], 4);
    assert_int_equal(y->shape[1], 3);
    for (int r = 0; r < 4; r++)
        for (int o = 0; o < 3; o++) {
            double want = l.b->data[o];
            for (int i = 0; i < 7; i++)
                want += (double)x->data[r * 7 + i] * l.W->data[o * 7 + i];
            assert_true(fabs(y->data[r * 3 + o] - want) < 1e-5);
        }
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* Each loss is the batch mean of its per-row formula. */
static void losses_are_row_means(void **state)
{
    (void)state;
    enum { R = 3, C = 5 };
    tg_tape *tp = tg_tape_new();
    tg_rng rng;
    tg_rng_seed(&rng, 11, 0);
    tg_tensor *a = tg_tape_tensor2(tp, R, C, false);
    tg_tensor *z = tg_tape_tensor2(tp, R, C, false);
    tg_rng_fill_normal(&rng, a->data, a->size, 0.0f, 2.0f);
    tg_rng_fill_uniform(&rng, z->data, z->size, 0.0f, 1.0f);
    int labels[R] = {4, 0, 2};

    double bce = 0, mse = 0, xent = 0;
    for (int r = 0; r < R; r++) {
        double lse = 0;
        for (int c = 0; c < C; c++) {
            double x = a->data[r * C + c], t = z->data[r * C + c];
            double p = 1.0 / (1.0 + exp(-x));
            bce += -(t * log(p) + (1 - t) * log(1 - p));
            mse += (x - t) * (x - t);
            lse += exp(x);
        }
        xent += log(lse) - a->data[r * C + labels[r]];
    }
    assert_true(fabs(tg_loss_bce_with_logits(tp, a, z)->data[0] - bce / R) <
                1e-4);
    assert_true(fabs(tg_loss_mse(tp, a, z)->data[0] - mse / R) < 1e-4);
    assert_true(fabs(tg_loss_softmax_xent(tp, a, labels)->data[0] - xent / R) <
                1e-4);
    tg_tape_free(tp);
}

/* A parameter set of n values p0 with gradients g (set before each step). */
enum { N = 6 };
static const double p0[N] = {0.5, -1.0, 2.0, 0.0, 3.0, -0.25};
static const double g1[N] = {0.1, -0.2, 0.3, 1e-4, -2.0, 0.0};
static const double g2[N] = {-0.3, 0.1, 0.3, 5.0, 0.5, 1e-3};

static tg_params *small_set(void)
{
    tg_params *ps = tg_params_new();
    tg_tensor *a = tg_params_add(ps, "a", 1, (int[]){2});
    tg_tensor *b = tg_params_add(ps, "b", 2, (int[]){2, 2});
    (void)a;
    (void)b;
    float *p = tg_params_data(ps);
    for (int i = 0; i < N; i++)
        p[i] = (float)p0[i];
    return ps;
}

static void set_grad(tg_params *ps, const double *g)
{
    float *d = tg_params_grad(ps);
    for (int i = 0; i < N; i++)
        d[i] = (float)g[i];
}

static void sgd_momentum_two_steps(void **state)
{
    (void)state;
    const double lr = 0.1, mu = 0.9;
    tg_params *ps = small_set();
    tg_optim *opt = tg_sgd_new(ps, (float)lr, (float)mu);
    set_grad(ps, g1);
    tg_optim_step(opt);
    set_grad(ps, g2);
    tg_optim_step(opt);
    const float *p = tg_params_data(ps);
    for (int i = 0; i < N; i++) {
        double v = g1[i], want = p0[i] - lr * v; /* v1 = g1 */
        v = mu * v + g2[i];                      /* v2 = mu v1 + g2 */
        want -= lr * v;
        assert_true(fabs(p[i] - want) < 1e-6 * (1 + fabs(want)));
    }
    assert_int_equal(opt->step, 2);
    tg_optim_free(opt);
    tg_params_free(ps);
}

static void adam_three_steps_with_bias_correction(void **state)
{
    (void)state;
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    tg_params *ps = small_set();
    tg_optim *opt = tg_adam_new(ps, (float)lr);
    const double *gs[3] = {g1, g2, g1};
    double want[N], m[N] = {0}, v[N] = {0};
    for (int i = 0; i < N; i++)
        want[i] = p0[i];
    for (int t = 1; t <= 3; t++) {
        set_grad(ps, gs[t - 1]);
        tg_optim_step(opt);
        for (int i = 0; i < N; i++) {
            double g = gs[t - 1][i];
            m[i] = b1 * m[i] + (1 - b1) * g;
            v[i] = b2 * v[i] + (1 - b2) * g * g;
            double mhat = m[i] / (1 - pow(b1, t));
            double vhat = v[i] / (1 - pow(b2, t));
            want[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
        const float *p = tg_params_data(ps);
        for (int i = 0; i < N; i++)
            assert_true(fabs(p[i] - want[i]) < 1e-6 * (1 + fabs(want[i])));
    }
    tg_optim_free(opt);
    tg_params_free(ps);
}

static void adam_first_step_is_lr_times_sign(void **state)
{
    (void)state;
    tg_params *ps = small_set();
    tg_optim *opt = tg_adam_new(ps, 0.01f);
    set_grad(ps, g1);
    tg_optim_step(opt);
    const float *p = tg_params_data(ps);
    for (int i = 0; i < N; i++) {
        double sign = g1[i] > 0 ? 1 : g1[i] < 0 ? -1 : 0;
        assert_true(fabs((p0[i] - p[i]) - 0.01 * sign) < 1e-6);
    }
    tg_optim_free(opt);
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glorot_uniform_bound_and_variance),
        cmocka_unit_test(he_normal_variance_and_tails),
        cmocka_unit_test(torch_uniform_weight_and_bias),
        cmocka_unit_test(same_seed_same_weights),
        cmocka_unit_test(dense_apply_is_x_wt_plus_b),
        cmocka_unit_test(losses_are_row_means),
        cmocka_unit_test(sgd_momentum_two_steps),
        cmocka_unit_test(adam_three_steps_with_bias_correction),
        cmocka_unit_test(adam_first_step_is_lr_times_sign),
    };
    return cmocka_run_group_tests_name("nn_layers_optim", tests, NULL, NULL);
}

/* The variational Dense layer in training: gradient checks with fixed
 * noise (the sample, the KL, the ELBO, apply_kl), apply_kl the same as
 * apply and kl, the same bits on 1 and 2 threads, and a checkpoint round
 * trip. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"
#include "tmpdir.h"

#include "bayes_common.h"

/* ---- gradient checks with fixed noise --------------------------------- */

typedef struct fixed {
    tg_tensor *eps;
    float prior_scale;
} fixed;

/* inputs: x [5, 3], W_mu [4, 3], W_rho [4, 3], b_mu [4], b_rho [4] */
static tg_bayes_dense from_inputs(tg_tensor **in, float prior_scale)
{
    return (tg_bayes_dense){.W_mu = in[1],
                            .W_rho = in[2],
                            .b_mu = in[3],
                            .b_rho = in[4],
                            .in = 3,
                            .out = 4,
                            .prior_scale = prior_scale};
}

static tg_tensor *f_sample(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    return tg_bayes_dense_apply_eps(tp, &l, in[0], f->eps);
}

static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    return tg_bayes_dense_kl(tp, &l);
}

/* A whole negative ELBO: softmax NLL of relu(sample) through a second
 * variational layer would need more inputs; one layer's NLL + KL / N. */
static tg_tensor *f_elbo(tg_tape *tp, tg_tensor **in, void *ctx)
{
    static const int labels[5] = {0, 3, 1, 2, 3};
    tg_tensor *nll = tg_loss_softmax_xent(tp, f_sample(tp, in, ctx), labels);
    return tg_add(tp, nll, tg_scale(tp, f_kl(tp, in, ctx), 1.0f / 50.0f));
}

/* The training path: sample and KL from one pass; the noise from an rng
 * seeded afresh on every call, so every evaluation sees the same eps. */
static tg_tensor *f_apply_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_dense l = from_inputs(in, f->prior_scale);
    tg_rng rng;
    tg_rng_seed(&rng, 21, 0);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_dense_apply_kl(tp, &l, in[0], &rng, &kl);
    return tg_add(tp, y, tg_scale(tp, kl, 0.3f));
}

static void gradients_with_fixed_noise(void **state)
{
    (void)state;
    const int shapes[5][2] = {{5, 3}, {4, 3}, {4, 3}, {4, 0}, {4, 0}};
    tg_tensor *in[5];
    tg_rng rng;
    tg_rng_seed(&rng, 11, 0);
    for (int i = 0; i < 5; i++) {
        in[i] = shapes[i][1] ? tg_tensor_new2(shapes[i][0], shapes[i][1])
                             : tg_tensor_new(1, shapes[i]);
        tg_rng_fill_normal(&rng, in[i]->data, in[i]->size, 0.0f, 0.7f);
        tg_tensor_require_grad(in[i]);
    }
    /* rho in [-2, 0.5]: sigma from 0.13 to 0.97 */
    tg_rng_fill_uniform(&rng, in[2]->data, in[2]->size, -2.0f, 0.5f);
    tg_rng_fill_uniform(&rng, in[4]->data, in[4]->size, -2.0f, 0.5f);
    fixed f = {.eps = tg_tensor_new2(5, 4), .prior_scale = 0.7f};
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    const struct {
        const char *name;
        tg_graph_fn fn;
    } cases[] = {{"bayes sample", f_sample},
                 {"bayes kl", f_kl},
                 {"bayes nll + kl / N", f_elbo},
                 {"bayes apply_kl", f_apply_kl}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_gradcheck_report rep;
        bool ok = tg_gradcheck(cases[c].fn, 5, in, &f, NULL, &rep);
        tg_gradcheck_print(&rep, cases[c].name);
        assert_true(ok);
    }
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(f.eps);
}

/* apply_kl gives apply's sample (same rng state) and kl's value. */
static void apply_kl_matches_apply_and_kl(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 6);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 7, 3, false);
    tg_rng a, b;
    tg_rng_seed(&a, 1, 0);
    tg_rng_fill_normal(&a, x->data, x->size, 0.0f, 1.0f);
    tg_rng_seed(&a, 2, 0);
    tg_rng_seed(&b, 2, 0);
    tg_tensor *kl;
    tg_tensor *y1 = tg_bayes_dense_apply_kl(tp, &l, x, &a, &kl);
    tg_tensor *y2 = tg_bayes_dense_apply(tp, &l, x, &b);
    assert_memory_equal(y1->data, y2->data, 28 * sizeof(float));
    assert_true(kl->data[0] == tg_bayes_dense_kl(tp, &l)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* ---- threads and persistence ------------------------------------------ */

typedef struct run {
    float y[64 * 300];
    float grad[300 * 200];
    float kl;
} run;

/* One step of a 200-300 layer on 64 rows (60,000 weights: enough for the
 * parallel loops): the sample, the KL and W_rho's gradient. */
static void one_step(int threads, run *out)
{
    tg_set_threads(threads);
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps, "b", 200, 300, 1.0f, -3.0f, &rng);
    tg_params_zero_grad(ps);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 64, 200, false);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_dense_apply_kl(tp, &l, x, &rng, &kl);
    memcpy(out->y, y->data, sizeof out->y);
    out->kl = kl->data[0];
    tg_backward(tp, tg_add(tp, tg_sum(tp, tg_square(tp, y)), kl));
    memcpy(out->grad, l.W_rho->grad, sizeof out->grad);
    tg_tape_free(tp);
    tg_params_free(ps);
}

static void same_bits_on_one_and_two_threads(void **state)
{
    (void)state;
    run *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    one_step(1, a);
    one_step(2, b);
    tg_set_threads(0);
    assert_memory_equal(a, b, sizeof *a);
    free(a);
    free(b);
}

static void checkpoint_round_trip(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_dense l = small_layer(ps, 4);
    assert_int_equal(
        tg_checkpoint_save(in_dir("bnn.safetensors"), ps, NULL, NULL), TG_OK);
    tg_params *ps2 = tg_params_new();
    tg_bayes_dense l2 = small_layer(ps2, 5); /* different values */
    assert_true(memcmp(l.W_rho->data, l2.W_rho->data, 12 * sizeof(float)));
    assert_int_equal(
        tg_checkpoint_load(in_dir("bnn.safetensors"), ps2, NULL, NULL), TG_OK);
    const tg_tensor *a[4] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho};
    const tg_tensor *b[4] = {l2.W_mu, l2.W_rho, l2.b_mu, l2.b_rho};
    for (int i = 0; i < 4; i++)
        assert_memory_equal(a[i]->data, b[i]->data, a[i]->size * sizeof(float));
    /* the same noise gives the same outputs and KL */
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 2, 3, false);
    tg_tensor *eps = tg_tape_tensor2(tp, 2, 4, false);
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, eps->data, eps->size, 0.0f, 1.0f);
    tg_tensor *y1 = tg_bayes_dense_apply_eps(tp, &l, x, eps);
    tg_tensor *y2 = tg_bayes_dense_apply_eps(tp, &l2, x, eps);
    assert_memory_equal(y1->data, y2->data, 8 * sizeof(float));
    assert_true(tg_bayes_dense_kl(tp, &l)->data[0] ==
                tg_bayes_dense_kl(tp, &l2)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
    tg_params_free(ps2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gradients_with_fixed_noise),
        cmocka_unit_test(apply_kl_matches_apply_and_kl),
        cmocka_unit_test(same_bits_on_one_and_two_threads),
        cmocka_unit_test(checkpoint_round_trip),
    };
    return cmocka_run_group_tests_name("bayes_train", tests, setup, teardown);
}

/* The variational Conv2d layer in training: gradient checks with fixed
 * noise on two geometries, apply_kl the same as apply and kl, the same
 * bits on 1 and 2 threads, and a checkpoint round trip. */
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

#include "bayes_conv_common.h"

/* ---- gradient checks with fixed noise --------------------------------- */

typedef struct fixed {
    geom g;
    tg_tensor *eps;
    float prior_scale;
    tg_rng *fresh; /* f_fresh_noise: advances on every evaluation */
} fixed;

/* inputs: x [B, C, H, W], W_mu and W_rho [O, C, k, k], b_mu and b_rho [O] */
static tg_bayes_conv2d from_inputs(tg_tensor **in, const fixed *f)
{
    return (tg_bayes_conv2d){.W_mu = in[1],
                             .W_rho = in[2],
                             .b_mu = in[3],
                             .b_rho = in[4],
                             .in = f->g.C,
                             .out = f->g.O,
                             .kernel = f->g.k,
                             .args = {.stride = {f->g.s, f->g.s},
                                      .padding = {f->g.p, f->g.p},
                                      .dilation = {1, 1}},
                             .prior_scale = f->prior_scale};
}

static tg_tensor *f_sample(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_apply_eps(tp, &l, in[0], f->eps);
}

static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_kl(tp, &l);
}

/* The training path: sample and KL from one pass; the noise from an rng
 * seeded afresh on every call, so every evaluation sees the same eps. */
static tg_tensor *f_apply_kl(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    tg_rng rng;
    tg_rng_seed(&rng, 21, 0);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_conv2d_apply_kl(tp, &l, in[0], &rng, &kl);
    return tg_add(tp, y, tg_scale(tp, kl, 0.3f));
}

/* New noise on every evaluation: the finite differences see a different
 * function each time, so a check that can fail must fail here. */
static tg_tensor *f_fresh_noise(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fixed *f = ctx;
    tg_bayes_conv2d l = from_inputs(in, f);
    return tg_bayes_conv2d_apply(tp, &l, in[0], f->fresh);
}

static void gradcheck_geometry(const geom *g, uint64_t seed)
{
    int OH = out_size(g->H, g), OW = out_size(g->W, g);
    const int shapes[5][4] = {{g->B, g->C, g->H, g->W},
                              {g->O, g->C, g->k, g->k},
                              {g->O, g->C, g->k, g->k},
                              {g->O},
                              {g->O}};
    tg_tensor *in[5];
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    for (int i = 0; i < 5; i++) {
        in[i] = tg_tensor_new(i < 3 ? 4 : 1, shapes[i]);
        tg_rng_fill_normal(&rng, in[i]->data, in[i]->size, 0.0f, 0.7f);
        tg_tensor_require_grad(in[i]);
    }
    /* rho in [-2, 0.5]: sigma from 0.13 to 0.97 */
    tg_rng_fill_uniform(&rng, in[2]->data, in[2]->size, -2.0f, 0.5f);
    tg_rng_fill_uniform(&rng, in[4]->data, in[4]->size, -2.0f, 0.5f);
    tg_rng fresh;
    tg_rng_seed(&fresh, 5, 0);
    fixed f = {.g = *g,
               .eps = tg_tensor_new(4, (int[]){g->B, g->O, OH, OW}),
               .prior_scale = 0.7f,
               .fresh = &fresh};
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    /* The KL is a sum of ~130 terms of about 0.5: in float its value has
     * an ulp near 1e-5, which the default step 2^-6 turns into ~1e-4 of
     * noise in the numeric derivative (the default atol). A step of 2^-4
     * quarters that; the truncation error of the fourth-order differences
     * stays far below it for these smooth functions. */
    const tg_gradcheck_opts wide = {0x1p-4, 1e-4, 1e-3, 42};
    const struct {
        const char *name;
        tg_graph_fn fn;
        const tg_gradcheck_opts *opts;
    } cases[] = {{"bayes_conv2d sample", f_sample, NULL},
                 {"bayes_conv2d kl", f_kl, &wide},
                 {"bayes_conv2d apply_kl", f_apply_kl, &wide}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        tg_gradcheck_report rep;
        bool ok = tg_gradcheck(cases[c].fn, 5, in, &f, cases[c].opts, &rep);
        tg_gradcheck_print(&rep, cases[c].name);
        assert_true(ok);
        assert_false(rep.all_zero);
    }
    /* every input's gradient is non-zero somewhere (the check reaches it) */
    tg_tape *tp = tg_tape_new();
    for (int i = 0; i < 5; i++)
        memset(in[i]->grad, 0, in[i]->size * sizeof(float));
    tg_backward(tp, tg_sum(tp, f_sample(tp, in, &f)));
    for (int i = 0; i < 5; i++) {
        float m = 0.0f;
        for (size_t j = 0; j < in[i]->size; j++)
            m = fmaxf(m, fabsf(in[i]->grad[j]));
        assert_true(m > 1e-3f);
    }
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_fresh_noise, 5, in, &f, NULL, &rep);
    tg_gradcheck_print(&rep, "bayes_conv2d, new noise per evaluation "
                             "(must fail)");
    assert_false(ok);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(f.eps);
}

static void gradients_with_fixed_noise(void **state)
{
    (void)state;
    /* 1 -> 3, k3 s1 p1 on 5x5 (same size out), batch 2 */
    gradcheck_geometry(&(geom){2, 1, 5, 5, 3, 3, 1, 1}, 11);
    /* 2 -> 4, k4 s2 p1 on 6x7 (3x3 out, odd sizes, a column unused) */
    gradcheck_geometry(&(geom){1, 2, 6, 7, 4, 4, 2, 1}, 12);
}

/* apply_kl gives apply's sample (same rng state) and kl's value. */
static void apply_kl_matches_apply_and_kl(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_bayes_conv2d l = small_layer(ps, 6);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){2, 2, 6, 5}, false);
    tg_rng a, b;
    tg_rng_seed(&a, 1, 0);
    tg_rng_fill_normal(&a, x->data, x->size, 0.0f, 1.0f);
    tg_rng_seed(&a, 2, 0);
    tg_rng_seed(&b, 2, 0);
    tg_tensor *kl;
    tg_tensor *y1 = tg_bayes_conv2d_apply_kl(tp, &l, x, &a, &kl);
    tg_tensor *y2 = tg_bayes_conv2d_apply(tp, &l, x, &b);
    assert_int_equal(y1->size, y2->size);
    assert_memory_equal(y1->data, y2->data, y1->size * sizeof(float));
    assert_true(kl->data[0] == tg_bayes_conv2d_kl(tp, &l)->data[0]);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* ---- threads and persistence ------------------------------------------ */

enum { T_B = 4, T_C = 64, T_HW = 12, T_O = 64 };

typedef struct run {
    float y[T_B * T_O * T_HW * T_HW];
    float grad_rho[T_O * T_C * 9];
    float grad_mu[T_O * T_C * 9];
    float kl;
} run;

/* One step of a 64 -> 64, k3 p1 layer on [4, 64, 12, 12] (36,864 weights
 * and outputs: enough for the parallel loops): the sample, the KL and the
 * weights' gradients. */
static void one_step(int threads, run *out)
{
    tg_set_threads(threads);
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps, "b", T_C, T_O, 3, 1, 1, 1.0f, -3.0f, &rng);
    tg_params_zero_grad(ps);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){T_B, T_C, T_HW, T_HW}, false);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_tensor *kl;
    tg_tensor *y = tg_bayes_conv2d_apply_kl(tp, &l, x, &rng, &kl);
    assert_int_equal(y->size, sizeof out->y / sizeof(float));
    memcpy(out->y, y->data, sizeof out->y);
    out->kl = kl->data[0];
    tg_backward(tp, tg_add(tp, tg_sum(tp, tg_square(tp, y)), kl));
    memcpy(out->grad_rho, l.W_rho->grad, sizeof out->grad_rho);
    memcpy(out->grad_mu, l.W_mu->grad, sizeof out->grad_mu);
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
    tg_bayes_conv2d l = small_layer(ps, 4);
    assert_int_equal(
        tg_checkpoint_save(in_dir("bcnn.safetensors"), ps, NULL, NULL), TG_OK);
    tg_params *ps2 = tg_params_new();
    tg_bayes_conv2d l2 = small_layer(ps2, 5); /* different values */
    assert_true(memcmp(l.W_rho->data, l2.W_rho->data, 54 * sizeof(float)));
    assert_int_equal(
        tg_checkpoint_load(in_dir("bcnn.safetensors"), ps2, NULL, NULL), TG_OK);
    const tg_tensor *a[4] = {l.W_mu, l.W_rho, l.b_mu, l.b_rho};
    const tg_tensor *b[4] = {l2.W_mu, l2.W_rho, l2.b_mu, l2.b_rho};
    for (int i = 0; i < 4; i++)
        assert_memory_equal(a[i]->data, b[i]->data, a[i]->size * sizeof(float));
    /* the same noise gives the same outputs and KL */
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){2, 2, 5, 5}, false);
    tg_tensor *eps = tg_tape_tensor(tp, 4, (int[]){2, 3, 3, 3}, false);
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, eps->data, eps->size, 0.0f, 1.0f);
    tg_tensor *y1 = tg_bayes_conv2d_apply_eps(tp, &l, x, eps);
    tg_tensor *y2 = tg_bayes_conv2d_apply_eps(tp, &l2, x, eps);
    assert_memory_equal(y1->data, y2->data, y1->size * sizeof(float));
    assert_true(tg_bayes_conv2d_kl(tp, &l)->data[0] ==
                tg_bayes_conv2d_kl(tp, &l2)->data[0]);
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
    return cmocka_run_group_tests_name("bayes_conv_train", tests, setup,
                                       teardown);
}

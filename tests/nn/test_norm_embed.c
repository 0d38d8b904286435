/* LayerNorm, GroupNorm and Embedding layers: PyTorch's names and initial
 * values, the forward on a tiny case by hand, gradient checks through the
 * layer's parameters and inputs, and sizes that abort. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "tg_nn.h"

#include "autograd/expect_abort.h"
#include "float_equal.h"

static void layer_norm_names_init_and_forward(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_layer_norm_layer ln;
    tg_layer_norm_layer_init(&ln, ps, "enc.ln", 4, 1e-5f);
    assert_ptr_equal(tg_params_find(ps, "enc.ln.weight"), ln.weight);
    assert_ptr_equal(tg_params_find(ps, "enc.ln.bias"), ln.bias);
    for (int i = 0; i < 4; i++) {
        assert_true(ln.weight->data[i] == 1.0f);
        assert_true(ln.bias->data[i] == 0.0f);
    }
    /* Row (1, 2, 3, 6): mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5;
     * gamma 2 on the last column, beta 0.5 on the first. */
    ln.weight->data[3] = 2.0f;
    ln.bias->data[0] = 0.5f;
    float xv[4] = {1, 2, 3, 6};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_layer_norm_apply(tp, &ln, tg_tape_view2(tp, xv, 1, 4));
    double s = sqrt(3.5 + 1e-5);
    assert_float_equal(y->data[0], -2 / s + 0.5, 1e-5);
    assert_float_equal(y->data[1], -1 / s, 1e-5);
    assert_float_equal(y->data[2], 0, 1e-6);
    assert_float_equal(y->data[3], 2 * 3 / s, 1e-5);
    /* one feature (valid, eps 0 too): x - mean is 0, y is the bias */
    tg_layer_norm_layer ln1;
    tg_layer_norm_layer_init(&ln1, ps, "one", 1, 0.0f);
    ln1.bias->data[0] = 0.25f;
    ln1.eps = 1e-5f;
    y = tg_layer_norm_apply(tp, &ln1, tg_tape_view2(tp, xv, 4, 1));
    for (int i = 0; i < 4; i++)
        assert_float_equal(y->data[i], 0.25, 1e-6);
    tg_tape_free(tp);
    tg_params_free(ps);
}

static tg_tensor *ln_graph(tg_tape *tp, tg_tensor **in, void *ctx)
{
    return tg_layer_norm_apply(tp, ctx, in[0]);
}

static void layer_norm_gradient_check(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_layer_norm_layer ln;
    tg_layer_norm_layer_init(&ln, ps, "ln", 7, 1e-5f);
    tg_rng rng;
    tg_rng_seed(&rng, 4, 0);
    tg_rng_fill_normal(&rng, ln.weight->data, 7, 1, 0.5f);
    tg_rng_fill_normal(&rng, ln.bias->data, 7, 0, 0.5f);
    tg_tensor *x = tg_tensor_new2(5, 7);
    tg_rng_fill_normal(&rng, x->data, x->size, 0.3f, 2);
    tg_tensor_require_grad(x);
    tg_gradcheck_report r;
    bool ok = tg_gradcheck(ln_graph, 3, (tg_tensor *[]){x, ln.weight, ln.bias},
                           &ln, NULL, &r);
    if (!ok)
        tg_gradcheck_print(&r, "layer_norm layer");
    assert_true(ok);
    tg_tensor_free(x);
    tg_params_free(ps);
}

/* torch.nn.GroupNorm's names and initial values; x [1, 4, 1, 2] in two
 * groups of two channels: group 0 holds (1, 2 | 3, 6), mean 3, biased
 * variance 3.5 as above; group 1 holds (0, 0 | 2, 2), mean 1, variance 1.
 * gamma 2 on channel 1, beta 0.5 on channel 2. */
static void group_norm_names_init_and_forward(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_group_norm_layer gn;
    tg_group_norm_layer_init(&gn, ps, "enc.gn", 2, 4, 1e-5f);
    assert_ptr_equal(tg_params_find(ps, "enc.gn.weight"), gn.weight);
    assert_ptr_equal(tg_params_find(ps, "enc.gn.bias"), gn.bias);
    assert_int_equal(gn.weight->ndim, 1);
    assert_int_equal(gn.weight->shape[0], 4);
    assert_int_equal(gn.bias->shape[0], 4);
    for (int i = 0; i < 4; i++) {
        assert_true(gn.weight->data[i] == 1.0f);
        assert_true(gn.bias->data[i] == 0.0f);
    }
    gn.weight->data[1] = 2.0f;
    gn.bias->data[2] = 0.5f;
    float xv[8] = {1, 2, 3, 6, 0, 0, 2, 2};
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){1, 4, 1, 2}, false);
    for (int k = 0; k < 8; k++)
        x->data[k] = xv[k];
    tg_tensor *y = tg_group_norm_apply(tp, &gn, x);
    assert_int_equal(y->ndim, 4);
    double s0 = sqrt(3.5 + 1e-5), s1 = sqrt(1 + 1e-5);
    const double want[8] = {-2 / s0,       -1 / s0,       0,      2 * 3 / s0,
                            -1 / s1 + 0.5, -1 / s1 + 0.5, 1 / s1, 1 / s1};
    for (int k = 0; k < 8; k++)
        assert_float_equal(y->data[k], want[k], 1e-5);
    /* one group: the 8 values together, mean 2, biased variance
     * (1 + 0 + 1 + 16 + 4 + 4 + 0 + 0) / 8 = 3.25 */
    tg_group_norm_layer g1;
    tg_group_norm_layer_init(&g1, ps, "one", 1, 4, 1e-5f);
    y = tg_group_norm_apply(tp, &g1, x);
    double s = sqrt(3.25 + 1e-5);
    for (int k = 0; k < 8; k++)
        assert_float_equal(y->data[k], (xv[k] - 2) / s, 1e-5);
    /* one channel in one group is a valid layer */
    tg_group_norm_layer c1;
    tg_group_norm_layer_init(&c1, ps, "c1", 1, 1, 1e-5f);
    assert_int_equal(c1.weight->shape[0], 1);
    tg_tape_free(tp);
    tg_params_free(ps);
}

static tg_tensor *gn_graph(tg_tape *tp, tg_tensor **in, void *ctx)
{
    return tg_group_norm_apply(tp, ctx, in[0]);
}

static void group_norm_gradient_check(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_group_norm_layer gn;
    tg_group_norm_layer_init(&gn, ps, "gn", 3, 6, 1e-5f);
    tg_rng rng;
    tg_rng_seed(&rng, 6, 0);
    tg_rng_fill_normal(&rng, gn.weight->data, 6, 1, 0.5f);
    tg_rng_fill_normal(&rng, gn.bias->data, 6, 0, 0.5f);
    tg_tensor *x = tg_tensor_new(4, (int[]){3, 6, 2, 3});
    tg_rng_fill_normal(&rng, x->data, x->size, 0.3f, 2);
    tg_tensor_require_grad(x);
    tg_gradcheck_report r;
    bool ok = tg_gradcheck(gn_graph, 3, (tg_tensor *[]){x, gn.weight, gn.bias},
                           &gn, NULL, &r);
    if (!ok)
        tg_gradcheck_print(&r, "group_norm layer");
    assert_true(ok);
    tg_tensor_free(x);
    tg_params_free(ps);
}

/* Sizes that torch.nn.GroupNorm refuses abort naming the layer. */
static void gn_init(int groups, int channels, float eps)
{
    tg_params *ps = tg_params_new();
    tg_group_norm_layer l;
    tg_group_norm_layer_init(&l, ps, "dec.gn", groups, channels, eps);
}
static void gn_groups_not_dividing(void) { gn_init(4, 6, 1e-5f); }
static void gn_zero_groups(void) { gn_init(0, 6, 1e-5f); }
static void gn_zero_channels(void) { gn_init(1, 0, 1e-5f); }
static void gn_negative_eps(void) { gn_init(2, 6, -1.0f); }
static void gn_apply_wrong_channels(void)
{
    tg_params *ps = tg_params_new();
    tg_group_norm_layer l;
    tg_group_norm_layer_init(&l, ps, "gn", 2, 6, 1e-5f);
    tg_group_norm_apply(tg_tape_new(), &l,
                        tg_tensor_new(4, (int[]){2, 4, 3, 3}));
}

static void group_norm_bad_sizes_abort(void **state)
{
    (void)state;
    expect_abort(gn_groups_not_dividing, "group_norm_layer_init", "dec.gn",
                 "groups 4", "channels 6");
    expect_abort(gn_zero_groups, "group_norm_layer_init", "groups 0");
    expect_abort(gn_zero_channels, "group_norm_layer_init", "channels 0",
                 ">= 1");
    expect_abort(gn_negative_eps, "group_norm_layer_init", "eps -1");
    expect_abort(gn_apply_wrong_channels, "group_norm_apply", "[2, 4, 3, 3]",
                 "4 channels, the layer 6");
}

static void embedding_names_init_and_lookup(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 2, 0);
    tg_embedding_layer emb;
    tg_embedding_layer_init(&emb, ps, "tok", 6, 3, &rng);
    assert_ptr_equal(tg_params_find(ps, "tok.weight"), emb.weight);
    assert_int_equal(emb.weight->shape[0], 6);
    assert_int_equal(emb.weight->shape[1], 3);
    tg_tape *tp = tg_tape_new();
    const int idx[4] = {5, 0, 5, 2};
    tg_tensor *y = tg_embedding_apply(tp, &emb, idx, 4);
    for (int i = 0; i < 4; i++)
        for (int d = 0; d < 3; d++)
            assert_true(y->data[i * 3 + d] == emb.weight->data[idx[i] * 3 + d]);
    /* d(sum y)/d weight: the number of times each row was used. */
    tg_backward(tp, tg_sum(tp, y));
    const float uses[6] = {1, 0, 1, 0, 0, 2};
    for (int r = 0; r < 6; r++)
        for (int d = 0; d < 3; d++)
            assert_true(emb.weight->grad[r * 3 + d] == uses[r]);
    tg_tape_free(tp);
    tg_params_free(ps);

    /* PyTorch's init, N(0, 1): 20000 draws have mean 0 +- 0.03 and
     * variance 1 +- 0.05 (over 4 standard errors each); one row of one
     * element is a valid table */
    ps = tg_params_new();
    tg_embedding_layer big, one;
    tg_embedding_layer_init(&big, ps, "big", 1000, 20, &rng);
    tg_embedding_layer_init(&one, ps, "one", 1, 1, &rng);
    double sum = 0, sq = 0;
    for (size_t i = 0; i < big.weight->size; i++) {
        sum += big.weight->data[i];
        sq += (double)big.weight->data[i] * big.weight->data[i];
    }
    double mean = sum / (double)big.weight->size;
    double var = sq / (double)big.weight->size - mean * mean;
    assert_true(fabs(mean) < 0.03);
    assert_true(fabs(var - 1.0) < 0.05);
    assert_true(one.num == 1 && one.dim == 1);
    tg_params_free(ps);
}

static tg_tensor *emb_graph(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)in;
    static const int idx[5] = {3, 1, 3, 0, 4};
    /* A nonlinearity after the lookup, so the check is not linear. */
    return tg_tanh(tp, tg_embedding_apply(tp, ctx, idx, 5));
}

static void embedding_gradient_check(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 5, 0);
    tg_embedding_layer emb;
    tg_embedding_layer_init(&emb, ps, "emb", 5, 4, &rng);
    tg_gradcheck_report r;
    bool ok =
        tg_gradcheck(emb_graph, 1, (tg_tensor *[]){emb.weight}, &emb, NULL, &r);
    if (!ok)
        tg_gradcheck_print(&r, "embedding layer");
    assert_true(ok);
    tg_params_free(ps);
}

/* An index outside the table aborts naming the layer (it said
 * gather_rows, the op it calls), the index and its position. */
static void embedding_bad_index(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_embedding_layer l;
    tg_embedding_layer_init(&l, ps, "emb", 5, 3, &rng);
    tg_tape *tp = tg_tape_new();
    tg_embedding_apply(tp, &l, (const int[]){1, 5}, 2);
}

static void embedding_index_out_of_range_aborts(void **state)
{
    (void)state;
    expect_abort(embedding_bad_index, "embedding", "index 5 at position 1",
                 "[0, 5)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layer_norm_names_init_and_forward),
        cmocka_unit_test(layer_norm_gradient_check),
        cmocka_unit_test(group_norm_names_init_and_forward),
        cmocka_unit_test(group_norm_gradient_check),
        cmocka_unit_test(group_norm_bad_sizes_abort),
        cmocka_unit_test(embedding_names_init_and_lookup),
        cmocka_unit_test(embedding_gradient_check),
        cmocka_unit_test(embedding_index_out_of_range_aborts),
    };
    return cmocka_run_group_tests_name("nn_norm_embed", tests, NULL, NULL);
}

/* LayerNorm and Embedding layers: PyTorch's names and initial values, the
 * forward on a tiny case by hand, and gradient checks through the layer's
 * parameters and inputs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "tg_nn.h"

#include "autograd/expect_abort.h"

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
        cmocka_unit_test(embedding_names_init_and_lookup),
        cmocka_unit_test(embedding_gradient_check),
        cmocka_unit_test(embedding_index_out_of_range_aborts),
    };
    return cmocka_run_group_tests_name("nn_norm_embed", tests, NULL, NULL);
}

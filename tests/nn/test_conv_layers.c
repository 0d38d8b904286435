/* Conv2d and ConvTranspose2d layers: PyTorch's names, layouts and init
 * bounds; flatten/unflatten; a gradient check through a small encoder and
 * decoder (every input and parameter). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "tg_nn.h"

static void names_shapes_and_torch_bounds(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    tg_conv2d_layer c;
    tg_conv_transpose2d_layer t;
    tg_conv2d_layer_init(&c, ps, "enc.conv1", 3, 5, 4, 2, 1, TG_INIT_TORCH,
                         &rng);
    tg_conv_transpose2d_layer_init(&t, ps, "dec.deconv1", 6, 2, 3, 2, 1, 1,
                                   TG_INIT_TORCH, &rng);
    const char *names[4] = {"enc.conv1.weight", "enc.conv1.bias",
                            "dec.deconv1.weight", "dec.deconv1.bias"};
    const int shapes[4][4] = {{5, 3, 4, 4}, {5}, {6, 2, 3, 3}, {2}};
    const int ndims[4] = {4, 1, 4, 1};
    /* torch: bound 1/sqrt(weight.shape[1] * k * k) for weight and bias */
    const float bounds[4] = {1 / sqrtf(48), 1 / sqrtf(48), 1 / sqrtf(18),
                             1 / sqrtf(18)};
    for (int i = 0; i < 4; i++) {
        tg_tensor *p = tg_params_find(ps, names[i]);
        assert_non_null(p);
        assert_int_equal(p->ndim, ndims[i]);
        for (int d = 0; d < ndims[i]; d++)
            assert_int_equal(p->shape[d], shapes[i][d]);
        float maxabs = 0.0f;
        for (size_t j = 0; j < p->size; j++)
            maxabs = fmaxf(maxabs, fabsf(p->data[j]));
        assert_true(maxabs <= bounds[i]);
        if (p->size > 20)
            assert_true(maxabs > 0.8f * bounds[i]); /* drawn from the range */
    }
    tg_params_free(ps);
}

static void flatten_round_trip(void **state)
{
    (void)state;
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor(tp, 4, (int[]){2, 3, 4, 5}, true);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = (float)i;
    tg_tensor *f = tg_flatten(tp, x);
    assert_int_equal(f->ndim, 2);
    assert_int_equal(f->shape[0], 2);
    assert_int_equal(f->shape[1], 60);
    assert_float_equal(f->data[61], 61.0f, 0.0f);
    tg_tensor *u = tg_unflatten(tp, f, 3, 4, 5);
    assert_int_equal(u->ndim, 4);
    for (int d = 0; d < 4; d++)
        assert_int_equal(u->shape[d], x->shape[d]);
    tg_tape_free(tp);
}

typedef struct net {
    tg_conv2d_layer enc;
    tg_dense_layer mid;
    tg_conv_transpose2d_layer dec;
} net;

/* x [B, 2, 7, 6] -> conv k3 s2 p1 -> tanh -> flatten -> dense -> tanh ->
 * unflatten [B, 3, 4, 3] -> conv_transpose k3 s2 p1 op1 -> [B, 2, 8, 6] */
static tg_tensor *f_net(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const net *n = ctx;
    tg_tensor *h = tg_tanh(tp, tg_conv2d_apply(tp, &n->enc, in[0]));
    h = tg_tanh(tp, tg_dense_apply(tp, &n->mid, tg_flatten(tp, h)));
    return tg_conv_transpose2d_apply(tp, &n->dec, tg_unflatten(tp, h, 3, 4, 3));
}

static void gradcheck_encoder_decoder(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 5, 0);
    net n;
    tg_conv2d_layer_init(&n.enc, ps, "enc", 2, 4, 3, 2, 1, TG_INIT_TORCH, &rng);
    tg_dense_layer_init(&n.mid, ps, "mid", 4 * 4 * 3, 3 * 4 * 3, TG_INIT_TORCH,
                        &rng);
    tg_conv_transpose2d_layer_init(&n.dec, ps, "dec", 3, 2, 3, 2, 1, 1,
                                   TG_INIT_GLOROT, &rng);
    tg_tensor *x = tg_tensor_new(4, (int[]){2, 2, 7, 6});
    tg_rng_fill_uniform(&rng, x->data, x->size, -1.0f, 1.0f);
    tg_tensor *in[7] = {x,       n.enc.W, n.enc.b, n.mid.W,
                        n.mid.b, n.dec.W, n.dec.b};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = f_net(tp, in, &n);
    assert_int_equal(y->shape[2], 8);
    assert_int_equal(y->shape[3], 6);
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_net, 7, in, &n, NULL, &rep);
    tg_gradcheck_print(&rep, "conv encoder/decoder");
    assert_true(ok);
    tg_tensor_free(x);
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_shapes_and_torch_bounds),
        cmocka_unit_test(flatten_round_trip),
        cmocka_unit_test(gradcheck_encoder_decoder),
    };
    return cmocka_run_group_tests_name("conv_layers", tests, NULL, NULL);
}

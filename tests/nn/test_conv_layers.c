/* Conv2d and ConvTranspose2d layers (and the 1-D ones): PyTorch's names,
 * layouts and init bounds; flatten/unflatten; a gradient check through a small
 * encoder and decoder (every input and parameter). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"
#include "float_equal.h"

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

/* mean of squares of a tensor's values, and the largest |value| */
static double mean_square(const tg_tensor *t, float *maxabs)
{
    double sq = 0;
    *maxabs = 0.0f;
    for (size_t j = 0; j < t->size; j++) {
        sq += (double)t->data[j] * t->data[j];
        *maxabs = fmaxf(*maxabs, fabsf(t->data[j]));
    }
    return sq / (double)t->size;
}

/* Glorot: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); He: N(0, 2 /
 * fan_in); the fans torch's (weight [a, b, k, k]: fan_in b k^2, fan_out a
 * k^2), the bias zero. Variances within 4 standard errors. */
static void glorot_and_he_bounds(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 4, 0);
    tg_conv2d_layer g, h;
    tg_conv_transpose2d_layer th;
    tg_conv2d_layer_init(&g, ps, "g", 8, 16, 3, 1, 1, TG_INIT_GLOROT, &rng);
    tg_conv2d_layer_init(&h, ps, "h", 16, 32, 3, 1, 1, TG_INIT_HE, &rng);
    /* weight [16, 4, 3, 3]: fan_in 4 * 9 = 36 */
    tg_conv_transpose2d_layer_init(&th, ps, "th", 16, 4, 3, 2, 1, 1, TG_INIT_HE,
                                   &rng);
    float maxabs;
    const double a = sqrt(6.0 / ((8 + 16) * 9));
    double ms = mean_square(g.W, &maxabs); /* 1152 draws, a^2 / 3 */
    assert_true(maxabs <= a && maxabs > 0.95 * a);
    assert_true(fabs(ms / (a * a / 3) - 1) < 4 * sqrt(0.8 / 1152));
    ms = mean_square(h.W, &maxabs); /* 4608 draws of variance 2 / 144 */
    assert_true(fabs(ms / (2.0 / 144) - 1) < 4 * sqrt(2.0 / 4608));
    ms = mean_square(th.W, &maxabs); /* 576 draws of variance 2 / 36 */
    assert_true(fabs(ms / (2.0 / 36) - 1) < 4 * sqrt(2.0 / 576));
    const tg_tensor *bs[3] = {g.b, h.b, th.b};
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < bs[i]->size; j++)
            assert_true(bs[i]->data[j] == 0.0f);
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

/* [2, 65536, 65536]'s 2^32 columns: an int product, 0, which reshape then
 * refused as "[2, 0] has 0" elements. The header's shape alone is read. */
static void flatten_past_int(void)
{
    static float few[4];
    tg_tensor x = {.data = few, .ndim = 3, .shape = {2, 65536, 65536}};
    x.size = (size_t)2 << 32;
    tg_flatten(tg_tape_new(), &x);
}

static void flatten_past_int_aborts(void **state)
{
    (void)state;
    expect_abort(flatten_past_int, "flatten:", "[2, 65536, 65536]",
                 "4294967296 columns");
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

/* The _ex inits: a 3 x 5 kernel, stride, padding and dilation per axis,
 * no bias (PyTorch's bias=False) for the conv; the transposed conv with
 * output padding on one axis and a bias. Names, shapes, torch's bound
 * 1/sqrt(in * kh * kw), PyTorch's output sizes, and a gradient check
 * through both. */
typedef struct net_ex {
    tg_conv2d_layer enc;
    tg_conv_transpose2d_layer dec;
} net_ex;

static tg_tensor *f_net_ex(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const net_ex *n = ctx;
    tg_tensor *h = tg_tanh(tp, tg_conv2d_apply(tp, &n->enc, in[0]));
    return tg_conv_transpose2d_apply(tp, &n->dec, h);
}

static void ex_layers_take_every_geometry(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 9, 0);
    net_ex n;
    tg_conv2d_args ca = {
        .stride = {2, 1}, .padding = {1, 2}, .dilation = {1, 2}};
    tg_conv2d_layer_init_ex(&n.enc, ps, "enc", 2, 3, 3, 5, &ca, false,
                            TG_INIT_TORCH, &rng);
    tg_conv2d_args ta = {
        .stride = {2, 1}, .padding = {1, 0}, .output_padding = {1, 0}};
    tg_conv_transpose2d_layer_init_ex(&n.dec, ps, "dec", 3, 2, 2, 3, &ta, true,
                                      TG_INIT_TORCH, &rng);
    assert_null(n.enc.b);
    assert_null(tg_params_find(ps, "enc.bias"));
    assert_non_null(tg_params_find(ps, "dec.bias"));
    const int ws[2][4] = {{3, 2, 3, 5}, {3, 2, 2, 3}};
    const tg_tensor *W[2] = {n.enc.W, n.dec.W};
    for (int l = 0; l < 2; l++)
        for (int d = 0; d < 4; d++)
            assert_int_equal(W[l]->shape[d], ws[l][d]);
    for (size_t j = 0; j < n.enc.W->size; j++) /* fan_in 2 * 3 * 5 */
        assert_true(fabsf(n.enc.W->data[j]) <= 1 / sqrtf(30));

    tg_tensor *x = tg_tensor_new(4, (int[]){2, 2, 7, 9});
    tg_rng_fill_uniform(&rng, x->data, x->size, -1.0f, 1.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *in[4] = {x, n.enc.W, n.dec.W, n.dec.b};
    tg_tensor *y = f_net_ex(tp, in, &n);
    /* conv: H (7 + 2 - 2 - 1) / 2 + 1 = 4, W (9 + 4 - 8 - 1) / 1 + 1 = 5;
     * transposed: H 3 * 2 - 2 + 1 + 1 + 1 = 7, W 4 - 0 + 2 + 0 + 1 = 7 */
    assert_int_equal(y->shape[1], 2);
    assert_int_equal(y->shape[2], 7);
    assert_int_equal(y->shape[3], 7);
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_net_ex, 4, in, &n, NULL, &rep);
    tg_gradcheck_print(&rep, "conv _ex layers");
    assert_true(ok);
    tg_tensor_free(x);
    tg_params_free(ps);
}

static void ex_conv_with_output_padding(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv2d_layer l;
    tg_conv2d_layer_init_ex(&l, ps, "c", 1, 1, 3, 3,
                            &(tg_conv2d_args){.output_padding = {1, 0}}, true,
                            TG_INIT_TORCH, &rng);
}
static void ex_transpose_output_padding_too_large(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv_transpose2d_layer l;
    tg_conv_transpose2d_layer_init_ex(
        &l, ps, "t", 1, 1, 3, 3,
        &(tg_conv2d_args){.stride = {2, 2}, .output_padding = {0, 2}}, true,
        TG_INIT_TORCH, &rng);
}
static void ex_negative_padding(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv2d_layer l;
    tg_conv2d_layer_init_ex(&l, ps, "c", 1, 1, 3, 0,
                            &(tg_conv2d_args){.padding = {0, -1}}, true,
                            TG_INIT_TORCH, &rng);
}
static void ex_negative_stride(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv2d_layer l;
    tg_conv2d_layer_init_ex(&l, ps, "c", 1, 1, 3, 3,
                            &(tg_conv2d_args){.stride = {-1, 1}}, true,
                            TG_INIT_TORCH, &rng);
}
/* a name whose parameters' names would not fit (".weight" was cut to
 * ".weig" in the checkpoint) */
static void ex_long_name(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv2d_layer l;
    char name[251];
    memset(name, 'a', 250);
    name[250] = '\0';
    tg_conv2d_layer_init_ex(&l, ps, name, 1, 1, 3, 3, NULL, true, TG_INIT_TORCH,
                            &rng);
}
static void ex_bad_geometry_aborts(void **state)
{
    (void)state;
    expect_abort(ex_conv_with_output_padding, "conv2d_layer_init_ex",
                 "c: bad size", "output padding (1, 0)",
                 "output padding is for conv_transpose2d");
    expect_abort(ex_transpose_output_padding_too_large,
                 "conv_transpose2d_layer_init_ex", "output padding (0, 2)",
                 "< stride or dilation");
    /* the reason named is the field's (every message gave the output
     * padding rule) */
    expect_abort(ex_negative_padding, "conv2d_layer_init_ex", "kernel 3x0",
                 "padding (0, -1)", "kernel's sides must be >= 1");
    expect_abort(ex_negative_stride, "conv2d_layer_init_ex", "stride (-1, 1)",
                 "stride and dilation must be >= 1");
    expect_abort(ex_long_name, "conv2d_layer_init_ex", "is 250 bytes",
                 "at most 200");
}

/* The 1-D layers: names, PyTorch's layouts [out, in, k] / [in, out, k] and
 * bounds 1/sqrt(weight.shape[1] * k), no bias when asked, output lengths,
 * and a gradient check of a sequence encoder/decoder through pooling. */
typedef struct net1d {
    tg_conv1d_layer enc;
    tg_conv_transpose1d_layer dec;
} net1d;

static tg_tensor *f_net1d(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const net1d *n = ctx;
    tg_tensor *h = tg_tanh(tp, tg_conv1d_apply(tp, &n->enc, in[0]));
    h = tg_avg_pool1d(tp, h, 2, 1, 1);
    return tg_conv_transpose1d_apply(tp, &n->dec, h);
}

static void layers_1d(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 8, 0);
    net1d n;
    tg_conv1d_layer_init(&n.enc, ps, "enc", 3, 8, 5, 2, 2, 1, false,
                         TG_INIT_TORCH, &rng);
    tg_conv_transpose1d_layer_init(&n.dec, ps, "dec", 8, 2, 3, 2, 1, 1, 1, true,
                                   TG_INIT_TORCH, &rng);
    assert_null(n.enc.b);
    assert_null(tg_params_find(ps, "enc.bias"));
    const char *names[3] = {"enc.weight", "dec.weight", "dec.bias"};
    const int shapes[3][3] = {{8, 3, 5}, {8, 2, 3}, {2}};
    const int ndims[3] = {3, 3, 1};
    const float bounds[3] = {1 / sqrtf(15), 1 / sqrtf(6), 1 / sqrtf(6)};
    for (int i = 0; i < 3; i++) {
        tg_tensor *p = tg_params_find(ps, names[i]);
        assert_non_null(p);
        assert_int_equal(p->ndim, ndims[i]);
        for (int d = 0; d < ndims[i]; d++)
            assert_int_equal(p->shape[d], shapes[i][d]);
        float maxabs = 0.0f;
        for (size_t j = 0; j < p->size; j++)
            maxabs = fmaxf(maxabs, fabsf(p->data[j]));
        assert_true(maxabs <= bounds[i]);
        assert_true(maxabs > 0.5f * bounds[i]);
    }
    tg_tensor *x = tg_tensor_new(3, (int[]){2, 3, 11});
    tg_rng_fill_uniform(&rng, x->data, x->size, -1.0f, 1.0f);
    tg_tensor *in[4] = {x, n.enc.W, n.dec.W, n.dec.b};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = f_net1d(tp, in, &n);
    /* conv: (11 + 4 - 4 - 1)/2 + 1 = 6; pool: (6 + 2 - 2)/1 + 1 = 7;
     * transpose: (7 - 1)*2 - 2 + 2 + 1 + 1 = 14 */
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[1], 2);
    assert_int_equal(y->shape[2], 14);
    tg_tape_free(tp);
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_net1d, 4, in, &n, NULL, &rep);
    tg_gradcheck_print(&rep, "conv1d encoder/decoder");
    assert_true(ok);
    tg_tensor_free(x);
    tg_params_free(ps);
}

static void bad_conv1d_layer(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv1d_layer l;
    tg_conv1d_layer_init(&l, ps, "c", 3, 4, 3, 0, 1, 1, true, TG_INIT_TORCH,
                         &rng);
}
static void bad_transpose1d_layer(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_conv_transpose1d_layer l;
    tg_conv_transpose1d_layer_init(&l, ps, "t", 3, 4, 3, 2, 1, 2, 1, true,
                                   TG_INIT_TORCH, &rng);
}
static void layers_1d_bad_geometry_aborts(void **state)
{
    (void)state;
    expect_abort(bad_conv1d_layer, "conv1d_layer_init", "c: bad size",
                 "stride=0");
    expect_abort(bad_transpose1d_layer, "conv_transpose1d_layer_init",
                 "output_padding=2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_shapes_and_torch_bounds),
        cmocka_unit_test(glorot_and_he_bounds),
        cmocka_unit_test(flatten_round_trip),
        cmocka_unit_test(flatten_past_int_aborts),
        cmocka_unit_test(gradcheck_encoder_decoder),
        cmocka_unit_test(ex_layers_take_every_geometry),
        cmocka_unit_test(ex_bad_geometry_aborts),
        cmocka_unit_test(layers_1d),
        cmocka_unit_test(layers_1d_bad_geometry_aborts),
    };
    return cmocka_run_group_tests_name("conv_layers", tests, NULL, NULL);
}

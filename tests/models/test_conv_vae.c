/* The convolutional VAE: its parameters are PyTorch's (names, shapes, in
 * the checkpoint's safetensors header too), the checkpoint records the
 * architecture, and training steps give the same bits on 1 and 2 threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/tmpdir.h"
#include "tapegrad.h"

static const tg_vae_config CONV = {784, 0, 20, TG_VAE_CONV, TG_VAE_BERNOULLI};

/* torch.nn names and shapes of the architecture for 28x28 images */
static const struct {
    const char *name;
    int ndim, shape[4];
} torch_params[] = {
    {"encoder.conv1.weight", 4, {32, 1, 4, 4}},
    {"encoder.conv1.bias", 1, {32}},
    {"encoder.conv2.weight", 4, {64, 32, 4, 4}},
    {"encoder.conv2.bias", 1, {64}},
    {"encoder.fc.weight", 2, {40, 3136}},
    {"encoder.fc.bias", 1, {40}},
    {"decoder.fc.weight", 2, {3136, 20}},
    {"decoder.fc.bias", 1, {3136}},
    {"decoder.deconv1.weight", 4, {64, 32, 4, 4}},
    {"decoder.deconv1.bias", 1, {32}},
    {"decoder.deconv2.weight", 4, {32, 1, 4, 4}},
    {"decoder.deconv2.bias", 1, {1}},
};
enum { N_PARAMS = sizeof torch_params / sizeof torch_params[0] };

static void parameters_are_torchs(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CONV, 1);
    tg_params *ps = tg_vae_params(vae);
    assert_int_equal(tg_params_count(ps), N_PARAMS);
    for (int i = 0; i < N_PARAMS; i++) {
        tg_tensor *t = tg_params_find(ps, torch_params[i].name);
        assert_non_null(t);
        assert_int_equal(t->ndim, torch_params[i].ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_int_equal(t->shape[d], torch_params[i].shape[d]);
    }
    assert_int_equal(tg_params_numel(ps), 258025); /* torch's count */
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 3, 784, true);
    tg_rng rng;
    tg_rng_seed(&rng, 1, 1);
    tg_vae_out o = tg_vae_forward(tp, vae, x, &rng);
    assert_int_equal(o.logits->ndim, 2);
    assert_int_equal(o.logits->shape[0], 3);
    assert_int_equal(o.logits->shape[1], 784);
    assert_int_equal(o.mean->shape[1], 20);
    tg_tape_free(tp);
    tg_vae_free(vae);
}

/* Reads the safetensors header of path (8-byte little-endian length, then
 * JSON) into a string; written here, not through the library's reader. */
static char *read_header(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, f), 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | len8[i];
    assert_true(n > 0 && n < (1u << 20));
    char *json = calloc(n + 1, 1);
    assert_int_equal(fread(json, 1, n, f), n);
    fclose(f);
    return json;
}

/* The shape list of tensor name in the header, as "[a,b,...]" without
 * spaces. */
static void header_shape(const char *json, const char *name, char *out)
{
    char key[96];
    snprintf(key, sizeof key, "\"%s\"", name);
    const char *p = strstr(json, key);
    assert_non_null(p);
    p = strstr(p, "\"shape\"");
    assert_non_null(p);
    p = strchr(p, '[');
    size_t k = 0;
    for (; *p && *p != ']'; p++)
        if (*p != ' ')
            out[k++] = *p;
    out[k++] = ']';
    out[k] = 0;
}

static void checkpoint_has_torch_layouts_and_arch(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CONV, 2);
    char path[256];
    snprintf(path, sizeof path, "%s", in_dir("conv.safetensors"));
    assert_int_equal(tg_vae_save(path, vae, NULL, NULL, NULL), TG_OK);
    char *json = read_header(path);
    for (int i = 0; i < N_PARAMS; i++) {
        char got[64], want[64];
        header_shape(json, torch_params[i].name, got);
        int k = sprintf(want, "[");
        for (int d = 0; d < torch_params[i].ndim; d++)
            k += sprintf(want + k, d ? ",%d" : "%d", torch_params[i].shape[d]);
        sprintf(want + k, "]");
        assert_string_equal(got, want);
    }
    assert_non_null(strstr(json, "\"arch\""));
    assert_non_null(strstr(json, "\"conv\""));
    free(json);

    tg_vae *back = NULL;
    tg_vae_info info;
    assert_int_equal(tg_vae_open(path, &back, &info), TG_OK);
    assert_int_equal(back->cfg.arch, TG_VAE_CONV);
    tg_params *a = tg_vae_params(vae), *b = tg_vae_params(back);
    assert_memory_equal(tg_params_data(a), tg_params_data(b),
                        tg_params_numel(a) * sizeof(float));
    tg_vae_free(back);
    tg_vae_free(vae);

    /* an MLP of the same sizes does not take it */
    tg_vae *mlp = tg_vae_new(
        (tg_vae_config){784, 0, 20, TG_VAE_MLP, TG_VAE_BERNOULLI}, 1);
    assert_int_equal(tg_vae_load(path, mlp, NULL, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "arch"));
    tg_vae_free(mlp);
}

/* Three Adam steps on 16 random images; returns the parameters. */
static float *train(int threads)
{
    tg_set_threads(threads);
    tg_vae *vae = tg_vae_new(CONV, 3);
    tg_optim *opt = tg_adam_new(tg_vae_params(vae), 1e-3f);
    tg_rng data, noise;
    tg_rng_seed(&data, 3, 1);
    tg_rng_seed(&noise, 3, 2);
    tg_tape *tp = tg_tape_new();
    float *x = malloc(sizeof(float) * 16 * 784);
    tg_rng_fill_uniform(&data, x, 16 * 784, 0.0f, 1.0f);
    for (int s = 0; s < 3; s++) {
        tg_tape_reset(tp);
        tg_params_zero_grad(tg_vae_params(vae));
        tg_vae_out o =
            tg_vae_forward(tp, vae, tg_tape_view2(tp, x, 16, 784), &noise);
        tg_backward(tp, o.loss);
        tg_optim_step(opt);
    }
    tg_params *ps = tg_vae_params(vae);
    size_t n = tg_params_numel(ps);
    float *out = malloc(n * sizeof *out);
    memcpy(out, tg_params_data(ps), n * sizeof *out);
    free(x);
    tg_tape_free(tp);
    tg_optim_free(opt);
    tg_vae_free(vae);
    return out;
}

static void same_bits_on_1_and_2_threads(void **state)
{
    (void)state;
    int old = tg_get_threads();
    float *one = train(1), *two = train(2);
    tg_set_threads(old);
    assert_memory_equal(one, two, 258025 * sizeof(float));
    free(one);
    free(two);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parameters_are_torchs),
        cmocka_unit_test(checkpoint_has_torch_layouts_and_arch),
        cmocka_unit_test(same_bits_on_1_and_2_threads),
    };
    return cmocka_run_group_tests_name("conv vae", tests, setup, teardown);
}

/* tg_vae_save / tg_vae_load / tg_vae_open: a round trip keeps weights,
 * optimizer state, position and the caller's entries; what is wrong in a
 * file (another model, non-finite weights, an impossible position, another
 * config) is refused with a message naming the file. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "../nn/tmpdir.h"
#include "tapegrad.h"

static const tg_vae_config CFG = {.input = 12, .hidden = 5, .latent = 3};

static tg_vae_position a_position(void)
{
    tg_vae_position pos = {.epoch = 2,
                           .batch = 3,
                           .seen = 90,
                           .skipped = 1,
                           .rec = 123.25,
                           .kl = 0.1};
    tg_rng_seed(&pos.noise, 9, 1002);
    tg_rng_u64(&pos.noise);
    return pos;
}

static void round_trip(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CFG, 1);
    tg_optim *opt = tg_adam_new(tg_vae_params(vae), 1e-3f);
    opt->step = 41;
    opt->m[3] = 0.5f;
    tg_vae_position pos = a_position();
    tg_meta extra = {0};
    tg_meta_set(&extra, "seed", "9");
    const char *path = in_dir("vae.safetensors");
    assert_int_equal(tg_vae_save(path, vae, opt, &pos, &extra), TG_OK);

    tg_vae *back = tg_vae_new(CFG, 2);
    tg_optim *opt2 = tg_adam_new(tg_vae_params(back), 1e-3f);
    tg_vae_info info;
    assert_int_equal(tg_vae_load(path, back, opt2, &info), TG_OK);
    assert_memory_equal(tg_params_data(tg_vae_params(vae)),
                        tg_params_data(tg_vae_params(back)),
                        tg_params_numel(tg_vae_params(vae)) * sizeof(float));
    assert_true(opt2->step == 41 && opt2->m[3] == 0.5f);
    assert_true(info.has_position);
    assert_true(info.pos.epoch == 2 && info.pos.batch == 3 &&
                info.pos.seen == 90 && info.pos.skipped == 1);
    assert_true(info.pos.rec == 123.25 && info.pos.kl == 0.1);
    assert_memory_equal(info.pos.noise.s, pos.noise.s, sizeof pos.noise.s);
    assert_string_equal(tg_meta_get(&info.meta, "seed"), "9");

    tg_vae *opened;
    assert_int_equal(tg_vae_open(path, &opened, NULL), TG_OK);
    assert_int_equal(opened->cfg.hidden, 5);
    tg_vae_free(opened);
    tg_optim_free(opt2);
    tg_vae_free(back);
    tg_optim_free(opt);
    tg_vae_free(vae);
}

static void refuses_to_save_nonfinite(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CFG, 1);
    tg_optim *opt = tg_adam_new(tg_vae_params(vae), 1e-3f);
    const char *path = in_dir("nan.safetensors");
    opt->v[7] = INFINITY;
    assert_int_equal(tg_vae_save(path, vae, opt, NULL, NULL), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "encoder.fc1.weight"));
    opt->v[7] = 0.0f;
    vae->dec2.b->data[0] = NAN;
    assert_int_equal(tg_vae_save(path, vae, opt, NULL, NULL), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "decoder.fc2.bias"));
    FILE *f = fopen(path, "rb");
    assert_null(f);
    tg_optim_free(opt);
    tg_vae_free(vae);
}

/* A file saved by tg_checkpoint_save with meta of our choosing. */
static const char *crafted(tg_vae *vae, const char *key, const char *value)
{
    tg_meta m = {0};
    tg_meta_set(&m, "model", "vae");
    tg_meta_set_int(&m, "input", CFG.input);
    tg_meta_set_int(&m, "hidden", CFG.hidden);
    tg_meta_set_int(&m, "latent", CFG.latent);
    tg_vae_position pos = a_position();
    tg_meta_set_int(&m, "epoch", pos.epoch);
    tg_meta_set_int(&m, "batch_in_epoch", pos.batch);
    tg_meta_set_int(&m, "epoch_seen", pos.seen);
    tg_meta_set_int(&m, "epoch_skipped", pos.skipped);
    tg_meta_set_double(&m, "epoch_rec", pos.rec);
    tg_meta_set_double(&m, "epoch_kl", pos.kl);
    tg_meta_set_rng(&m, "noise_rng", &pos.noise);
    tg_meta_set(&m, key, value);
    const char *path = in_dir("crafted.safetensors");
    assert_int_equal(tg_checkpoint_save(path, tg_vae_params(vae), NULL, &m),
                     TG_OK);
    return path;
}

static void refuses_bad_files(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CFG, 1);
    struct {
        const char *key, *value, *says;
    } bad[] = {
        {"model", "mlp", "model is 'mlp'"},
        {"hidden", "6", "hidden 6"},
        {"latent", "99999", "latent"},
        {"epoch", "-1", "epoch"},
        {"epoch_seen", "1000000000", "epoch_seen"},
        {"epoch_skipped", "4", "epoch_skipped"},
        {"epoch_rec", "nan", "epoch_rec"},
        {"likelihood", "gaussian", "metadata 'likelihood' is 'gaussian'"},
        /* another writer's transposed weights: a square one (hidden =
         * 2 x latent) loaded silently as another model */
        {"weight_layout", "[in, out]",
         "metadata 'weight_layout' is '[in, out]'"},
        {"weight_layout",
         "[out, in] (torch.nn.Linear); [out, in, kh, kw] (torch.nn.Conv2d); "
         "[in, out, kh, kw] (torch.nn.ConvTranspose2d)",
         "metadata 'arch' is mlp (absent), but 'weight_layout' is the conv "
         "VAE's"},
        {"noise_rng",
         "0000000000000000000000000000000000000000000000000000000000000000",
         "noise_rng"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *path = crafted(vae, bad[i].key, bad[i].value);
        tg_status st = tg_vae_load(path, vae, NULL, NULL);
        assert_int_not_equal(st, TG_OK);
        if (!strstr(tg_errmsg(), bad[i].says) ||
            !strstr(tg_errmsg(), "crafted.safetensors"))
            fail_msg("%s = %s: message '%s'", bad[i].key, bad[i].value,
                     tg_errmsg());
    }
    /* metadata of another model than the tensors: the model the metadata
     * describe is the one tg_vae_open builds, and the message says so */
    tg_vae *opened = NULL;
    assert_int_equal(tg_vae_open(crafted(vae, "hidden", "6"), &opened, NULL),
                     TG_ERR_MISMATCH);
    assert_null(opened);
    if (!strstr(tg_errmsg(), "[6, 12] in the model") ||
        !strstr(tg_errmsg(), "its metadata describe that model (mlp, input "
                             "12, hidden 6, latent 3), its tensors another"))
        fail_msg("message '%s'", tg_errmsg());
    /* the layout every file of this library states, or none: loads */
    const char *path =
        crafted(vae, "weight_layout", "[out, in] (torch.nn.Linear)");
    assert_int_equal(tg_vae_load(path, vae, NULL, NULL), TG_OK);
    tg_vae_free(vae);
}

/* The checkpoint records the likelihood; a file without it is a
 * Bernoulli; loading into a model of the other likelihood is refused. */
static void records_the_likelihood(void **state)
{
    (void)state;
    tg_vae_config cb = CFG;
    cb.likelihood = TG_VAE_CB;
    tg_vae *vae = tg_vae_new(cb, 1);
    const char *path = in_dir("cb.safetensors");
    assert_int_equal(tg_vae_save(path, vae, NULL, NULL, NULL), TG_OK);
    tg_vae_info info;
    assert_int_equal(tg_vae_read_info(path, &info), TG_OK);
    assert_int_equal(info.cfg.likelihood, TG_VAE_CB);
    assert_string_equal(tg_meta_get(&info.meta, "likelihood"), "cb");
    tg_vae *opened;
    assert_int_equal(tg_vae_open(path, &opened, NULL), TG_OK);
    assert_int_equal(opened->cfg.likelihood, TG_VAE_CB);
    assert_memory_equal(tg_params_data(tg_vae_params(vae)),
                        tg_params_data(tg_vae_params(opened)),
                        tg_params_numel(tg_vae_params(vae)) * sizeof(float));
    tg_vae_free(opened);

    tg_vae *bern = tg_vae_new(CFG, 1);
    assert_int_equal(tg_vae_load(path, bern, NULL, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "likelihood cb"));
    /* a Bernoulli's file says so; the cb model refuses it */
    assert_int_equal(tg_vae_save(path, bern, NULL, NULL, NULL), TG_OK);
    assert_int_equal(tg_vae_read_info(path, &info), TG_OK);
    assert_string_equal(tg_meta_get(&info.meta, "likelihood"), "bernoulli");
    assert_int_equal(tg_vae_load(path, vae, NULL, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "likelihood bernoulli"));
    /* written before the key existed: a Bernoulli */
    const char *old = crafted(bern, "seed", "1");
    assert_int_equal(tg_vae_read_info(old, &info), TG_OK);
    assert_null(tg_meta_get(&info.meta, "likelihood"));
    assert_int_equal(info.cfg.likelihood, TG_VAE_BERNOULLI);
    assert_int_equal(tg_vae_load(old, bern, NULL, NULL), TG_OK);
    tg_vae_free(bern);
    tg_vae_free(vae);
}

/* Metadata describing a model far larger than the file's tensors
 * (input 4096, hidden 65536, latent 4096: 1.3 G weights, over a parameter
 * set's 512 M floats): tg_vae_open built that model from the metadata before
 * reading a tensor and aborted in tg_params_add. Refused with a message
 * instead, before anything is allocated; so is a smaller overstatement. */
static void refuses_metadata_larger_than_the_file(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CFG, 1);
    const char *sizes[][3] = {
        {"4096", "65536", "4096"}, {"784", "400", "20"}, {"784", "0", "2000"}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        tg_meta m = {0};
        tg_meta_set(&m, "model", "vae");
        tg_meta_set(&m, "input", sizes[i][0]);
        tg_meta_set(&m, "hidden", sizes[i][1]);
        tg_meta_set(&m, "latent", sizes[i][2]);
        const char *path = in_dir("big.safetensors");
        assert_int_equal(tg_checkpoint_save(path, tg_vae_params(vae), NULL, &m),
                         TG_OK);
        tg_vae *opened = (tg_vae *)1;
        assert_int_equal(tg_vae_open(path, &opened, NULL), TG_ERR_FORMAT);
        assert_null(opened);
        if (!strstr(tg_errmsg(), "big.safetensors") ||
            !strstr(tg_errmsg(), "metadata describes"))
            fail_msg("message '%s'", tg_errmsg());
    }
    /* tg_vae_numel, which the check uses, is what tg_vae_new makes */
    const tg_vae_config cfgs[] = {
        CFG,
        {.input = 12, .hidden = 0, .latent = 3},
        {.input = 64, .latent = 2, .arch = TG_VAE_CONV},
        {.input = 144, .latent = 5, .arch = TG_VAE_CONV}};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        tg_vae *v = tg_vae_new(cfgs[i], 1);
        assert_int_equal(tg_vae_numel(cfgs[i]),
                         tg_params_numel(tg_vae_params(v)));
        tg_vae_free(v);
    }
    /* a conv model's file passes the same check */
    tg_vae *conv = tg_vae_new(
        (tg_vae_config){.input = 64, .latent = 2, .arch = TG_VAE_CONV}, 1);
    const char *path = in_dir("conv.safetensors");
    assert_int_equal(tg_vae_save(path, conv, NULL, NULL, NULL), TG_OK);
    tg_vae *opened;
    assert_int_equal(tg_vae_open(path, &opened, NULL), TG_OK);
    tg_vae_free(opened);
    tg_vae_free(conv);
    tg_vae_free(vae);
}

static void refuses_nonfinite_weights_on_load(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(CFG, 1);
    const char *path = in_dir("w.safetensors");
    assert_int_equal(tg_vae_save(path, vae, NULL, NULL, NULL), TG_OK);
    /* poke a NaN into the stored decoder bias via a model saved raw */
    vae->dec2.b->data[1] = NAN;
    tg_meta m = {0};
    tg_meta_set(&m, "model", "vae");
    tg_meta_set_int(&m, "input", CFG.input);
    tg_meta_set_int(&m, "hidden", CFG.hidden);
    tg_meta_set_int(&m, "latent", CFG.latent);
    assert_int_equal(tg_checkpoint_save(path, tg_vae_params(vae), NULL, &m),
                     TG_OK);
    tg_vae *opened = (tg_vae *)1;
    assert_int_equal(tg_vae_open(path, &opened, NULL), TG_ERR_FORMAT);
    assert_null(opened);
    assert_non_null(strstr(tg_errmsg(), "decoder.fc2.bias"));
    assert_non_null(strstr(tg_errmsg(), "w.safetensors"));
    tg_vae_free(vae);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(refuses_to_save_nonfinite),
        cmocka_unit_test(refuses_bad_files),
        cmocka_unit_test(records_the_likelihood),
        cmocka_unit_test(refuses_nonfinite_weights_on_load),
        cmocka_unit_test(refuses_metadata_larger_than_the_file),
    };
    return cmocka_run_group_tests_name("vae_io", tests, setup, teardown);
}

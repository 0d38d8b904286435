/* Checkpoints that load: bit-exact round trips of parameters, optimizer
 * state (Adam, SGD and its settings, moments of a changed optimizer) and
 * metadata (strings, integers, generator states), loads under a prefix
 * into another model, and metadata a load could not read back refused at
 * save. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/safetensors.h"
#include "tg_nn.h"

#include "tmpdir.h"

#include "checkpoint_common.h"

static void round_trip_is_bit_exact(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    size_t n = tg_params_numel(ps);
    fill(tg_params_data(ps), n, 1);
    tg_optim *opt = adam_with_state(ps, 10);
    tg_meta meta = {0};
    tg_meta_set(&meta, "model", "vae 784-400-20");
    tg_meta_set_int(&meta, "epoch", -3);
    tg_meta_set(&meta, "odd \"chars\"", "back\\slash\nnewline\ttab é ✓");
    tg_meta_set(&meta, "ctl", "a\x01b\rc\x1f\b\f");
    const char *p = in_dir("rt.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, opt, &meta), TG_OK);

    tg_params *ps2 = model(4);
    tg_optim *opt2 = tg_adam_new(ps2, 1e-3f);
    tg_meta meta2;
    assert_int_equal(tg_checkpoint_load(p, ps2, opt2, &meta2), TG_OK);
    assert_true(same_bits(tg_params_data(ps), tg_params_data(ps2), n));
    assert_true(same_bits(opt->m, opt2->m, n));
    assert_true(same_bits(opt->v, opt2->v, n));
    assert_true(opt2->step == opt->step);
    assert_string_equal(tg_meta_get(&meta2, "model"), "vae 784-400-20");
    int64_t epoch;
    assert_int_equal(tg_meta_get_int(&meta2, "epoch", &epoch), TG_OK);
    assert_true(epoch == -3);
    assert_string_equal(tg_meta_get(&meta2, "odd \"chars\""),
                        "back\\slash\nnewline\ttab é ✓");
    assert_string_equal(tg_meta_get(&meta2, "ctl"), "a\x01b\rc\x1f\b\f");
    assert_string_equal(tg_meta_get(&meta2, "optim.kind"), "adam");
    assert_int_equal(tg_meta_get_int(&meta2, "model", &epoch), TG_ERR_FORMAT);
    assert_int_equal(tg_meta_get_int(&meta2, "nope", &epoch), TG_ERR_FORMAT);

    /* Parameters alone load from the same file. */
    tg_params *ps3 = model(4);
    assert_int_equal(tg_checkpoint_load(p, ps3, NULL, NULL), TG_OK);
    assert_true(same_bits(tg_params_data(ps), tg_params_data(ps3), n));

    /* The layout on disk: little-endian F32 at the header's offsets. */
    tg_st_file f;
    assert_int_equal(tg_st_open(p, &f), TG_OK);
    assert_int_equal(f.data_start % 8, 0);
    const tg_st_entry *e = tg_st_find(&f, "dec.weight");
    assert_non_null(e);
    assert_int_equal(e->ndim, 2);
    assert_int_equal(e->shape[0], 4);
    float raw[12];
    assert_int_equal(tg_st_read_f32(&f, e, raw), TG_OK);
    assert_true(same_bits(raw, tg_params_find(ps, "dec.weight")->data, 12));
    assert_non_null(tg_st_find(&f, "optim.v.enc.bias"));
    tg_st_close(&f);

    tg_optim_free(opt);
    tg_optim_free(opt2);
    tg_params_free(ps);
    tg_params_free(ps2);
    tg_params_free(ps3);
}

static void sgd_state_and_optimizer_kind(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    size_t n = tg_params_numel(ps);
    fill(tg_params_data(ps), n, 2);
    tg_optim *sgd = tg_sgd_new(ps, 0.1f, 0.9f);
    fill(sgd->m, n, 3);
    sgd->step = 7;
    const char *p = in_dir("sgd.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, sgd, NULL), TG_OK);

    tg_params *ps2 = model(4);
    tg_optim *sgd2 = tg_sgd_new(ps2, 0.1f, 0.9f);
    assert_int_equal(tg_checkpoint_load(p, ps2, sgd2, NULL), TG_OK);
    assert_true(same_bits(sgd->m, sgd2->m, n));
    assert_true(sgd2->step == 7);

    tg_optim *adam = tg_adam_new(ps2, 1e-3f);
    assert_int_equal(tg_checkpoint_load(p, ps2, adam, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "sgd"));
    assert_true(adam->step == 0);

    /* The settings go with the state: an SGD of another momentum, or with
     * Nesterov's update, is refused (it loaded and went on with another
     * update rule); the model is left alone. */
    tg_params *ps3 = model(4);
    fill(tg_params_data(ps3), n, 9);
    float before = tg_params_data(ps3)[0];
    tg_optim *other = tg_sgd_new(ps3, 0.1f, 0.5f);
    assert_int_equal(tg_checkpoint_load(p, ps3, other, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "momentum is 0.899999976"));
    assert_true(tg_params_data(ps3)[0] == before && other->step == 0);
    other->momentum = 0.9f;
    other->nesterov = true;
    assert_int_equal(tg_checkpoint_load(p, ps3, other, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "nesterov"));
    other->nesterov = false;
    other->weight_decay = 1e-4f;
    assert_int_equal(tg_checkpoint_load(p, ps3, other, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "weight_decay"));
    other->weight_decay = 0.0f;
    assert_int_equal(tg_checkpoint_load(p, ps3, other, NULL), TG_OK);
    tg_optim_free(other);
    tg_params_free(ps3);

    /* A file without optimizer state cannot restore one. */
    assert_int_equal(tg_checkpoint_save(p, ps, NULL, NULL), TG_OK);
    assert_int_equal(tg_checkpoint_load(p, ps2, sgd2, NULL), TG_ERR_MISMATCH);
    assert_true(sgd2->step == 7);

    tg_optim_free(sgd);
    tg_optim_free(sgd2);
    tg_optim_free(adam);
    tg_params_free(ps);
    tg_params_free(ps2);
}

static void meta_set_get_and_integers(void **state)
{
    (void)state;
    tg_meta m = {0};
    int64_t v = 1;
    tg_meta_set(&m, "a", "x");
    tg_meta_set(&m, "a", "y"); /* replaces */
    assert_int_equal(m.n, 1);
    assert_string_equal(tg_meta_get(&m, "a"), "y");
    assert_null(tg_meta_get(&m, "b"));
    tg_meta_set_int(&m, "big", INT64_MIN);
    assert_int_equal(tg_meta_get_int(&m, "big", &v), TG_OK);
    assert_true(v == INT64_MIN);
    const char *bad[] = {"",   " 5", "5 ",   "5x",
                         "+5", "-",  "0x10", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tg_meta_set(&m, "n", bad[i]);
        v = 1;
        assert_int_equal(tg_meta_get_int(&m, "n", &v), TG_ERR_FORMAT);
        assert_true(v == 1);
    }
    tg_meta_set(&m, "n", "-0042");
    assert_int_equal(tg_meta_get_int(&m, "n", &v), TG_OK);
    assert_true(v == -42);
}

/* A generator state reads back exactly; a missing key is called missing
 * (it had been called "not a generator state", as a damaged value is). */
static void meta_rng_round_trip_and_missing_key(void **state)
{
    (void)state;
    tg_meta m = TG_META_INIT;
    tg_rng r, back;
    tg_rng_seed(&r, 3, 7);
    tg_meta_set_rng(&m, "drop_rng", &r);
    assert_int_equal(tg_meta_get_rng(&m, "drop_rng", &back), TG_OK);
    assert_memory_equal(&r, &back, sizeof r);
    assert_int_equal(tg_meta_get_rng(&m, "noise_rng", &back), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "'noise_rng' missing"));
    tg_meta_set(&m, "noise_rng", "12ab");
    assert_int_equal(tg_meta_get_rng(&m, "noise_rng", &back), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "not a generator state"));
}

/* The moments of an Adam that was an RMSprop with momentum before (a
 * switch tg_optim allows among the kinds with a second moment), or whose
 * beta1 a schedule changed, are no state a constant Adam reaches (m^2
 * beyond 52.9 v for the default betas), yet a run saved them: they load.
 * A check of that bound refused them (the file's state is the file's, as
 * its weights are). */
static void moments_of_a_changed_optimizer_load(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    size_t n = tg_params_numel(ps);
    fill(tg_params_data(ps), n, 5);
    tg_optim *opt = tg_rmsprop_new(ps, 1e-3f, 0.9f);
    for (size_t i = 0; i < n; i++) { /* RMSprop's m is g / sqrt(v) summed */
        opt->v[i] = 1e-6f;
        opt->m[i] = i % 2 ? 10.0f : -10.0f;
    }
    opt->step = 500;
    opt->kind = TG_OPTIM_ADAM;
    opt->momentum = 0.0f; /* (Adam's settings hold no momentum) */
    const char *p = in_dir("switched.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, opt, NULL), TG_OK);
    tg_params *ps2 = model(4);
    tg_optim *adam = tg_adam_new(ps2, 1e-3f);
    if (tg_checkpoint_load(p, ps2, adam, NULL) != TG_OK)
        fail_msg("%s", tg_errmsg());
    assert_true(same_bits(opt->m, adam->m, n) && same_bits(opt->v, adam->v, n));
    tg_optim_free(adam);
    tg_optim_free(opt);
    tg_params_free(ps2);
    tg_params_free(ps);
}

/* A model of an encoder and a head; the file holds an encoder and a
 * decoder. */
static tg_params *two_part(const char *enc, const char *other, int in)
{
    tg_params *ps = tg_params_new();
    char name[64];
    snprintf(name, sizeof name, "%s.fc.weight", enc);
    tg_params_add(ps, name, 2, (int[]){3, in});
    snprintf(name, sizeof name, "%s.fc.bias", enc);
    tg_params_add(ps, name, 1, (int[]){3});
    snprintf(name, sizeof name, "%s.fc.weight", other);
    tg_params_add(ps, name, 2, (int[]){2, 3});
    return ps;
}

static void a_prefix_loads_into_a_new_model(void **state)
{
    (void)state;
    const char *p = in_dir("vae.safetensors");
    tg_params *vae = two_part("encoder", "decoder", 4);
    fill(tg_params_data(vae), tg_params_numel(vae), 31);
    tg_optim *opt = tg_adam_new(vae, 1e-3f); /* optimizer state is skipped */
    assert_int_equal(tg_checkpoint_save(p, vae, opt, NULL), TG_OK);
    tg_optim_free(opt);
    const float *enc = tg_params_data(vae); /* encoder: the first 15 */

    tg_params *clf = two_part("encoder", "head", 4);
    fill(tg_params_data(clf), tg_params_numel(clf), 32);
    float head[6];
    memcpy(head, tg_params_find(clf, "head.fc.weight")->data, sizeof head);
    assert_int_equal(tg_checkpoint_load_prefix(p, clf, "encoder.", NULL),
                     TG_OK);
    assert_true(same_bits(tg_params_data(clf), enc, 15));
    assert_true(
        same_bits(tg_params_find(clf, "head.fc.weight")->data, head, 6));

    /* Renamed: the file's "encoder." into the model's "enc.". */
    tg_params *renamed = two_part("enc", "head", 4);
    assert_int_equal(tg_checkpoint_load_prefix(p, renamed, "encoder.", "enc."),
                     TG_OK);
    assert_true(same_bits(tg_params_data(renamed), enc, 15));

    /* A shape, a missing tensor, an extra one; the model stays as it was. */
    tg_params *wide = two_part("encoder", "head", 5);
    float before[15];
    memcpy(before, tg_params_data(wide), sizeof before);
    assert_int_equal(tg_checkpoint_load_prefix(p, wide, "encoder.", NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'encoder.fc.weight' has shape "
                                        "[3, 4] in the file but [3, 5]"));
    assert_true(same_bits(tg_params_data(wide), before, 15));
    tg_params *more = tg_params_new();
    tg_params_add(more, "encoder.fc.weight", 2, (int[]){3, 4});
    tg_params_add(more, "encoder.fc.bias", 1, (int[]){3});
    tg_params_add(more, "encoder.fc2.bias", 1, (int[]){3});
    assert_int_equal(tg_checkpoint_load_prefix(p, more, "encoder.", NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'encoder.fc2.bias' missing"));
    tg_params *less = tg_params_new();
    tg_params_add(less, "encoder.fc.weight", 2, (int[]){3, 4});
    assert_int_equal(tg_checkpoint_load_prefix(p, less, "encoder.", NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'encoder.fc.bias' is not a "
                                        "parameter of the model"));
    assert_int_equal(tg_checkpoint_load_prefix(p, less, "decoder.", "head."),
                     TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "no parameter named 'head.*'"));

    tg_params_free(vae);
    tg_params_free(clf);
    tg_params_free(renamed);
    tg_params_free(wide);
    tg_params_free(more);
    tg_params_free(less);
}

static void meta_initialiser_is_empty(void **state)
{
    (void)state;
    tg_meta a = TG_META_INIT, b;
    tg_meta_init(&b);
    assert_int_equal(a.n, 0);
    assert_int_equal(b.n, 0);
    assert_null(tg_meta_get(&a, "x"));
    tg_meta_set(&b, "x", "1");
    assert_string_equal(tg_meta_get(&b, "x"), "1");
}

/* The optimizer's three entries count toward TG_META_MAX: 30 of the
 * caller's with them saved (TG_OK) a file whose metadata no load could read
 * back ("35 metadata entries, at most 32"). Now such a save is refused and
 * writes nothing; 29 save and load, and a caller's "optim.step" gives way
 * to the optimizer's. */
static void metadata_that_cannot_load_back_is_not_saved(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 4);
    tg_optim *adam = tg_adam_new(ps, 1e-3f);
    adam->step = 5;
    tg_meta m = TG_META_INIT;
    char key[16];
    for (int i = 0; i < TG_META_MAX - 2; i++) {
        snprintf(key, sizeof key, "k%d", i);
        tg_meta_set(&m, key, "v");
    }
    const char *p = in_dir("meta_full.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "30 metadata entries and the "
                                        "optimizer's 3, at most 32"));
    assert_int_equal(file_size(p), -1);
    assert_no_temp_files();
    /* without the optimizer all 30 fit */
    assert_int_equal(tg_checkpoint_save(p, ps, NULL, &m), TG_OK);

    m.n = TG_META_MAX - 3; /* 29, and the caller's own "optim.step" */
    tg_meta_set(&m, "optim.step", "999");
    assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_OK);
    tg_meta back;
    tg_params *ps2 = model(4);
    tg_optim *adam2 = tg_adam_new(ps2, 1e-3f);
    assert_int_equal(tg_checkpoint_load(p, ps2, adam2, &back), TG_OK);
    assert_int_equal(back.n, TG_META_MAX);
    assert_string_equal(tg_meta_get(&back, "optim.step"), "5");
    assert_true(adam2->step == 5);
    tg_optim_free(adam2);
    tg_params_free(ps2);
    tg_optim_free(adam);
    tg_params_free(ps);
}

/* A caller's key one bit from the checksum's outside the "tapegrad."
 * prefix ("Tapegrad.checksum", "tapegrad/checksum") was saved, and every
 * load then refused the file as damaged: the save refuses it instead. */
static void keys_a_load_refuses_are_not_saved(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    const char *p = in_dir("near_checksum.safetensors");
    const char *near[] = {"Tapegrad.checksum", "tapegrad/checksum",
                          "uapegrad.checksum", "tapegraD.checksum"};
    for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
        tg_meta m = TG_META_INIT;
        tg_meta_set(&m, near[i], "x");
        tg_status st = tg_checkpoint_save(p, ps, NULL, &m);
        if (st == TG_OK) { /* what a load makes of it */
            tg_meta back;
            fail_msg("'%s' saved; read_meta gives %d (%s)", near[i],
                     tg_checkpoint_read_meta(p, &back), tg_errmsg());
        }
        assert_int_equal(st, TG_ERR_ARG);
        assert_non_null(strstr(tg_errmsg(), near[i]));
        assert_int_equal(file_size(p), -1);
    }
    /* two bits away is any other key */
    tg_meta m = TG_META_INIT;
    tg_meta_set(&m, "Tapegrad/checksum", "x");
    assert_int_equal(tg_checkpoint_save(p, ps, NULL, &m), TG_OK);
    tg_meta back;
    assert_int_equal(tg_checkpoint_read_meta(p, &back), TG_OK);
    assert_true(tg_meta_equal(&m, &back));
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_is_bit_exact),
        cmocka_unit_test(moments_of_a_changed_optimizer_load),
        cmocka_unit_test(meta_rng_round_trip_and_missing_key),
        cmocka_unit_test(sgd_state_and_optimizer_kind),
        cmocka_unit_test(meta_set_get_and_integers),
        cmocka_unit_test(metadata_that_cannot_load_back_is_not_saved),
        cmocka_unit_test(keys_a_load_refuses_are_not_saved),
        cmocka_unit_test(a_prefix_loads_into_a_new_model),
        cmocka_unit_test(meta_initialiser_is_empty),
    };
    return cmocka_run_group_tests_name("nn_checkpoint_round_trip", tests, setup,
                                       teardown);
}

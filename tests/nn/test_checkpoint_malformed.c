/* Malformed checkpoints refused (TG_ERR_FORMAT, or TG_ERR_UNSUPPORTED for
 * another dtype) with the model and optimizer untouched: truncated and
 * resized files, bad header sizes, JSON, dtypes and data offsets, and
 * optimizer state no optimizer can reach. */
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
#include "checkpoint_refused.h"

/* A valid checkpoint of another model instance, as bytes. */
static unsigned char *good_bytes(size_t *len)
{
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 77);
    tg_optim *opt = adam_with_state(ps, 78);
    const char *p = in_dir("good.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, opt, NULL), TG_OK);
    tg_optim_free(opt);
    tg_params_free(ps);
    *len = (size_t)file_size(p);
    unsigned char *b = malloc(*len + 64);
    FILE *f = fopen(p, "rb");
    assert_int_equal(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static void truncated_and_resized_files(void **state)
{
    (void)state;
    size_t n;
    unsigned char *b = good_bytes(&n);
    refused(write_bytes("t1", b, n - 4), TG_ERR_FORMAT); /* data cut */
    assert_non_null(strstr(tg_errmsg(), "size"));
    refused(write_bytes("t2", b, 100), TG_ERR_FORMAT); /* header cut */
    refused(write_bytes("t3", b, 5), TG_ERR_FORMAT);
    refused(write_bytes("t4", b, 0), TG_ERR_FORMAT);
    b[n] = 0;
    refused(write_bytes("t5", b, n + 1), TG_ERR_FORMAT); /* one byte more */

    put_le64(b, (uint64_t)1 << 62);
    refused(write_bytes("h1", b, n), TG_ERR_FORMAT); /* huge header */
    assert_non_null(strstr(tg_errmsg(), "100 MB"));
    put_le64(b, 100000001);
    refused(write_bytes("h2", b, n), TG_ERR_FORMAT);
    put_le64(b, n - 7);
    refused(write_bytes("h3", b, n), TG_ERR_FORMAT); /* past the end */
    put_le64(b, 0);
    refused(write_bytes("h4", b, n), TG_ERR_FORMAT);
    free(b);

    refused(in_dir("does-not-exist"), TG_ERR_IO);
    refused(dir, TG_ERR_IO);
}

static void bad_headers_refused(void **state)
{
    (void)state;
    /* The crafted baseline is accepted: the failures below are real. */
    tg_params *ps = model(4);
    tg_optim *opt = tg_adam_new(ps, 1e-3f);
    assert_int_equal(
        tg_checkpoint_load(craft("ok", model_json(NULL), MODEL_BYTES), ps, opt,
                           NULL),
        TG_OK);
    assert_true(opt->step == 5);
    tg_optim_free(opt);
    tg_params_free(ps);

    const char *bad_json[] = {
        "",
        "{",
        "[]",
        "{}x",
        "{\"a\":}",
        "{\"a\":1}",
        "{,}",
        "{\"a\" 1}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3,4]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[-3,4],"
        "\"data_offsets\":[0,48]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3.0,4],"
        "\"data_offsets\":[0,48]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[03,4],"
        "\"data_offsets\":[0,48]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],"
        "\"data_offsets\":[0,48,96]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],"
        "\"data_offsets\":[0,48],\"extra\":1}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[3,4],"
        "\"data_offsets\":[0,48]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[99999999999,"
        "99999999999,99999999999],\"data_offsets\":[0,48]}}",
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":"
        "[184467440737095516160],\"data_offsets\":[0,48]}}",
        "{\"__metadata__\":{\"a\":1}}",
        "{\"__metadata__\":{\"a\":\"b\"},\"__metadata__\":{}}",
        "{\"__metadata__\":{\"a\":\"x\",\"a\":\"y\"}}",
        "{\"__metadata__\":{\"a\":\"unterminated}}",
        "{\"__metadata__\":{\"a\":\"bad \\q escape\"}}",
        "{\"__metadata__\":{\"a\":\"lone \\ud800\"}}",
        "{\"__metadata__\":{\"a\":\"nul \\u0000\"}}",
        "{\"__metadata__\":{\"a\":\"raw\ttab\"}}",
        "{\"__metadata__\":{\"a\":\"\xc3\x28 bad utf-8\"}}",
        "{\"__metadata__\":{\"a\":\"\xed\xa0\x80 surrogate\"}}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof *bad_json; i++) {
        char name[32];
        snprintf(name, sizeof name, "json%zu", i);
        refused(craft(name, bad_json[i], 0), TG_ERR_FORMAT);
    }

    /* dtype: a known other type is unsupported, nonsense is a bad file. */
    refused(craft("f64",
                  model_json("\"enc.weight\":{\"dtype\":\"F64\","
                             "\"shape\":[3,4],\"data_offsets\":[0,48]}"),
                  MODEL_BYTES),
            TG_ERR_UNSUPPORTED);
    refused(craft("dtype",
                  model_json("\"enc.weight\":{\"dtype\":\"f32\","
                             "\"shape\":[3,4],\"data_offsets\":[0,48]}"),
                  MODEL_BYTES),
            TG_ERR_FORMAT);
    /* Offsets: overlap, gap, not from 0, end - begin != numel * 4. */
    refused(craft("overlap.st",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
                  "\"shape\":[2],\"data_offsets\":[4,12]}}",
                  12),
            TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "(overlap)"));
    refused(craft("gap.st",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
                  "\"shape\":[2],\"data_offsets\":[12,20]}}",
                  20),
            TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "(gap)"));
    refused(craft("shared.st",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
                  "\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8),
            TG_ERR_FORMAT);
    refused(craft("late.st",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                  "\"data_offsets\":[8,16]}}",
                  16),
            TG_ERR_FORMAT);
    refused(craft("short",
                  model_json("\"enc.weight\":{\"dtype\":\"F32\","
                             "\"shape\":[3,4],\"data_offsets\":[0,44]}"),
                  MODEL_BYTES),
            TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "do not hold 12 floats"));
    refused(craft("backwards.st",
                  "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],"
                  "\"data_offsets\":[8,0]}}",
                  8),
            TG_ERR_FORMAT);
    refused(craft("size", model_json(NULL), MODEL_BYTES - 4), TG_ERR_FORMAT);
    refused(craft("size2", model_json(NULL), MODEL_BYTES + 8), TG_ERR_FORMAT);
}

/* Optimizer state no optimizer can reach: a step past TG_OPTIM_MAX_STEP
 * (INT64_MAX overflowed in the next tg_optim_step: UBSan stopped vae_mnist
 * --resume, and without it the step wrapped and the weights became NaN). */
static void unreachable_optimizer_state_refused(void **state)
{
    (void)state;
    const int64_t steps[] = {INT64_MAX, TG_OPTIM_MAX_STEP + 1};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        tg_params *ps = model(4);
        tg_optim *opt = adam_with_state(ps, 90);
        opt->step = steps[i];
        const char *p = in_dir("step.safetensors");
        assert_int_equal(tg_checkpoint_save(p, ps, opt, NULL), TG_OK);
        tg_optim_free(opt);
        tg_params_free(ps);
        refused(p, TG_ERR_FORMAT);
        assert_non_null(strstr(tg_errmsg(), "optimizer step"));
    }
    /* A negative second moment (a mean of squares): sqrt(v) made the first
     * step after the resume NaN, which vae_mnist reported as a blown-up
     * loss (exit 3) instead of a damaged file. */
    tg_params *ps = model(4);
    tg_optim *opt = adam_with_state(ps, 91);
    opt->v[tg_params_numel(ps) - 1] = -1e-12f;
    const char *p = in_dir("negative_v.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, opt, NULL), TG_OK);
    tg_optim_free(opt);
    tg_params_free(ps);
    refused(p, TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "optim.v.dec.weight"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(truncated_and_resized_files,
                                        victim_setup, victim_teardown),
        cmocka_unit_test_setup_teardown(bad_headers_refused, victim_setup,
                                        victim_teardown),
        cmocka_unit_test_setup_teardown(unreachable_optimizer_state_refused,
                                        victim_setup, victim_teardown),
    };
    return cmocka_run_group_tests_name("nn_checkpoint_malformed", tests, setup,
                                       teardown);
}

/* Checkpoints of another model refused (TG_ERR_MISMATCH) with the model
 * untouched: other shapes, missing and extra tensors (the most informative
 * difference first, counted per parameter), optimizer state that names no
 * parameter, and 200,000 extra tensors matched in n log n. */
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

static void files_of_another_model_refused(void **state)
{
    (void)state;
    /* Same names, another shape: the message names tensor and shapes. */
    tg_params *other = model(5);
    tg_optim *other_opt = tg_adam_new(other, 1e-3f);
    const char *p = in_dir("other.safetensors");
    assert_int_equal(tg_checkpoint_save(p, other, other_opt, NULL), TG_OK);
    tg_optim_free(other_opt);
    tg_params_free(other);
    tg_status st = tg_checkpoint_load(p, victim, NULL, NULL);
    assert_int_equal(st, TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "enc.weight"));
    assert_non_null(strstr(tg_errmsg(), "[3, 5]"));
    assert_non_null(strstr(tg_errmsg(), "[3, 4]"));
    refused(p, TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "[3, 5]"));

    /* A tensor the model does not have, or one missing. */
    refused(craft("unexpected",
                  model_json("\"x\":{\"dtype\":\"F32\","
                             "\"shape\":[3,4],\"data_offsets\":[0,48]}"),
                  MODEL_BYTES),
            TG_ERR_MISMATCH);
    /* 'x' took enc.weight's place: the missing tensor is named first. */
    assert_non_null(strstr(tg_errmsg(), "'enc.weight' missing"));
    assert_non_null(strstr(tg_errmsg(), "1 not in the model"));
    tg_params *fewer = tg_params_new();
    tg_params_add(fewer, "enc.weight", 2, (int[]){3, 4});
    tg_params_add(fewer, "enc.bias", 1, (int[]){3});
    tg_optim *fewer_opt = tg_adam_new(fewer, 1e-3f);
    assert_int_equal(tg_checkpoint_save(p, fewer, fewer_opt, NULL), TG_OK);
    tg_optim_free(fewer_opt);
    tg_params_free(fewer);
    refused(p, TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'dec.weight' missing"));
    tg_params *extra = tg_params_new();
    tg_params_add(extra, "enc.weight", 2, (int[]){3, 4});
    tg_params_add(extra, "enc.bias", 1, (int[]){3});
    tg_params_add(extra, "dec.weight", 2, (int[]){4, 3});
    tg_params_add(extra, "dec.bias", 1, (int[]){4});
    assert_int_equal(tg_checkpoint_save(p, extra, NULL, NULL), TG_OK);
    tg_params_free(extra);
    tg_status st2 = tg_checkpoint_load(p, victim, NULL, NULL);
    assert_int_equal(st2, TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "dec.bias"));
}

/* Issue 20: a file holding more tensors than the model reported its first
 * extra tensor even when another tensor's shape was the real problem. Now:
 * missing first, then shape, then extra, each with the counts. */
static void the_most_informative_difference_is_reported_first(void **state)
{
    (void)state;
    const char *p = in_dir("superset.safetensors");
    tg_params *big = tg_params_new(); /* extras first, then a wrong shape */
    tg_params_add(big, "aaa.extra", 1, (int[]){2});
    tg_params_add(big, "enc.weight", 2, (int[]){3, 4});
    tg_params_add(big, "enc.bias", 1, (int[]){5});
    tg_params_add(big, "dec.weight", 2, (int[]){4, 3});
    tg_params_add(big, "zzz.extra", 1, (int[]){2});
    assert_int_equal(tg_checkpoint_save(p, big, NULL, NULL), TG_OK);
    tg_params_free(big);
    refused(p, TG_ERR_MISMATCH); /* victim_opt wants optimizer state */
    assert_int_equal(tg_checkpoint_load(p, victim, NULL, NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'enc.bias' has shape [5] in the "
                                        "file but [3] in the model"));
    assert_non_null(strstr(tg_errmsg(),
                           "parameters: 0 missing, 1 with another shape, "
                           "2 not in the model"));

    tg_params *fewer = tg_params_new(); /* missing beats shape and extra */
    tg_params_add(fewer, "aaa.extra", 1, (int[]){2});
    tg_params_add(fewer, "enc.weight", 2, (int[]){3, 5});
    tg_params_add(fewer, "enc.bias", 1, (int[]){3});
    assert_int_equal(tg_checkpoint_save(p, fewer, NULL, NULL), TG_OK);
    tg_params_free(fewer);
    assert_int_equal(tg_checkpoint_load(p, victim, NULL, NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'dec.weight' missing"));
    assert_non_null(strstr(tg_errmsg(),
                           "parameters: 1 missing, 1 with another shape, "
                           "1 not in the model"));
    assert_true(same_bits(tg_params_data(victim), victim_before,
                          tg_params_numel(victim)));
}

/* The counts are of parameters, each with its optimizer state: a file
 * saved with Adam counted one mis-shaped parameter as "3 with another
 * shape" and one extra as "3 not in the model", even when loaded without
 * an optimizer. */
static void counts_are_of_parameters(void **state)
{
    (void)state;
    const char *p = in_dir("adam_counts.safetensors");
    tg_params *file = tg_params_new();
    tg_params_add(file, "w", 2, (int[]){3, 4});
    tg_params_add(file, "b", 1, (int[]){3});
    tg_params_add(file, "extra", 1, (int[]){2});
    tg_optim *adam = tg_adam_new(file, 1e-3f);
    assert_int_equal(tg_checkpoint_save(p, file, adam, NULL), TG_OK);
    tg_optim_free(adam);
    tg_params_free(file);

    tg_params *model = tg_params_new();
    tg_params_add(model, "w", 2, (int[]){3, 5});
    tg_params_add(model, "b", 1, (int[]){3});
    tg_optim *opt = tg_adam_new(model, 1e-3f);
    assert_int_equal(tg_checkpoint_load(p, model, opt, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "parameters: 0 missing, 1 with "
                                        "another shape, 1 not in the model"));
    assert_int_equal(tg_checkpoint_load(p, model, NULL, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "parameters: 0 missing, 1 with "
                                        "another shape, 1 not in the model"));
    tg_optim_free(opt);
    tg_params_free(model);
}

/* The victim's file (model_json) plus one more tensor named name, of
 * shape [len] (len floats of data after the model's). */
static const char *with_one_more(const char *file, const char *name, int len)
{
    char *json = model_json(NULL), more[256];
    json[strlen(json) - 1] = '\0'; /* the closing brace */
    snprintf(more, sizeof more,
             ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],"
             "\"data_offsets\":[%d,%d]}}",
             name, len, MODEL_BYTES, MODEL_BYTES + 4 * len);
    strcat(json, more);
    return craft(file, json, MODEL_BYTES + 4 * (size_t)len);
}

/* Optimizer state is "optim.m." / "optim.v." + the name of a parameter,
 * with its shape. "optim.m." + the name of any tensor of the file was
 * taken for state and skipped whatever its shape: the file's own state
 * ("optim.m.optim.m.enc.bias", "optim.v.optim.v.enc.bias" of shape [7])
 * loaded as if it were not there. */
static void optimizer_state_needs_a_parameter_and_its_shape(void **state)
{
    (void)state;
    const char *nested[] = {"optim.m.optim.m.enc.bias",
                            "optim.v.optim.m.enc.bias",
                            "optim.m.optim.v.enc.bias",
                            "optim.v.optim.v.enc.bias", "optim.m.optim.m.x"};
    for (size_t i = 0; i < sizeof nested / sizeof *nested; i++) {
        for (int len = 3; len <= 7; len += 4) {
            refused(with_one_more("nested", nested[i], len), TG_ERR_MISMATCH);
            char want[160];
            snprintf(want, sizeof want,
                     "tensor '%s' is not a parameter of the model "
                     "(parameters: 0 missing, 0 with another shape, 1 not "
                     "in the model)",
                     nested[i]);
            assert_non_null(strstr(tg_errmsg(), want));
            /* without the optimizer, and under the empty prefix */
            assert_int_equal(
                tg_checkpoint_load(in_dir("nested"), victim, NULL, NULL),
                TG_ERR_MISMATCH);
            assert_non_null(strstr(tg_errmsg(), want));
            assert_int_equal(
                tg_checkpoint_load_prefix(in_dir("nested"), victim, "", NULL),
                TG_ERR_MISMATCH);
            assert_non_null(strstr(tg_errmsg(), want));
        }
    }
    /* State named after a parameter with another shape: the shape is
     * reported, whether the state is loaded or not. */
    const char *p = in_dir("v_shape.safetensors");
    static const float zeros[12];
    const tg_st_tensor t[] = {{"enc.weight", 2, (int[]){3, 4}, zeros},
                              {"enc.bias", 1, (int[]){3}, zeros},
                              {"optim.v.enc.bias", 1, (int[]){7}, zeros},
                              {"dec.weight", 2, (int[]){4, 3}, zeros}};
    FILE *out = fopen(p, "wb");
    assert_non_null(out);
    assert_int_equal(tg_st_write(out, p, 4, t, 0, NULL, NULL), TG_OK);
    fclose(out);
    const char *want = "tensor 'optim.v.enc.bias' has shape [7] in the file "
                       "but [3] in the model (parameters: 0 missing, 1 with "
                       "another shape, 0 not in the model)";
    assert_int_equal(tg_checkpoint_load(p, victim, NULL, NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), want));
    assert_int_equal(tg_checkpoint_load_prefix(p, victim, "enc.", NULL),
                     TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), want));
    assert_true(same_bits(tg_params_data(victim), victim_before,
                          tg_params_numel(victim)));
}

/* A crafted file of the model's tensors and 200,000 empty ones named like
 * optimizer state ("optim.v.z0199999" down to "optim.v.z0000000"): each
 * such name was looked up by a scan of every tensor in the file, twice, so
 * the load took about n^2 string comparisons (100,000 names: 5 minutes;
 * 200,000: some 20). Now a sorted index: well under a second, so this
 * test passes; with the scans it runs into meson's timeout (no clock is
 * read here). */
static void many_tensors_are_matched_in_n_log_n(void **state)
{
    (void)state;
    enum { MANY = 200000 };
    const char *entry = ",\"optim.v.z%07d\":{\"dtype\":\"F32\",\"shape\":[0],"
                        "\"data_offsets\":[108,108]}";
    size_t cap = 512 + (size_t)MANY * (strlen(entry) + 8), len = 0;
    char *json = malloc(cap);
    assert_non_null(json);
    len += (size_t)sprintf(
        json,
        "{\"enc.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],"
        "\"data_offsets\":[0,48]},\"enc.bias\":{\"dtype\":\"F32\","
        "\"shape\":[3],\"data_offsets\":[48,60]},\"dec.weight\":{\"dtype\":"
        "\"F32\",\"shape\":[4,3],\"data_offsets\":[60,108]}");
    for (int i = MANY - 1; i >= 0; i--)
        len += (size_t)snprintf(json + len, cap - len, entry, i);
    snprintf(json + len, cap - len, "}");
    const char *p = craft("many.safetensors", json, 108);
    free(json);

    tg_st_file f; /* the index finds every name, and only those */
    assert_int_equal(tg_st_open(p, &f), TG_OK);
    assert_int_equal(f.n, 3 + MANY);
    for (int i = 0; i < f.n; i += 997)
        assert_ptr_equal(tg_st_find(&f, f.t[i].name), &f.t[i]);
    assert_ptr_equal(tg_st_find(&f, "optim.v.z0000000"), &f.t[f.n - 1]);
    assert_null(tg_st_find(&f, "optim.v.z0200000"));
    assert_null(tg_st_find(&f, "optim.v.z"));
    assert_null(tg_st_find(&f, ""));
    tg_st_close(&f);

    tg_params *ps = model(4);
    assert_int_equal(tg_checkpoint_load(p, ps, NULL, NULL), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "'optim.v.z0199999' is not a "
                                        "parameter of the model"));
    assert_non_null(strstr(tg_errmsg(), "parameters: 0 missing, 0 with "
                                        "another shape, 200000 not in the "
                                        "model"));
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(files_of_another_model_refused,
                                        victim_setup, victim_teardown),
        cmocka_unit_test_setup_teardown(
            the_most_informative_difference_is_reported_first, victim_setup,
            victim_teardown),
        cmocka_unit_test_setup_teardown(
            optimizer_state_needs_a_parameter_and_its_shape, victim_setup,
            victim_teardown),
        cmocka_unit_test(counts_are_of_parameters),
        cmocka_unit_test(many_tensors_are_matched_in_n_log_n),
    };
    return cmocka_run_group_tests_name("nn_checkpoint_mismatch", tests, setup,
                                       teardown);
}

/* The refused-file fixture of test_checkpoint_malformed.c and
 * test_checkpoint_mismatch.c: a victim model (and Adam) of known contents,
 * refused(path, status) checking that a load fails naming the file and
 * changes nothing, and crafted files of the victim's tensors. Include after
 * checkpoint_common.h. */
#ifndef TESTS_NN_CHECKPOINT_REFUSED_H
#define TESTS_NN_CHECKPOINT_REFUSED_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- refused files ------------------------------------------------------- */

static tg_params *victim;

static tg_optim *victim_opt;

static float *victim_before;

/* Loads path into a model filled with a known pattern and checks the
 * status, that the message names the file, and that nothing changed. */
static inline void refused(const char *path, tg_status want)
{
    size_t n = tg_params_numel(victim);
    tg_meta meta = TG_META_INIT;
    tg_meta_set(&meta, "keep", "me");
    tg_status got = tg_checkpoint_load(path, victim, victim_opt, &meta);
    if (getenv("TG_TEST_VERBOSE"))
        printf("status %d: %s\n", got, tg_errmsg());
    if (got != want)
        fail_msg("%s: status %d, expected %d (%s)", path, got, want,
                 tg_errmsg());
    assert_non_null(strstr(tg_errmsg(), path));
    assert_true(same_bits(tg_params_data(victim), victim_before, n));
    assert_true(same_bits(victim_opt->m, victim_before + n, n));
    assert_true(same_bits(victim_opt->v, victim_before + 2 * n, n));
    assert_true(victim_opt->step == 99);
    assert_int_equal(meta.n, 1);
}

static inline int victim_setup(void **state)
{
    (void)state;
    victim = model(4);
    size_t n = tg_params_numel(victim);
    victim_opt = adam_with_state(victim, 50);
    victim_opt->step = 99;
    fill(tg_params_data(victim), n, 51);
    victim_before = malloc(3 * n * sizeof(float));
    memcpy(victim_before, tg_params_data(victim), n * sizeof(float));
    memcpy(victim_before + n, victim_opt->m, n * sizeof(float));
    memcpy(victim_before + 2 * n, victim_opt->v, n * sizeof(float));
    return 0;
}

static inline int victim_teardown(void **state)
{
    (void)state;
    tg_optim_free(victim_opt);
    tg_params_free(victim);
    free(victim_before);
    return 0;
}

static inline void put_le64(unsigned char *b, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        b[k] = (unsigned char)(v >> (8 * k));
}

/* A file from a header (padded to 8) and data_len bytes of data. */
static inline const char *craft(const char *name, const char *json,
                                size_t data_len)
{
    size_t h = strlen(json), padded = (h + 7) / 8 * 8;
    unsigned char *b = calloc(1, 8 + padded + data_len + 1);
    put_le64(b, padded);
    memcpy(b + 8, json, h);
    memset(b + 8 + h, ' ', padded - h);
    const char *p = write_bytes(name, b, 8 + padded + data_len);
    free(b);
    return p;
}

/* The victim's three tensors with their optimizer state, one JSON object,
 * with the first entry replaced by first (when not NULL). */
static inline char *model_json(const char *first)
{
    static char buf[4096];
    const char *names[3] = {"enc.weight", "enc.bias", "dec.weight"};
    const char *shapes[3] = {"[3,4]", "[3]", "[4,3]"};
    const int sizes[3] = {48, 12, 48};
    int at = first ? 48 : 0, len = 0;
    len += sprintf(buf, "{\"__metadata__\":{\"optim.kind\":\"adam\","
                        "\"optim.step\":\"5\"}");
    if (first)
        len += sprintf(buf + len, ",%s", first);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            if (first && i == 0 && k == 0)
                continue;
            const char *prefix[3] = {"", "optim.m.", "optim.v."};
            len += sprintf(buf + len,
                           ",\"%s%s\":{\"dtype\":\"F32\",\"shape\":"
                           "%s,\"data_offsets\":[%d,%d]}",
                           prefix[k], names[i], shapes[i], at, at + sizes[i]);
            at += sizes[i];
        }
    sprintf(buf + len, "}");
    return buf;
}

enum { MODEL_BYTES = 3 * (48 + 12 + 48) };

#endif

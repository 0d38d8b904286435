/* Damaged checkpoints: the checksum finds a flipped bit in the data, the
 * metadata, names and shapes; the first version's checksums still verify;
 * non-finite optimizer state is refused even without a checksum. */
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

/* The data checksum: one bit flipped in a weight or in Adam's state (a
 * finite value still) is refused as damaged by every load, the metadata
 * read alone too (a program checks its flags on those), and the checksum
 * is not copied into a loaded tg_meta. A file without it loads. */
static void flip_byte(const char *path, long from_end)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, -from_end, SEEK_END), 0);
    int c = fgetc(f);
    assert_int_equal(fseek(f, -from_end, SEEK_END), 0);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void flipped_data_bits_are_found(void **state)
{
    (void)state;
    const char *p = in_dir("flip.safetensors");
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 12);
    tg_optim *adam = tg_adam_new(ps, 1e-3f);
    tg_meta m = TG_META_INIT;
    tg_meta_set(&m, "tapegrad.checksum", "mine"); /* the library's wins */
    assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_OK);
    tg_params *back = model(4);
    tg_optim *adam2 = tg_adam_new(back, 1e-3f);
    tg_meta got;
    assert_int_equal(tg_checkpoint_load(p, back, adam2, &got), TG_OK);
    assert_null(tg_meta_get(&got, "tapegrad.checksum"));
    for (long at = 1; at <= 9; at += 8) { /* Adam's v, then its m */
        assert_int_equal(tg_checkpoint_save(p, ps, adam, NULL), TG_OK);
        flip_byte(p, at);
        assert_int_equal(tg_checkpoint_load(p, back, adam2, NULL),
                         TG_ERR_FORMAT);
        assert_non_null(strstr(tg_errmsg(), "damaged"));
        assert_int_equal(tg_checkpoint_load(p, back, NULL, NULL),
                         TG_ERR_FORMAT);
        assert_int_equal(tg_checkpoint_load_prefix(p, back, "", NULL),
                         TG_ERR_FORMAT);
        assert_int_equal(tg_checkpoint_read_meta(p, &got), TG_ERR_FORMAT);
        assert_non_null(strstr(tg_errmsg(), "damaged"));
    }
    tg_optim_free(adam2);
    tg_params_free(back);
    tg_optim_free(adam);
    tg_params_free(ps);
}

/* The first byte of `from` in path's bytes replaced by `to`'s (the same
 * length): a crafted change inside the header. */
static void edit_file(const char *path, const char *from, const char *to)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f), len = strlen(from);
    assert_int_equal(len, strlen(to));
    char *at = NULL;
    for (size_t i = 0; !at && i + len <= n; i++)
        if (memcmp(buf + i, from, len) == 0)
            at = buf + i;
    assert_non_null(at);
    assert_int_equal(fseek(f, (long)(at - buf), SEEK_SET), 0);
    assert_int_equal(fwrite(to, 1, len, f), len);
    fclose(f);
}

/* The checksum covers the metadata, names and shapes too: a flipped bit
 * in a metadata value ("1" -> "3": a resumed run that would skip epochs)
 * or in a key is refused as damaged; a damaged checksum key (now a
 * "tapegrad." key the library does not write) too; a caller's key in the
 * library's namespace is refused at save. */
static void flipped_metadata_bits_are_found(void **state)
{
    (void)state;
    const char *p = in_dir("meta.safetensors");
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 13);
    tg_optim *adam = tg_adam_new(ps, 1e-3f);
    tg_meta m = TG_META_INIT, got;
    tg_meta_set(&m, "epoch", "1");
    tg_meta_set(&m, "likelihood", "cb");
    static const char *const edits[][2] = {
        {"\"epoch\":\"1\"", "\"epoch\":\"3\""},
        {"\"likelihood\"", "\"likelihooe\""},
        {"\"optim.step\":\"0\"", "\"optim.step\":\"1\""},
        {"\"tapegrad.checksum\"", "\"tapegrad.zzzzzzzz\""},
        {"\"tapegrad.checksum\"", "\"tapegrae.checksum\""},
        {"\"tapegrad.checksum\"", "\"tapeg2ad.checksum\""},
    };
    tg_params *back = model(4);
    tg_optim *adam2 = tg_adam_new(back, 1e-3f);
    for (int e = 0; e < 6; e++) {
        assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_OK);
        assert_int_equal(tg_checkpoint_load(p, back, adam2, &got), TG_OK);
        edit_file(p, edits[e][0], edits[e][1]);
        assert_int_equal(tg_checkpoint_load(p, back, adam2, &got),
                         TG_ERR_FORMAT);
        const char *want[] = {"damaged: its tensors and metadata",
                              "damaged: its tensors and metadata",
                              "damaged: its tensors and metadata",
                              "none this library writes",
                              "one bit from the checksum's",
                              "one bit from the checksum's"};
        assert_non_null(strstr(tg_errmsg(), want[e]));
    }
    /* a renamed key outside the namespace: a file without a checksum,
     * as another writer's, loads unchecked */
    assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_OK);
    edit_file(p, "\"tapegrad.checksum\"", "\"nochecks.checksum\"");
    assert_int_equal(tg_checkpoint_load(p, back, adam2, &got), TG_OK);
    tg_meta_set(&m, "tapegrad.mine", "x");
    assert_int_equal(tg_checkpoint_save(p, ps, adam, &m), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "the 'tapegrad.' prefix is the "
                                        "library's"));
    tg_optim_free(adam2);
    tg_params_free(back);
    tg_optim_free(adam);
    tg_params_free(ps);
}

/* The first version's checksum ("fnv4:", the tensor data alone, in name
 * order), written here from its definition: such files still load, and a
 * flipped data bit in one is still found. */
static uint64_t legacy_fnv4(int n, const tg_st_tensor *t)
{
    uint64_t lane[4], words = 0, prime = 0x100000001b3u;
    for (int i = 0; i < 4; i++)
        lane[i] = 0xcbf29ce484222325u + (uint64_t)i;
    int order[8];
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort by name */
        for (int j = i;
             j > 0 && strcmp(t[order[j - 1]].name, t[order[j]].name) > 0; j--) {
            int x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    for (int i = 0; i < n; i++) {
        const tg_st_tensor *e = &t[order[i]];
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++)
            numel *= (size_t)e->shape[d];
        for (size_t k = 0; k < numel; k++, words++) {
            uint32_t w;
            memcpy(&w, &e->data[k], 4);
            lane[words & 3] = (lane[words & 3] ^ w) * prime;
        }
    }
    uint64_t r = words * prime;
    for (int i = 0; i < 4; i++)
        r = (r ^ lane[i]) * prime;
    return r;
}

static void first_version_checksums_still_verify(void **state)
{
    (void)state;
    const char *p = in_dir("legacy.safetensors");
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 14);
    int n = tg_params_count(ps);
    assert_true(n <= 8);
    tg_st_tensor t[8];
    for (int i = 0; i < n; i++) {
        const tg_tensor *x = tg_params_get(ps, i);
        t[i] =
            (tg_st_tensor){tg_params_name(ps, i), x->ndim, x->shape, x->data};
    }
    char sum[32];
    snprintf(sum, sizeof sum, "fnv4:%016llx",
             (unsigned long long)legacy_fnv4(n, t));
    const char *keys[] = {"epoch", "tapegrad.checksum"}, *values[] = {"1", sum};
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(tg_st_write(f, p, n, t, 2, keys, values), TG_OK);
    fclose(f);
    tg_params *back = model(4);
    assert_int_equal(tg_checkpoint_load(p, back, NULL, NULL), TG_OK);
    assert_memory_equal(tg_params_data(back), tg_params_data(ps),
                        tg_params_numel(ps) * sizeof(float));
    flip_byte(p, 3);
    assert_int_equal(tg_checkpoint_load(p, back, NULL, NULL), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "damaged: its tensor data"));
    tg_params_free(back);
    tg_params_free(ps);
}

/* The float at element k of tensor name in path set to v (the data only). */
static void poke_float(const char *path, const char *name, size_t k, float v)
{
    tg_st_file f;
    assert_int_equal(tg_st_open(path, &f), TG_OK);
    const tg_st_entry *e = tg_st_find(&f, name);
    assert_non_null(e);
    long at = (long)(f.data_start + e->begin + 4 * k);
    tg_st_close(&f);
    FILE *out = fopen(path, "r+b");
    assert_non_null(out);
    assert_int_equal(fseek(out, at, SEEK_SET), 0);
    assert_int_equal(fwrite(&v, 4, 1, out), 1); /* a little-endian host */
    fclose(out);
}

/* Optimizer state that is not finite (a NaN or Inf in Adam's m or v) is
 * refused by a load that takes it, even without a checksum (it made every
 * weight it touches NaN at the next step); weights are loaded as they are
 * (a diverged model may be saved on purpose), and without the optimizer
 * the state is not read for its values. */
static void non_finite_optimizer_state_is_refused(void **state)
{
    (void)state;
    const char *p = in_dir("nanstate.safetensors");
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 15);
    tg_optim *adam = tg_adam_new(ps, 1e-3f);
    tg_params *back = model(4);
    tg_optim *adam2 = tg_adam_new(back, 1e-3f);
    static const char *const names[] = {"optim.m.enc.bias",
                                        "optim.v.dec.weight", "enc.weight"};
    const float bad[] = {NAN, INFINITY, NAN};
    for (int c = 0; c < 3; c++) {
        assert_int_equal(tg_checkpoint_save(p, ps, adam, NULL), TG_OK);
        poke_float(p, names[c], 1, bad[c]);
        edit_file(p, "\"tapegrad.checksum\"", "\"nochecks.checksum\"");
        tg_status st = tg_checkpoint_load(p, back, adam2, NULL);
        if (c < 2) {
            assert_int_equal(st, TG_ERR_FORMAT);
            assert_non_null(strstr(tg_errmsg(), names[c]));
            assert_non_null(strstr(tg_errmsg(), "optimizer state is finite"));
            assert_int_equal(tg_checkpoint_load(p, back, NULL, NULL), TG_OK);
        } else {
            assert_int_equal(st, TG_OK);
            assert_true(isnan(tg_params_get(back, 0)->data[1]));
        }
    }
    tg_optim_free(adam2);
    tg_params_free(back);
    tg_optim_free(adam);
    tg_params_free(ps);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(flipped_metadata_bits_are_found),
        cmocka_unit_test(first_version_checksums_still_verify),
        cmocka_unit_test(non_finite_optimizer_state_is_refused),
        cmocka_unit_test(flipped_data_bits_are_found),
    };
    return cmocka_run_group_tests_name("nn_checkpoint_checksum", tests, setup,
                                       teardown);
}

/* What the checkpoint tests (test_checkpoint_*.c) share: the small model,
 * filled with values a lossy writer would mangle, an Adam with state,
 * bit comparisons, and file helpers in the test's folder. Include after
 * cmocka.h, tg_nn.h and tmpdir.h (in_dir, dir). */
#ifndef TESTS_NN_CHECKPOINT_COMMON_H
#define TESTS_NN_CHECKPOINT_COMMON_H

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A small model: enc.weight [3, 4], enc.bias [3], dec.weight [4, 3]. */
static inline tg_params *model(int enc_in)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "enc.weight", 2, (int[]){3, enc_in});
    tg_params_add(ps, "enc.bias", 1, (int[]){3});
    tg_params_add(ps, "dec.weight", 2, (int[]){4, 3});
    tg_params_seal(ps);
    return ps;
}

/* Random floats plus the values a lossy writer would mangle: -0, a
 * denormal, the largest float, a float with all mantissa bits set. */
static inline void fill(float *x, size_t n, uint64_t seed)
{
    tg_rng r;
    tg_rng_seed(&r, seed, 0);
    tg_rng_fill_normal(&r, x, n, 0.0f, 3.0f);
    const float special[] = {-0.0f, 1e-40f, 3.4028235e38f, 0x1.fffffep-3f};
    for (size_t i = 0; i < 4 && i < n; i++)
        x[i * 2] = special[i];
}

static inline bool same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static inline tg_optim *adam_with_state(tg_params *ps, uint64_t seed)
{
    tg_optim *opt = tg_adam_new(ps, 1e-3f);
    size_t n = tg_params_numel(ps);
    fill(opt->m, n, seed + 1);
    fill(opt->v, n, seed + 2);
    for (size_t i = 0; i < n; i++)
        opt->v[i] = fabsf(opt->v[i]);
    opt->step = 123456789012ll;
    return opt;
}

static inline long file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static inline const char *write_bytes(const char *name, const void *b, size_t n)
{
    const char *p = in_dir(name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    return p;
}

/* No temporary ("*.tapegrad-tmp.*") anywhere in dir. */
static inline void assert_no_temp_files(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)))
        assert_null(strstr(e->d_name, "tmp."));
    closedir(d);
}

#endif

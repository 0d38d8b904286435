/* IDX reading (raw and gzip), the MNIST loader and the batcher. Every bad
 * file is refused with the right tg_status and a message naming it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tg_config.h"
#include "tg_nn.h"
#ifdef TG_HAVE_ZLIB
#include <zlib.h>
#endif

#include "fail_alloc.h"
#include "tmpdir.h"

/* An IDX image: header bytes (type, ndims), big-endian dims, count bytes of
 * data (i % 251), then extra garbage bytes. Returns its length. */
static size_t make_idx(uint8_t *buf, uint8_t type, int nd, const uint32_t *dims,
                       size_t count, size_t extra)
{
    size_t n = 0;
    buf[n++] = 0, buf[n++] = 0, buf[n++] = type, buf[n++] = (uint8_t)nd;
    for (int d = 0; d < nd; d++)
        for (int k = 3; k >= 0; k--)
            buf[n++] = (uint8_t)(dims[d] >> (8 * k));
    for (size_t i = 0; i < count + extra; i++)
        buf[n++] = (uint8_t)(i % 251);
    return n;
}

static void write_file(const char *path, const void *data, size_t n, bool gz)
{
#ifdef TG_HAVE_ZLIB
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(g), Z_OK);
        return;
    }
#endif
    (void)gz;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static tg_status read_idx(const char *path, int *nd, int dims[3])
{
    uint8_t *data = (uint8_t *)"untouched";
    tg_status st = tg_idx_read(path, nd, dims, &data);
    if (st != TG_OK) {
        assert_null(data);
        assert_non_null(strstr(tg_errmsg(), path)); /* names the file */
    } else {
        free(data);
    }
    return st;
}

static void valid_file_round_trip(bool gz)
{
    uint8_t buf[256];
    const char *name = gz ? "ok.idx.gz" : "ok.idx";
    size_t n = make_idx(buf, 0x08, 3, (uint32_t[]){4, 2, 3}, 24, 0);
    write_file(in_dir(name), buf, n, gz);
    int nd, dims[3];
    uint8_t *data;
    assert_int_equal(tg_idx_read(in_dir(name), &nd, dims, &data), TG_OK);
    assert_int_equal(nd, 3);
    assert_int_equal(dims[0], 4);
    assert_int_equal(dims[1], 2);
    assert_int_equal(dims[2], 3);
    assert_memory_equal(data, buf + 16, 24);
    free(data);

    n = make_idx(buf, 0x08, 1, (uint32_t[]){7}, 7, 0);
    write_file(in_dir(name), buf, n, gz);
    assert_int_equal(tg_idx_read(in_dir(name), &nd, dims, &data), TG_OK);
    assert_int_equal(nd, 1);
    assert_int_equal(dims[0], 7);
    assert_memory_equal(data, buf + 8, 7);
    free(data);
}

static void bad_files_refused(bool gz)
{
    uint8_t buf[256];
    int nd, dims[3];
    const char *p = in_dir(gz ? "bad.idx.gz" : "bad.idx");
    size_t n;

    n = make_idx(buf, 0x08, 3, (uint32_t[]){2, 2, 2}, 8, 0);
    buf[0] = 0x1f; /* wrong magic */
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "magic"));

    n = make_idx(buf, 0x0D, 3, (uint32_t[]){2, 2, 2}, 8, 0); /* floats */
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);

    n = make_idx(buf, 0x08, 4, (uint32_t[]){1, 1, 1, 1}, 1, 0); /* 4 dims */
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    n = make_idx(buf, 0x08, 0, NULL, 0, 0);
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);

    n = make_idx(buf, 0x08, 3, (uint32_t[]){4, 2, 3}, 24, 0);
    write_file(p, buf, n - 5, gz); /* truncated data */
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "truncated"));
    write_file(p, buf, 10, gz); /* truncated dims */
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    write_file(p, buf, 0, gz); /* empty */
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);

    n = make_idx(buf, 0x08, 3, (uint32_t[]){4, 2, 3}, 24, 3); /* garbage */
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "trailing"));

    /* 65535^3 bytes: refused before allocating, whatever follows. */
    n = make_idx(buf, 0x08, 3, (uint32_t[]){65535, 65535, 65535}, 16, 0);
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    /* the message shows the sizes as read: a wrong count of dimensions in
     * the magic (data read as sizes) is seen as such */
    assert_non_null(
        strstr(tg_errmsg(), "3 dimensions, 65535 x 65535, multiply"));
    /* Products that wrap around 2^32 and 2^64. */
    n = make_idx(buf, 0x08, 3, (uint32_t[]){65536, 65536, 1}, 0, 0);
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    n = make_idx(buf, 0x08, 3, (uint32_t[]){0x7fffffff, 0x7fffffff, 8}, 0, 0);
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    n = make_idx(buf, 0x08, 1, (uint32_t[]){0xffffffffu}, 0, 0);
    write_file(p, buf, n, gz);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
}

static void raw_valid_round_trip(void **s)
{
    (void)s, valid_file_round_trip(false);
}
static void raw_bad_files_refused(void **s)
{
    (void)s, bad_files_refused(false);
}

static void gz_files(void **state)
{
    (void)state;
    if (!tg_have_zlib()) {
        uint8_t buf[64];
        size_t n = make_idx(buf, 0x08, 1, (uint32_t[]){3}, 3, 0);
        write_file(in_dir("x.gz"), buf, n, false);
        int nd, dims[3];
        assert_int_equal(read_idx(in_dir("x.gz"), &nd, dims),
                         TG_ERR_UNSUPPORTED);
        skip();
    }
    valid_file_round_trip(true);
    bad_files_refused(true);
}

/* A gzip stream cut in the middle, and one with flipped bytes. */
static void gz_corrupt_stream_refused(void **state)
{
    (void)state;
    if (!tg_have_zlib())
        skip();
    static uint8_t buf[20000];
    size_t n = make_idx(buf, 0x08, 2, (uint32_t[]){100, 150}, 15000, 0);
    const char *p = in_dir("c.idx.gz");
    write_file(p, buf, n, true);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    static uint8_t z[40000];
    size_t zn = fread(z, 1, sizeof z, f);
    fclose(f);
    assert_true(zn > 40);
    int nd, dims[3];
    write_file(p, z, zn / 2, false);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    write_file(p, z, zn - 4, false); /* no length trailer */
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
    for (size_t i = 20; i < 40; i++)
        z[i] ^= 0x5a;
    write_file(p, z, zn, false);
    assert_int_equal(read_idx(p, &nd, dims), TG_ERR_FORMAT);
}

/* Out of memory while reading, at each allocation in turn: TG_ERR_NOMEM
 * and "out of memory". zlib's Z_MEM_ERROR had read as "corrupt gzip data
 * (out of memory)", TG_ERR_FORMAT, and gzopen's or fopen's ENOMEM as
 * TG_ERR_IO "Cannot allocate memory": the examples then said the data was
 * bad (exit 2) where the machine was short of memory. */
static void out_of_memory_while_reading(bool gz)
{
    static uint8_t buf[20000];
    size_t n = make_idx(buf, 0x08, 2, (uint32_t[]){100, 150}, 15000, 0);
    char p[256];
    snprintf(p, sizeof p, "%s", in_dir(gz ? "m.idx.gz" : "m.idx"));
    write_file(p, buf, n, gz);
    for (long k = 1;; k++) {
        int nd, dims[3];
        fail_alloc_arm(k);
        tg_status st = read_idx(p, &nd, dims);
        if (!fail_alloc_disarm()) {
            assert_int_equal(st, TG_OK);
            break;
        }
        /* a failure some code works around (stdio's buffer) may pass */
        if (st != TG_OK &&
            (st != TG_ERR_NOMEM || !strstr(tg_errmsg(), "out of memory")))
            fail_msg("allocation %ld failing: status %d, \"%s\"", k, st,
                     tg_errmsg());
    }
}

static void out_of_memory_is_not_bad_data(void **state)
{
    (void)state;
    if (!FAIL_ALLOC_ACTIVE)
        skip();
    out_of_memory_while_reading(false);
    if (tg_have_zlib())
        out_of_memory_while_reading(true);
}

static void not_a_file_refused(void **state)
{
    (void)state;
    int nd, dims[3];
    assert_int_equal(read_idx(dir, &nd, dims), TG_ERR_IO); /* a directory */
    assert_int_equal(read_idx(in_dir("missing"), &nd, dims), TG_ERR_IO);
    tg_dataset ds;
    assert_int_equal(tg_mnist_load(in_dir("nowhere"), true, &ds), TG_ERR_IO);
    assert_int_equal(tg_mnist_load(dir, true, &ds), TG_ERR_IO); /* no files */
}

/* A data directory with n images and m labels (raw files). */
static const char *make_mnist(const char *sub, uint32_t n, uint32_t m)
{
    static char d[128];
    static uint8_t buf[64 + 3 * 4 * 5 * 8];
    char p[256];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    assert_int_equal(mkdir(d, 0755), 0);
    size_t len = make_idx(buf, 0x08, 3, (uint32_t[]){n, 4, 5}, n * 20, 0);
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", d);
    write_file(p, buf, len, false);
    len = make_idx(buf, 0x08, 1, (uint32_t[]){m}, m, 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d);
    write_file(p, buf, len, false);
    return d;
}

static void mnist_counts_must_agree(void **state)
{
    (void)state;
    tg_dataset ds;
    const char *d = make_mnist("good", 3, 3);
    assert_int_equal(tg_mnist_load(d, true, &ds), TG_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.rows, 4);
    assert_int_equal(ds.cols, 5);
    assert_true(ds.images[59] == 59 / 255.0f);
    assert_int_equal(ds.labels[2], 2);
    tg_dataset_free(&ds);
    assert_int_equal(tg_mnist_load(d, false, &ds), TG_ERR_IO); /* no t10k */

    d = make_mnist("mismatch", 3, 2);
    assert_int_equal(tg_mnist_load(d, true, &ds), TG_ERR_MISMATCH);
    assert_non_null(strstr(tg_errmsg(), "labels"));
    assert_null(ds.images);
}

/* A set to score: the labels file may be missing (then labels NULL), but
 * one that is there must match; the path may name an images file itself.
 * vae_score and bnn_mnist had refused OOD folders without labels. */
static void images_load_takes_unlabelled_sets(void **state)
{
    (void)state;
    tg_dataset ds;
    char p[256];
    const char *d = make_mnist("unlabelled", 3, 3);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(tg_mnist_load(d, true, &ds), TG_ERR_IO);
    assert_int_equal(tg_idx_images_load(d, true, &ds), TG_OK);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.rows, 4);
    assert_int_equal(ds.cols, 5);
    assert_null(ds.labels);
    assert_true(ds.images[59] == 59 / 255.0f);
    tg_dataset_free(&ds);
    assert_int_equal(tg_idx_images_load(d, false, &ds), TG_ERR_IO); /* t10k */

    /* the images file by its own name, labels beside it or not */
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte", d);
    assert_int_equal(tg_idx_images_load(p, false, &ds), TG_OK);
    assert_int_equal(ds.n, 3);
    assert_null(ds.labels);
    tg_dataset_free(&ds);
    assert_int_equal(tg_mnist_load(p, true, &ds), TG_ERR_IO); /* a file */

    d = make_mnist("labelled", 3, 3);
    assert_int_equal(tg_idx_images_load(d, true, &ds), TG_OK);
    assert_non_null(ds.labels);
    assert_int_equal(ds.labels[2], 2);
    tg_dataset_free(&ds);
    d = make_mnist("mismatched", 3, 2);
    assert_int_equal(tg_idx_images_load(d, true, &ds), TG_ERR_MISMATCH);
    assert_null(ds.images);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d); /* a labels file */
    assert_int_equal(tg_idx_images_load(p, true, &ds), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "images need 3"));
    assert_int_equal(tg_idx_images_load(in_dir("nowhere"), true, &ds),
                     TG_ERR_IO);

    /* a labels link whose target is gone is an error naming it, not "no
     * labels" (it loaded without them, or took the .gz beside it) */
    d = make_mnist("dangling", 3, 3);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(symlink("/nonexistent-labels", p), 0);
    assert_int_equal(tg_idx_images_load(d, true, &ds), TG_ERR_IO);
    assert_non_null(strstr(tg_errmsg(), "train-labels-idx1-ubyte"));
#ifdef TG_HAVE_ZLIB
    /* gzip data under a name without .gz: said so (it was "bad magic") */
    static uint8_t buf[64 + 3 * 4 * 5];
    size_t len = make_idx(buf, 0x08, 3, (uint32_t[]){3, 4, 5}, 60, 0);
    snprintf(p, sizeof p, "%s/gzip-images.idx", dir);
    write_file(p, buf, len, true);
    assert_int_equal(tg_idx_images_load(p, true, &ds), TG_ERR_FORMAT);
    assert_non_null(strstr(tg_errmsg(), "gzip data"));
#endif
}

static void embedded_mnist_loads(void **state)
{
    (void)state;
    const char *root = getenv("TG_SOURCE_ROOT");
    if (!root)
        skip();
    char d[1024];
    snprintf(d, sizeof d, "%s/data/mnist", root);
    if (!tg_have_zlib())
        skip();
    const int want_n[2] = {9000, 1000};
    for (int train = 1; train >= 0; train--) {
        tg_dataset ds;
        assert_int_equal(tg_mnist_load(d, train, &ds), TG_OK);
        assert_int_equal(ds.n, want_n[1 - train]);
        assert_int_equal(ds.rows, 28);
        assert_int_equal(ds.cols, 28);
        size_t pixels = (size_t)ds.n * 784;
        float lo = 1, hi = 0;
        for (size_t i = 0; i < pixels; i++) {
            lo = ds.images[i] < lo ? ds.images[i] : lo;
            hi = ds.images[i] > hi ? ds.images[i] : hi;
        }
        assert_true(lo == 0.0f && hi == 1.0f);
        int seen[10] = {0};
        for (int i = 0; i < ds.n; i++) {
            assert_true(ds.labels[i] <= 9);
            seen[ds.labels[i]]++;
        }
        for (int k = 0; k < 10; k++)
            assert_true(seen[k] > ds.n / 20); /* every digit, roughly 10% */
        tg_dataset_free(&ds);
    }
}

/* ---- batcher ------------------------------------------------------------- */

enum { N = 103, B = 10 };
static float images[N * 2];
static uint8_t labels[N];
static const tg_dataset toy = {N, 1, 2, images, labels};

static void fill_toy(void)
{
    for (int i = 0; i < N; i++) {
        images[2 * i] = (float)i;
        images[2 * i + 1] = -(float)i;
        labels[i] = (uint8_t)(i % 10);
    }
}

/* The sample indices of one epoch from batch `first` on; returns the count. */
static int epoch_order(uint64_t seed, int64_t epoch, int first, int *out)
{
    tg_batcher b;
    float x[B * 2];
    int lab[B], got, total = 0;
    tg_batcher_init(&b, &toy, B, seed);
    tg_batcher_start(&b, epoch, first);
    while ((got = tg_batcher_next(&b, x, lab)) > 0) {
        assert_true(got == B || total + got == N - first * B);
        for (int r = 0; r < got; r++) {
            int idx = (int)x[2 * r];
            assert_true(x[2 * r + 1] == -(float)idx);
            assert_int_equal(lab[r], idx % 10);
            out[total++] = idx;
        }
    }
    assert_int_equal(tg_batcher_next(&b, x, lab), 0);
    tg_batcher_free(&b);
    return total;
}

static void batcher_epoch_is_a_permutation(void **state)
{
    (void)state;
    fill_toy();
    int order[N], seen[N] = {0}, moved = 0;
    tg_batcher b;
    tg_batcher_init(&b, &toy, B, 1);
    assert_int_equal(tg_batcher_count(&b), 11);
    tg_batcher_free(&b);
    assert_int_equal(epoch_order(1, 0, 0, order), N);
    for (int i = 0; i < N; i++) {
        seen[order[i]]++;
        moved += order[i] != i;
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > N / 2); /* actually shuffled */
}

static int differences(const int *a, const int *b)
{
    int d = 0;
    for (int i = 0; i < N; i++)
        d += a[i] != b[i];
    return d;
}

static void batcher_order_depends_on_seed_and_epoch_only(void **state)
{
    (void)state;
    fill_toy();
    int a[N], b[N];
    epoch_order(7, 3, 0, a);
    epoch_order(7, 3, 0, b);
    assert_int_equal(differences(a, b), 0);
    epoch_order(7, 4, 0, b);
    assert_true(differences(a, b) > N / 2);
    epoch_order(8, 3, 0, b);
    assert_true(differences(a, b) > N / 2);

    /* One batcher going through epochs 0..3 equals fresh ones per epoch. */
    tg_batcher bt;
    float x[B * 2];
    tg_batcher_init(&bt, &toy, B, 7);
    for (int e = 0; e < 4; e++) {
        int fresh[N], k = 0, got;
        epoch_order(7, e, 0, fresh);
        tg_batcher_start(&bt, e, 0);
        while ((got = tg_batcher_next(&bt, x, NULL)) > 0)
            for (int r = 0; r < got; r++)
                assert_int_equal((int)x[2 * r], fresh[k++]);
        assert_int_equal(k, N);
    }
    tg_batcher_free(&bt);
}

static void batcher_resume_at_batch_k(void **state)
{
    (void)state;
    fill_toy();
    int full[N], rest[N];
    epoch_order(5, 2, 0, full);
    for (int k = 0; k <= 11; k++) {
        int n = epoch_order(5, 2, k, rest);
        assert_int_equal(n, k * B >= N ? 0 : N - k * B);
        for (int i = 0; i < n; i++)
            assert_int_equal(rest[i], full[k * B + i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_valid_round_trip),
        cmocka_unit_test(raw_bad_files_refused),
        cmocka_unit_test(gz_files),
        cmocka_unit_test(gz_corrupt_stream_refused),
        cmocka_unit_test(out_of_memory_is_not_bad_data),
        cmocka_unit_test(not_a_file_refused),
        cmocka_unit_test(mnist_counts_must_agree),
        cmocka_unit_test(images_load_takes_unlabelled_sets),
        cmocka_unit_test(embedded_mnist_loads),
        cmocka_unit_test(batcher_epoch_is_a_permutation),
        cmocka_unit_test(batcher_order_depends_on_seed_and_epoch_only),
        cmocka_unit_test(batcher_resume_at_batch_k),
    };
    return cmocka_run_group_tests_name("nn_io", tests, setup, teardown);
}

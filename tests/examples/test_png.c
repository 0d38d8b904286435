/* The examples' PNG writer: checksums against known values, and the file's
 * chunks and zlib stream decoded back to the pixels (stored blocks always;
 * zlib-compressed when zlib is available to inflate them). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "png.h"
#include "tg_config.h"
#ifdef TG_HAVE_ZLIB
#include <zlib.h>
#endif

static void crc32_and_adler32_check_values(void **state)
{
    (void)state;
    const uint8_t *s = (const uint8_t *)"123456789";
    /* The published check values of CRC-32/ISO-HDLC and Adler-32. */
    assert_true(png_crc32(0, s, 9) == 0xCBF43926u);
    assert_true(png_adler32(1, s, 9) == 0x091E01DEu);
    /* Chained calls equal one call. */
    assert_true(png_crc32(png_crc32(0, s, 4), s + 4, 5) == 0xCBF43926u);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Inflates stored blocks only; returns the byte count or -1. */
static long inflate_stored(const uint8_t *z, size_t n, uint8_t *out, size_t cap)
{
    size_t pos = 2, o = 0;
    int final = 0;
    while (!final) {
        if (pos + 5 > n || (z[pos] & 6) != 0)
            return -1;
        final = z[pos] & 1;
        size_t len = z[pos + 1] | (size_t)z[pos + 2] << 8;
        size_t nlen = z[pos + 3] | (size_t)z[pos + 4] << 8;
        if ((len ^ 0xffff) != nlen || pos + 5 + len > n || o + len > cap)
            return -1;
        memcpy(out + o, z + pos + 5, len);
        o += len;
        pos += 5 + len;
    }
    if (pos + 4 != n || be32(z + pos) != png_adler32(1, out, o))
        return -1;
    return (long)o;
}

/* Writes w x h pixels, reads the file back, checks every chunk's CRC and
 * that the decoded scanlines are the pixels. */
static void round_trip(int w, int h, bool compress_it)
{
    uint8_t *px = malloc((size_t)w * h);
    for (int i = 0; i < w * h; i++)
        px[i] = (uint8_t)(i * 7 + i / w);
    const char *path = "test_png_out.png";
    FILE *out = fopen(path, "wb");
    assert_non_null(out);
    assert_true(png_write_ex(out, w, h, 1, px, compress_it));
    assert_int_equal(fclose(out), 0);

    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t file[1 << 22];
    size_t n = fread(file, 1, sizeof file, f);
    fclose(f);
    remove(path);
    assert_memory_equal(file, "\x89PNG\r\n\x1a\n", 8);

    size_t pos = 8, idat_n = 0;
    uint8_t *idat = malloc(n);
    int chunks = 0;
    while (pos + 12 <= n) {
        uint32_t len = be32(file + pos);
        const uint8_t *type = file + pos + 4;
        assert_true(pos + 12 + len <= n);
        assert_true(be32(file + pos + 8 + len) ==
                    png_crc32(0, type, 4 + (size_t)len));
        if (!memcmp(type, "IHDR", 4)) {
            assert_int_equal(be32(type + 4), w);
            assert_int_equal(be32(type + 8), h);
            assert_int_equal(type[12], 8); /* bit depth */
            assert_int_equal(type[13], 0); /* grayscale */
        } else if (!memcmp(type, "IDAT", 4)) {
            memcpy(idat + idat_n, type + 4, len);
            idat_n += len;
        }
        chunks++;
        pos += 12 + len;
    }
    assert_int_equal(pos, n);
    assert_true(!memcmp(file + n - 8, "IEND", 4));
    assert_int_equal(chunks, 3);

    size_t raw_n = (size_t)(w + 1) * h;
    uint8_t *raw = malloc(raw_n + 1);
    long got = -1;
    if (!compress_it) {
        got = inflate_stored(idat, idat_n, raw, raw_n + 1);
    } else {
#ifdef TG_HAVE_ZLIB
        uLongf dn = (uLongf)raw_n + 1;
        if (uncompress(raw, &dn, idat, (uLong)idat_n) == Z_OK)
            got = (long)dn;
#else
        got = inflate_stored(idat, idat_n, raw, raw_n + 1);
#endif
    }
    assert_int_equal(got, (long)raw_n);
    for (int y = 0; y < h; y++) {
        assert_int_equal(raw[(size_t)y * (w + 1)], 0); /* filter: none */
        assert_memory_equal(raw + (size_t)y * (w + 1) + 1, px + (size_t)y * w,
                            (size_t)w);
    }
    free(raw);
    free(idat);
    free(px);
}

static void stored_blocks_round_trip(void **state)
{
    (void)state;
    round_trip(5, 3, false);
    round_trip(700, 300, false); /* 210,300 bytes: four stored blocks */
}

static void compressed_round_trip(void **state)
{
    (void)state;
    round_trip(5, 3, true);
    round_trip(700, 300, true);
}

static void tile_grid_layout(void **state)
{
    (void)state;
    float tiles[3 * 4] = {0, 1, 1, 0, 0.5f, 0.5f, 0.5f, 0.5f, 2, -1, 0, 0};
    int w, h;
    uint8_t *img = png_tile_grid(tiles, 3, 2, 2, 2, 1, &w, &h);
    assert_non_null(img);
    assert_int_equal(w, 2 * 3 + 1);
    assert_int_equal(h, 2 * 3 + 1);
    assert_int_equal(img[1 * w + 1], 0);   /* tile 0 (0,0) */
    assert_int_equal(img[1 * w + 2], 255); /* tile 0 (0,1) */
    assert_int_equal(img[1 * w + 4], 128); /* tile 1 */
    assert_int_equal(img[4 * w + 1], 255); /* tile 2, clamped from 2 */
    assert_int_equal(img[4 * w + 2], 0);   /* clamped from -1 */
    assert_int_equal(img[0], 96);          /* gap */
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32_and_adler32_check_values),
        cmocka_unit_test(stored_blocks_round_trip),
        cmocka_unit_test(compressed_round_trip),
        cmocka_unit_test(tile_grid_layout),
    };
    return cmocka_run_group_tests_name("examples_png", tests, NULL, NULL);
}

/* PNG = signature, IHDR, IDAT (zlib stream of filtered scanlines), IEND.
 * Each chunk: length (BE u32), type, data, CRC-32 of type + data. */
#include "png.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tapegrad.h"
#include "tg_config.h"
#ifdef TG_HAVE_ZLIB
#include <zlib.h>
#endif

/* CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320); pass crc = 0 first. */
uint32_t png_crc32(uint32_t crc, const uint8_t *buf, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ buf[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Adler-32: a = 1 + sum of bytes, b = sum of a's, both mod 65521; pass 1
 * first. */
uint32_t png_adler32(uint32_t adler, const uint8_t *buf, size_t n)
{
    uint32_t a = adler & 0xffff, b = adler >> 16;
    for (size_t i = 0; i < n; i++) {
        a = (a + buf[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    return (b << 16) | a;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static bool write_chunk(FILE *f, const char type[4], const uint8_t *data,
                        size_t n)
{
    uint8_t head[8];
    put_be32(head, (uint32_t)n);
    memcpy(head + 4, type, 4);
    uint32_t crc = png_crc32(0, head + 4, 4);
    crc = png_crc32(crc, data, n);
    uint8_t tail[4];
    put_be32(tail, crc);
    return fwrite(head, 1, 8, f) == 8 &&
           (n == 0 || fwrite(data, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

/* zlib stream of raw made of stored deflate blocks (at most 65535 bytes
 * each): header 78 01, per block [BFINAL, BTYPE=00] LEN NLEN (LE) data, then
 * the Adler-32 of raw (BE). */
static uint8_t *deflate_stored(const uint8_t *raw, size_t n, size_t *out_n)
{
    size_t blocks = n / 65535 + 1;
    uint8_t *out = malloc(2 + blocks * 5 + n + 4);
    if (!out)
        tg_out_of_memory("png", "out of memory for %zu bytes", n);
    size_t o = 0;
    out[o++] = 0x78;
    out[o++] = 0x01;
    size_t pos = 0;
    do {
        size_t len = n - pos < 65535 ? n - pos : 65535;
        out[o++] = pos + len == n ? 1 : 0;
        out[o++] = (uint8_t)len;
        out[o++] = (uint8_t)(len >> 8);
        out[o++] = (uint8_t)~len;
        out[o++] = (uint8_t)(~len >> 8);
        memcpy(out + o, raw + pos, len);
        o += len;
        pos += len;
    } while (pos < n);
    put_be32(out + o, png_adler32(1, raw, n));
    *out_n = o + 4;
    return out;
}

static uint8_t *deflate_any(const uint8_t *raw, size_t n, size_t *out_n,
                            bool compress_it)
{
#ifdef TG_HAVE_ZLIB
    if (compress_it) {
        uLongf cap = compressBound((uLong)n);
        uint8_t *out = malloc(cap);
        int rc = out ? compress2(out, &cap, raw, (uLong)n, 9) : Z_MEM_ERROR;
        if (rc == Z_OK) {
            *out_n = cap;
            return out;
        }
        free(out);
        if (rc == Z_MEM_ERROR)
            tg_out_of_memory("png", "out of memory compressing %zu bytes", n);
        return NULL;
    }
#else
    (void)compress_it;
#endif
    return deflate_stored(raw, n, out_n);
}

bool png_write_ex(FILE *f, int w, int h, int channels, const uint8_t *pixels,
                  bool compress_it)
{
    if (!f || w <= 0 || h <= 0 || (channels != 1 && channels != 3)) {
        errno = EINVAL;
        return false;
    }
    /* Scanlines, each preceded by filter type 0 (none). */
    size_t row = (size_t)w * (size_t)channels;
    size_t stride = row + 1, n = stride * (size_t)h;
    uint8_t *raw = malloc(n);
    if (!raw)
        tg_out_of_memory("png", "out of memory for a %dx%d image", w, h);
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * stride] = 0;
        memcpy(raw + (size_t)y * stride + 1, pixels + (size_t)y * row, row);
    }
    size_t zn = 0;
    uint8_t *z = deflate_any(raw, n, &zn, compress_it);
    free(raw);
    if (!z)
        return false;

    static const uint8_t signature[8] = {0x89, 'P',  'N',  'G',
                                         '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[13];
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;                     /* bits per channel */
    ihdr[9] = channels == 3 ? 2 : 0; /* colour type: RGB or grayscale */
    ihdr[10] = 0;                    /* deflate */
    ihdr[11] = 0; /* adaptive filtering (we use type 0 only) */
    ihdr[12] = 0; /* no interlace */

    bool ok = fwrite(signature, 1, 8, f) == 8;
    ok = ok && write_chunk(f, "IHDR", ihdr, sizeof ihdr);
    ok = ok && write_chunk(f, "IDAT", z, zn);
    ok = ok && write_chunk(f, "IEND", NULL, 0);
    free(z);
    return ok;
}

bool png_write(FILE *f, int w, int h, int channels, const uint8_t *pixels)
{
    return png_write_ex(f, w, h, channels, pixels, true);
}

uint8_t *png_tile_grid(const float *tiles, int n, int tile_h, int tile_w,
                       int cols, int scale, int *w, int *h)
{
    int rows = (n + cols - 1) / cols;
    int cw = (tile_w * scale + 1), ch = (tile_h * scale + 1);
    *w = cols * cw + 1;
    *h = rows * ch + 1;
    uint8_t *img = malloc((size_t)*w * (size_t)*h);
    if (!img)
        return NULL;
    memset(img, 96, (size_t)*w * (size_t)*h); /* gray gaps between tiles */
    for (int t = 0; t < n; t++) {
        const float *src = tiles + (size_t)t * tile_h * tile_w;
        int x0 = (t % cols) * cw + 1, y0 = (t / cols) * ch + 1;
        for (int y = 0; y < tile_h * scale; y++)
            for (int x = 0; x < tile_w * scale; x++) {
                float v = src[(y / scale) * tile_w + x / scale];
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                img[(size_t)(y0 + y) * *w + x0 + x] =
                    (uint8_t)(v * 255.0f + 0.5f);
            }
    }
    return img;
}

/* The examples' one PNG writer: 8-bit grayscale or RGB, no filtering. The
 * image data is deflated with zlib when tapegrad was built with it, else
 * stored in uncompressed deflate blocks. */
#ifndef EX_PNG_H
#define EX_PNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Writes w x h pixels of channels bytes each (1: gray, 0 = black; 3: RGB),
 * row-major, to f (see cli_out_open). Returns false with errno set when
 * something could not be written; out of memory is tg_out_of_memory's (the
 * program's handler), not a write that failed. */
bool png_write(FILE *f, int w, int h, int channels, const uint8_t *pixels);
/* The same, choosing the encoding: stored blocks when compress is false. */
bool png_write_ex(FILE *f, int w, int h, int channels, const uint8_t *pixels,
                  bool compress);

/* Checksums PNG and zlib use, exposed for the tests. */
uint32_t png_crc32(uint32_t crc, const uint8_t *buf, size_t n);
uint32_t png_adler32(uint32_t adler, const uint8_t *buf, size_t n);

/* A grid of images: tiles of tile_h x tile_w floats in [0, 1], laid out
 * cols per row with a 1-pixel gray gap, each pixel repeated scale times.
 * Returns a malloc'd canvas of *w x *h pixels, or NULL. */
uint8_t *png_tile_grid(const float *tiles, int n, int tile_h, int tile_w,
                       int cols, int scale, int *w, int *h);

#endif

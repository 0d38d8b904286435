/* Private to nn: the blocks of tg_rng_fill_normal_bulk (nn/rng.c), for a
 * pass that uses the normals as it draws them without storing them all
 * (nn/bayes.c's prediction sampler). tg_rng_fill_normal_bulk(r, x, n) takes
 * key = tg_rng_u64(r) and fills x[b * NORMAL_BULK_BLOCK ...] with
 * normal_bulk_block(key, b, ...) for every block b; doing the same gives the
 * same values. */
#ifndef TG_RNG_BLOCKS_H
#define TG_RNG_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

enum { NORMAL_BULK_BLOCK = 4096 };

/* Block b's len <= NORMAL_BULK_BLOCK normals into out, from the stream
 * (key, b). */
void normal_bulk_block(uint64_t key, size_t b, float *out, size_t len);

#endif

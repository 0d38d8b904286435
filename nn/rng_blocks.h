/* Private to nn: the xoshiro256** step, inlined where a loop draws many
 * values (a call per draw through the exported tg_rng_u64 cost a third of
 * the bulk normals' time and most of dropout's masks'); and the blocks of
 * tg_rng_fill_normal_bulk (nn/rng.c), for a pass that uses the normals as
 * it draws them without storing them all (nn/bayes.c's prediction
 * sampler). tg_rng_fill_normal_bulk(r, x, n) takes
 * key = tg_rng_u64(r) and fills x[b * NORMAL_BULK_BLOCK ...] with
 * normal_bulk_block(key, b, ...) for every block b; doing the same gives the
 * same values. */
#ifndef TG_RNG_BLOCKS_H
#define TG_RNG_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t rng_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* One step of the state s[4]: what tg_rng_u64 returns. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t out = rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rng_rotl(s[3], 45);
    return out;
}

enum { NORMAL_BULK_BLOCK = 4096 };

/* Block b's len <= NORMAL_BULK_BLOCK normals into out, from the stream
 * (key, b). */
void normal_bulk_block(uint64_t key, size_t b, float *out, size_t len);

#endif

/* Inverted dropout: the random half of tg_dropout (the mask, drawn in fixed
 * blocks from streams keyed by one draw of a tg_rng) over autograd's
 * tg_mask_scale. */
#include "tg_nn.h"

#include <math.h>
#include <stdint.h>

#include "parallel.h"
#include "rng_blocks.h"

enum { MASK_BLOCK = 16384 };

tg_tensor *tg_dropout(tg_tape *tp, tg_tensor *x, float p, tg_rng *rng,
                      tg_dropout_mode mode)
{
    if (!x)
        tg_fatal("dropout", "x is NULL");
    if (!(p >= 0.0f && p <= 1.0f))
        tg_fatal("dropout", "p = %g outside [0, 1]", (double)p);
    if (mode != TG_DROPOUT_AUTO && mode != TG_DROPOUT_TRAIN &&
        mode != TG_DROPOUT_EVAL)
        tg_fatal("dropout", "unknown mode %d", (int)mode);
    bool on = mode == TG_DROPOUT_TRAIN ||
              (mode == TG_DROPOUT_AUTO && tg_tape_recording(tp));
    if (!on || p == 0.0f)
        return x;
    if (!rng)
        tg_fatal("dropout", "rng is NULL");
    /* Keep an element when its 24-bit uniform k satisfies k 2^-24 >= p,
     * i.e. k >= ceil(p 2^24): P(drop) = ceil(p 2^24) / 2^24, p to within
     * 6e-8. One key from rng, then fixed blocks, each from its own stream
     * seeded (key, block), two elements per 64-bit draw: the same mask on
     * any thread count. */
    uint8_t *keep = tg_tape_alloc(tp, x->size);
    uint32_t thr = (uint32_t)ceil((double)p * 16777216.0);
    uint64_t key = tg_rng_u64(rng);
    size_t n = x->size, blocks = (n + MASK_BLOCK - 1) / MASK_BLOCK;
    TG_PARALLEL_FOR(blocks, MASK_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t lo = b * MASK_BLOCK,
               hi = n - lo < MASK_BLOCK ? n : lo + MASK_BLOCK;
        tg_rng g;
        tg_rng_seed(&g, key, b);
        for (size_t k = lo; k < hi; k += 2) {
            uint64_t w = rng_next(g.s);
            keep[k] = (uint32_t)(w >> 40) >= thr;
            if (k + 1 < hi)
                keep[k + 1] = (uint32_t)((w >> 8) & 0xffffff) >= thr;
        }
    }
    float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    return tg_mask_scale(tp, x, keep, scale);
}

/* The tests' random inputs: splitmix64 over one state per test file,
 * seeded by TEST_SEED (define it before including), so each file draws
 * the same cases on every run and every machine. Include after cmocka.h. */
#ifndef TG_TEST_RANDOM_H
#define TG_TEST_RANDOM_H

#include <stdint.h>

#ifndef TEST_SEED
#error "define TEST_SEED before including test_random.h"
#endif

static uint64_t rng_state = TEST_SEED;

/* Uniform in [0, 1), 53 bits. */
static inline double uniform(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

/* Uniform in [lo, hi]. */
static inline int randint(int lo, int hi)
{
    return lo + (int)(uniform() * (hi - lo + 1));
}

#endif

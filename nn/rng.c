/* xoshiro256** (Blackman & Vigna), seeded through splitmix64 from
 * (seed, stream): streams are independent generators for one seed. */
#include "tg_nn.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tg_rng_seed(tg_rng *r, uint64_t seed, uint64_t stream)
{
    /* key = mix(seed) combined with mix(stream) under a different constant,
     * so (seed, stream) and (stream, seed) give different keys. */
    uint64_t a = seed, b = stream ^ 0x6A09E667F3BCC909ull;
    uint64_t key = splitmix64(&a) ^ rotl(splitmix64(&b), 17);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&key);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1; /* the all-zero state is a fixed point */
}

uint64_t tg_rng_u64(tg_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Lemire's multiply-shift with rejection: exactly uniform in [0, n). */
uint32_t tg_rng_below(tg_rng *r, uint32_t n)
{
    if (n == 0)
        tg_fatal("rng_below", "n must be >= 1");
    uint64_t m = (tg_rng_u64(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n; /* 2^32 mod n */
        while (low < threshold) {
            m = (tg_rng_u64(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

/* The top 24 bits as a multiple of 2^-24: every float in [0, 1) this can
 * return is exact, and 1.0f is impossible. */
float tg_rng_uniform(tg_rng *r)
{
    return (float)(tg_rng_u64(r) >> 40) * 0x1.0p-24f;
}

/* Box-Muller in double: u1 in (0, 1] so log(u1) is finite, u2 in [0, 1).
 * Returns both normals of the pair. */
static void normal_pair(tg_rng *r, double *z0, double *z1)
{
    const double two_pi = 6.283185307179586476925286766559;
    double u1 = (double)((tg_rng_u64(r) >> 11) + 1) * 0x1.0p-53;
    double u2 = (double)(tg_rng_u64(r) >> 11) * 0x1.0p-53;
    double radius = sqrt(-2.0 * log(u1));
    *z0 = radius * cos(two_pi * u2);
    *z1 = radius * sin(two_pi * u2);
}

/* One normal per call (the pair's second value is dropped: the state holds
 * no spare, so a saved tg_rng is the whole story). */
float tg_rng_normal(tg_rng *r)
{
    double z0, z1;
    normal_pair(r, &z0, &z1);
    return (float)z0;
}

void tg_rng_fill_uniform(tg_rng *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * tg_rng_uniform(r);
}

/* Uses both values of each Box-Muller pair. */
void tg_rng_fill_normal(tg_rng *r, float *x, size_t n, float mean, float std)
{
    size_t i = 0;
    for (; i + 1 < n; i += 2) {
        double z0, z1;
        normal_pair(r, &z0, &z1);
        x[i] = mean + std * (float)z0;
        x[i + 1] = mean + std * (float)z1;
    }
    if (i < n)
        x[i] = mean + std * tg_rng_normal(r);
}

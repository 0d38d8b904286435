/* xoshiro256** (Blackman & Vigna), seeded through splitmix64 from
 * (seed, stream): streams are independent generators for one seed. */
#include "tg_nn.h"

#include <math.h>

#include "parallel.h"
#include "rng_blocks.h"
#include "vmath.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* A NULL generator aborts naming the call (it was a segfault). One
 * predictable branch per call; the hottest loops (the bulk normals,
 * dropout's masks) draw through rng_next, not through these. */
static void need_rng(const tg_rng *r, const char *op)
{
    if (!r)
        tg_fatal(op, "NULL rng");
}

void tg_rng_seed(tg_rng *r, uint64_t seed, uint64_t stream)
{
    need_rng(r, "rng_seed");
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
    need_rng(r, "rng_u64");
    return rng_next(r->s);
}

/* Lemire's multiply-shift with rejection: exactly uniform in [0, n). */
uint32_t tg_rng_below(tg_rng *r, uint32_t n)
{
    need_rng(r, "rng_below");
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
    need_rng(r, "rng_uniform");
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
    need_rng(r, "rng_normal");
    double z0, z1;
    normal_pair(r, &z0, &z1);
    return (float)z0;
}

void tg_rng_fill_uniform(tg_rng *r, float *x, size_t n, float lo, float hi)
{
    if (!r || (!x && n))
        tg_fatal("rng_fill_uniform", "NULL %s", r ? "x" : "rng");
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * tg_rng_uniform(r);
}

/* Uses both values of each Box-Muller pair. */
void tg_rng_fill_normal(tg_rng *r, float *x, size_t n, float mean, float std)
{
    if (!r || (!x && n))
        tg_fatal("rng_fill_normal", "NULL %s", r ? "x" : "rng");
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

/* ---- bulk normals: counter-blocked, vectorised ---------------------------
 * tg_rng_fill_normal above is exact but scalar (double log, cos and sin per
 * pair, about 50 ns a pair). For bulk noise (Bayes by Backprop draws one
 * normal per pre-activation per pass) tg_rng_fill_normal_bulk splits x into
 * fixed blocks of NORMAL_BULK_BLOCK; block b has its own xoshiro256** stream
 * seeded from (key, b), where key is the one draw taken from the caller's rng.
 * The blocks are independent, so they run on threads, and the values depend on
 * neither the thread count nor the schedule.
 *
 * In a block, one 64-bit draw gives one Box-Muller pair in float:
 *   u1 = (top 31 bits + 1) * 2^-31 in (0, 1]      radius = sqrt(-2 ln u1)
 *   the low 32 bits: 2 for a quadrant q, 24 for theta uniform in
 *   (-pi/4, pi/4), so the angle q pi/2 + theta is uniform on the circle;
 *   cos and sin of theta by their Taylor series (to theta^10 and theta^9:
 *   truncation below 2e-9 on |theta| <= pi/4), rotated by q quarter turns.
 * No calls and no branches, so the loop vectorises. |z| <= sqrt(62 ln 2) =
 * 6.56 (u1 >= 2^-31): the tail beyond that, probability 5e-11, is cut. */

TG_VECTOR_CLONES
static void normal_block(const uint64_t *restrict bits, float *restrict out,
                         size_t pairs)
{
    const float half_pi = 1.57079632679489662f, quarter_pi = 0.785398163f;
    for (size_t j = 0; j < pairs; j++) {
        uint64_t w = bits[j];
        int32_t top = (int32_t)(w >> 33); /* 31 bits */
        uint32_t lo = (uint32_t)w;
        int32_t frac = (int32_t)((lo >> 6) & 0xffffff); /* 24 bits */
        uint32_t q = lo >> 30;
        float u1 = ((float)top + 1.0f) * 0x1.0p-31f;
        float radius = sqrtf(-2.0f * vlogf_ge1(u1));
        float t = ((float)frac + 0.5f) * (half_pi * 0x1.0p-24f) - quarter_pi;
        float t2 = t * t;
        float sn = 1.0f / 362880.0f;
        sn = sn * t2 - 1.0f / 5040.0f;
        sn = sn * t2 + 1.0f / 120.0f;
        sn = sn * t2 - 1.0f / 6.0f;
        sn = (sn * t2 + 1.0f) * t;
        float cs = -1.0f / 3628800.0f;
        cs = cs * t2 + 1.0f / 40320.0f;
        cs = cs * t2 - 1.0f / 720.0f;
        cs = cs * t2 + 1.0f / 24.0f;
        cs = cs * t2 - 0.5f;
        cs = cs * t2 + 1.0f;
        /* rotate (cs, sn) by q quarter turns */
        float c1 = (q & 1) ? -sn : cs, s1 = (q & 1) ? cs : sn;
        float sign = (q & 2) ? -1.0f : 1.0f;
        out[2 * j] = sign * radius * c1;
        out[2 * j + 1] = sign * radius * s1;
    }
}

void normal_bulk_block(uint64_t key, size_t b, float *out, size_t len)
{
    size_t pairs = (len + 1) / 2;
    uint64_t bits[NORMAL_BULK_BLOCK / 2];
    float tmp[NORMAL_BULK_BLOCK];
    tg_rng g;
    tg_rng_seed(&g, key, b);
    for (size_t j = 0; j < pairs; j++)
        bits[j] = rng_next(g.s);
    /* an odd tail goes through tmp: out of out's bounds otherwise */
    float *dst = len % 2 ? tmp : out;
    normal_block(bits, dst, pairs);
    if (dst == tmp)
        for (size_t i = 0; i < len; i++)
            out[i] = tmp[i];
}

void tg_rng_fill_normal_bulk(tg_rng *r, float *x, size_t n)
{
    if (!r || (!x && n))
        tg_fatal("rng_fill_normal_bulk", "NULL %s", r ? "x" : "rng");
    uint64_t key = tg_rng_u64(r);
    size_t blocks = (n + NORMAL_BULK_BLOCK - 1) / NORMAL_BULK_BLOCK;
    TG_PARALLEL_FOR(blocks, NORMAL_BULK_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t lo = b * NORMAL_BULK_BLOCK,
               len = n - lo < NORMAL_BULK_BLOCK ? n - lo : NORMAL_BULK_BLOCK;
        normal_bulk_block(key, b, x + lo, len);
    }
}

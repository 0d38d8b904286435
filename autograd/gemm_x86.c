/* x86-64 GEMM micro-kernels (see gemm_internal.h for the contract).
 * Each function carries its own target attribute, so this file builds with
 * the baseline flags and the driver picks a kernel the CPU can run.
 *
 * Tile: C[MR, NV*W] lives in MR*NV vector registers (W floats per vector).
 * Per step p: NV vector loads of the B row (packed or in place), MR
 * broadcasts from op(A) (strided), MR*NV FMAs. Each C element is one
 * accumulator summed in p order.
 * AVX-512 tile 8 x 32, chosen by measurement on Zen 5: 8x32, 12x32, 14x32,
 * 8x48 and 6x64 all run at 250-268 GFLOP/s from cache (peak ~260); 8 rows
 * keep packing transposes in 8x8 blocks and divide the batch of 128.
 * The k loops are unrolled four times (GCC does not unroll them by itself):
 * the loop's counter, compare and pointer updates per k step had held the
 * AVX2 tile at 77-97 GFLOP/s on an Intel Xeon whose 256-bit peak is 112,
 * 80-103 unrolled (OpenBLAS's Haswell kernel there: 84-100); the AVX-512
 * tile went from 125-150 to 129-168. Unrolling 8 gave no more. The same
 * FMA chains: the same bits. */
#include "gemm_internal.h"

#ifdef TG_GEMM_X86
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>

/* AVX-512: 32 zmm registers. MR*NV accumulators + NV loads + 1 broadcast. */
#ifndef TG_AVX512_MR
#define TG_AVX512_MR 8
#endif
#ifndef TG_AVX512_NV
#define TG_AVX512_NV 2
#endif

#define TG_UNROLL _Pragma("GCC unroll 16")
#define TG_UNROLL_K _Pragma("GCC unroll 4") /* the k loops: see above */

__attribute__((target("avx512f,fma"))) static void
ukr_avx512(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
           ptrdiff_t rsb, float *c, ptrdiff_t ldc, float alpha, float beta)
{
    enum { MR = TG_AVX512_MR, NV = TG_AVX512_NV, W = 16 };
    __m512 acc[MR][NV];
    TG_UNROLL for (int i = 0; i < MR; i++)
        TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();

    TG_UNROLL_K for (int p = 0; p < k; p++)
    {
        __m512 bv[NV];
        TG_UNROLL for (int j = 0; j < NV; j++) bv[j] =
            _mm512_loadu_ps(b + j * W);
        TG_UNROLL for (int i = 0; i < MR; i++)
        {
            __m512 av = _mm512_set1_ps(a[i * rsa]);
            TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] =
                _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
        a += csa;
        b += rsb;
    }

    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    TG_UNROLL for (int i = 0; i < MR; i++)
    {
        float *ci = c + i * ldc;
        TG_UNROLL for (int j = 0; j < NV; j++)
        {
            __m512 r;
            if (beta == 0.0f)
                r = _mm512_mul_ps(va, acc[i][j]);
            else if (beta == 1.0f)
                r = _mm512_fmadd_ps(va, acc[i][j], _mm512_loadu_ps(ci + j * W));
            else
                r = _mm512_fmadd_ps(
                    va, acc[i][j],
                    _mm512_mul_ps(vb, _mm512_loadu_ps(ci + j * W)));
            _mm512_storeu_ps(ci + j * W, r);
        }
    }
}

/* AVX2 tile MR x NV*8, MR*NV accumulators of the 16 ymm registers; inlined
 * into one function per shape, so MR and NV are constants there. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
ukr_avx2_tile(const int MR, const int NV, int k, const float *a, ptrdiff_t rsa,
              ptrdiff_t csa, const float *b, ptrdiff_t rsb, float *c,
              ptrdiff_t ldc, float alpha, float beta)
{
    enum { W = 8, MAX_ACC = 12 };
    __m256 acc[MAX_ACC][4];
    TG_UNROLL for (int i = 0; i < MR; i++)
        TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] = _mm256_setzero_ps();

    TG_UNROLL_K for (int p = 0; p < k; p++)
    {
        __m256 bv[4];
        TG_UNROLL for (int j = 0; j < NV; j++) bv[j] =
            _mm256_loadu_ps(b + j * W);
        TG_UNROLL for (int i = 0; i < MR; i++)
        {
            __m256 av = _mm256_broadcast_ss(a + i * rsa);
            TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] =
                _mm256_fmadd_ps(av, bv[j], acc[i][j]);
        }
        a += csa;
        b += rsb;
    }

    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    TG_UNROLL for (int i = 0; i < MR; i++)
    {
        float *ci = c + i * ldc;
        TG_UNROLL for (int j = 0; j < NV; j++)
        {
            __m256 r;
            if (beta == 0.0f)
                r = _mm256_mul_ps(va, acc[i][j]);
            else if (beta == 1.0f)
                r = _mm256_fmadd_ps(va, acc[i][j], _mm256_loadu_ps(ci + j * W));
            else
                r = _mm256_fmadd_ps(
                    va, acc[i][j],
                    _mm256_mul_ps(vb, _mm256_loadu_ps(ci + j * W)));
            _mm256_storeu_ps(ci + j * W, r);
        }
    }
}

__attribute__((target("avx2,fma"))) static void
ukr_avx2_6x16(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
              const float *b, ptrdiff_t rsb, float *c, ptrdiff_t ldc,
              float alpha, float beta)
{
    ukr_avx2_tile(6, 2, k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

__attribute__((target("avx2,fma"))) static void
ukr_avx2_4x24(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
              const float *b, ptrdiff_t rsb, float *c, ptrdiff_t ldc,
              float alpha, float beta)
{
    ukr_avx2_tile(4, 3, k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

/* dst[c * dst_ld + r] = src[r * ld + c] for r < rows, c < cols: 8x8 blocks
 * in registers (unpack, shuffle, 128-bit permute), the rest one by one. */
__attribute__((target("avx2"))) static void
transpose_avx2(const float *src, ptrdiff_t ld, int rows, int cols, float *dst,
               ptrdiff_t dst_ld)
{
    int r8 = rows / 8 * 8, c8 = cols / 8 * 8;
    for (int r = 0; r < r8; r += 8) {
        const float *s = src + r * ld;
        for (int c = 0; c < c8; c += 8) {
            __m256 x0 = _mm256_loadu_ps(s + 0 * ld + c);
            __m256 x1 = _mm256_loadu_ps(s + 1 * ld + c);
            __m256 x2 = _mm256_loadu_ps(s + 2 * ld + c);
            __m256 x3 = _mm256_loadu_ps(s + 3 * ld + c);
            __m256 x4 = _mm256_loadu_ps(s + 4 * ld + c);
            __m256 x5 = _mm256_loadu_ps(s + 5 * ld + c);
            __m256 x6 = _mm256_loadu_ps(s + 6 * ld + c);
            __m256 x7 = _mm256_loadu_ps(s + 7 * ld + c);
            __m256 t0 = _mm256_unpacklo_ps(x0, x1),
                   t1 = _mm256_unpackhi_ps(x0, x1);
            __m256 t2 = _mm256_unpacklo_ps(x2, x3),
                   t3 = _mm256_unpackhi_ps(x2, x3);
            __m256 t4 = _mm256_unpacklo_ps(x4, x5),
                   t5 = _mm256_unpackhi_ps(x4, x5);
            __m256 t6 = _mm256_unpacklo_ps(x6, x7),
                   t7 = _mm256_unpackhi_ps(x6, x7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44),
                   u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44),
                   u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44),
                   u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44),
                   u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + c * dst_ld + r;
            _mm256_storeu_ps(d + 0 * dst_ld,
                             _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 1 * dst_ld,
                             _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * dst_ld,
                             _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * dst_ld,
                             _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * dst_ld,
                             _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * dst_ld,
                             _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * dst_ld,
                             _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * dst_ld,
                             _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (int i = 0; i < 8; i++)
            for (int c = c8; c < cols; c++)
                dst[c * dst_ld + r + i] = s[i * ld + c];
    }
    if (r8 == rows)
        return;
    /* The last 1-7 rows: the same 8x8 transpose with the missing rows read
     * as zeros. Each column's 8 lanes are stored whole when that stays
     * inside the destination (lanes past `rows` land on padding or on the
     * next column, written after), else through a buffer. */
    int rr = rows - r8;
    const float *s = src + r8 * ld;
    for (int c = 0; c < c8; c += 8) {
        __m256 x[8];
        for (int i = 0; i < 8; i++)
            x[i] =
                i < rr ? _mm256_loadu_ps(s + i * ld + c) : _mm256_setzero_ps();
        __m256 t0 = _mm256_unpacklo_ps(x[0], x[1]),
               t1 = _mm256_unpackhi_ps(x[0], x[1]);
        __m256 t2 = _mm256_unpacklo_ps(x[2], x[3]),
               t3 = _mm256_unpackhi_ps(x[2], x[3]);
        __m256 t4 = _mm256_unpacklo_ps(x[4], x[5]),
               t5 = _mm256_unpackhi_ps(x[4], x[5]);
        __m256 t6 = _mm256_unpacklo_ps(x[6], x[7]),
               t7 = _mm256_unpackhi_ps(x[6], x[7]);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44),
               u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44),
               u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44),
               u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44),
               u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        __m256 y[8] = {_mm256_permute2f128_ps(u0, u4, 0x20),
                       _mm256_permute2f128_ps(u1, u5, 0x20),
                       _mm256_permute2f128_ps(u2, u6, 0x20),
                       _mm256_permute2f128_ps(u3, u7, 0x20),
                       _mm256_permute2f128_ps(u0, u4, 0x31),
                       _mm256_permute2f128_ps(u1, u5, 0x31),
                       _mm256_permute2f128_ps(u2, u6, 0x31),
                       _mm256_permute2f128_ps(u3, u7, 0x31)};
        for (int i = 0; i < 8; i++) {
            float *d = dst + (c + i) * dst_ld + r8;
            if ((c + i) * dst_ld + r8 + 8 <= cols * dst_ld) {
                _mm256_storeu_ps(d, y[i]);
            } else {
                float tmp[8];
                _mm256_storeu_ps(tmp, y[i]);
                memcpy(d, tmp, (size_t)rr * sizeof(float));
            }
        }
    }
    for (int r = r8; r < rows; r++)
        for (int c = c8; c < cols; c++)
            dst[c * dst_ld + r] = src[r * ld + c];
}

void tg_gemm_x86_caches(long size[3])
{
    unsigned eax, ebx, ecx, edx, leaf = 4;
    char vendor[13] = "";
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx))
        return;
    unsigned max_leaf = eax;
    memcpy(vendor, &ebx, 4);
    memcpy(vendor + 4, &edx, 4);
    memcpy(vendor + 8, &ecx, 4);
    if (strcmp(vendor, "AuthenticAMD") == 0 ||
        strcmp(vendor, "HygonGenuine") == 0) {
        /* 0x8000001D needs TOPOEXT (0x80000001 ECX bit 22). */
        if (!__get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) ||
            !(ecx & (1u << 22)))
            return;
        leaf = 0x8000001D;
    } else if (max_leaf < 4) {
        return;
    }
    for (unsigned sub = 0; sub < 16; sub++) {
        __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
        unsigned type = eax & 31, level = (eax >> 5) & 7;
        if (type == 0)
            break;
        if (type == 2 || level < 1 || level > 3) /* instruction cache */
            continue;
        long ways = (long)(ebx >> 22) + 1,
             parts = (long)((ebx >> 12) & 1023) + 1,
             line = (long)(ebx & 4095) + 1, sets = (long)ecx + 1;
        size[level - 1] = ways * parts * line * sets;
    }
}

static int has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
}

static int has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

const gemm_kernel tg_gemm_kernel_avx512 = {.name = "avx512",
                                           .mr = TG_AVX512_MR,
                                           .nr = TG_AVX512_NV * 16,
                                           .ukr = ukr_avx512,
                                           .transpose = transpose_avx2,
                                           .supported = has_avx512};
/* "avx2" picks its tile per call; the other two pin one (tests, tuning). */
const gemm_kernel tg_gemm_kernel_avx2_6x16 = {.name = "avx2-6x16",
                                              .mr = 6,
                                              .nr = 16,
                                              .ukr = ukr_avx2_6x16,
                                              .transpose = transpose_avx2,
                                              .supported = has_avx2,
                                              .l1_k_blocks_strided = true};
const gemm_kernel tg_gemm_kernel_avx2_4x24 = {.name = "avx2-4x24",
                                              .mr = 4,
                                              .nr = 24,
                                              .ukr = ukr_avx2_4x24,
                                              .transpose = transpose_avx2,
                                              .supported = has_avx2,
                                              .l1_k_blocks_strided = true};
const gemm_kernel tg_gemm_kernel_avx2 = {.name = "avx2",
                                         .mr = 4,
                                         .nr = 24,
                                         .ukr = ukr_avx2_4x24,
                                         .transpose = transpose_avx2,
                                         .supported = has_avx2,
                                         .strided = &tg_gemm_kernel_avx2_6x16,
                                         .l1_k_blocks_strided = true};

#else
/* ISO C forbids an empty translation unit. */
typedef int tg_gemm_x86_unused;
#endif

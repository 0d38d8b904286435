/* x86-64 GEMM micro-kernels (see gemm_internal.h for the contract).
 * Each function carries its own target attribute, so this file builds with
 * the baseline flags and the driver picks a kernel the CPU can run.
 *
 * Tile: C[MR, NV*W] lives in MR*NV vector registers (W floats per vector).
 * Per step p: NV vector loads of the packed B row, MR broadcasts of the packed
 * A column, MR*NV FMAs. Each C element is one accumulator summed in p order. */
#include "gemm_internal.h"

#ifdef TG_GEMM_X86
#include <immintrin.h>

/* AVX-512: 32 zmm registers. MR*NV accumulators + NV loads + 1 broadcast. */
#ifndef TG_AVX512_MR
#define TG_AVX512_MR 12
#endif
#ifndef TG_AVX512_NV
#define TG_AVX512_NV 2
#endif
/* AVX2: 16 ymm registers, 6 x 16 = 12 accumulators. */
#define AVX2_MR 6
#define AVX2_NV 2

#define TG_UNROLL _Pragma("GCC unroll 16")

__attribute__((target("avx512f,fma"))) static void
ukr_avx512(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
           float alpha, float beta)
{
    enum { MR = TG_AVX512_MR, NV = TG_AVX512_NV, W = 16 };
    __m512 acc[MR][NV];
    TG_UNROLL for (int i = 0; i < MR; i++)
        TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_ps();

    for (int p = 0; p < k; p++) {
        __m512 bv[NV];
        TG_UNROLL for (int j = 0; j < NV; j++) bv[j] =
            _mm512_load_ps(b + j * W);
        TG_UNROLL for (int i = 0; i < MR; i++)
        {
            __m512 av = _mm512_set1_ps(a[i]);
            TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] =
                _mm512_fmadd_ps(av, bv[j], acc[i][j]);
        }
        a += MR;
        b += NV * W;
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

__attribute__((target("avx2,fma"))) static void
ukr_avx2(int k, const float *a, const float *b, float *c, ptrdiff_t ldc,
         float alpha, float beta)
{
    enum { MR = AVX2_MR, NV = AVX2_NV, W = 8 };
    __m256 acc[MR][NV];
    TG_UNROLL for (int i = 0; i < MR; i++)
        TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] = _mm256_setzero_ps();

    for (int p = 0; p < k; p++) {
        __m256 bv[NV];
        TG_UNROLL for (int j = 0; j < NV; j++) bv[j] =
            _mm256_load_ps(b + j * W);
        TG_UNROLL for (int i = 0; i < MR; i++)
        {
            __m256 av = _mm256_broadcast_ss(a + i);
            TG_UNROLL for (int j = 0; j < NV; j++) acc[i][j] =
                _mm256_fmadd_ps(av, bv[j], acc[i][j]);
        }
        a += MR;
        b += NV * W;
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

const gemm_kernel tg_gemm_kernel_avx512 = {
    "avx512", TG_AVX512_MR, TG_AVX512_NV * 16, ukr_avx512, has_avx512};
const gemm_kernel tg_gemm_kernel_avx2 = {"avx2", AVX2_MR, AVX2_NV * 8, ukr_avx2,
                                         has_avx2};

#else
/* ISO C forbids an empty translation unit. */
typedef int tg_gemm_x86_unused;
#endif

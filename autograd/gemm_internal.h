/* Private to the GEMM: the micro-kernel interface shared by gemm.c (driver:
 * loops, packing, threads), gemm_config.c (the kernel chosen, its tiles and
 * blocks) and gemm_x86.c (AVX-512 and AVX2 kernels). */
#ifndef TG_GEMM_INTERNAL_H
#define TG_GEMM_INTERNAL_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* The largest M, N or K tg_gemm takes (it aborts past it): tiles are
 * counted in int up to a size rounded up to MR or NR (at most 64). A
 * caller that makes a size (a batch stacked into rows, a conv's C * kh *
 * kw) keeps it at most this. */
#define GEMM_MAX_DIM (INT_MAX - 128)

/* The largest tile of any kernel: edge tiles and pack buffers are sized
 * for it. */
enum { GEMM_MAX_MR = 32, GEMM_MAX_NR = 64 };
_Static_assert(GEMM_MAX_DIM <= INT_MAX - 2 * GEMM_MAX_NR,
               "a size rounded up to a tile must fit an int");

/* One register-blocked tile: c[mr, nr] (row stride ldc) =
 *   alpha * sum_{p<k} a[i*rsa + p*csa] * b[p*nr + j] + beta * c[i, j],
 * summed in increasing p. a is op(A)'s MR rows in place (rsa, csa = lda, 1
 * or 1, lda) or a packed micro-panel (1, mr); b is a packed NR-column
 * micro-panel (k rows of nr floats, 64-byte aligned). beta == 0 stores
 * without reading c (NaN-safe). */
typedef void (*gemm_ukr_fn)(int k, const float *a, ptrdiff_t rsa, ptrdiff_t csa,
                            const float *b, ptrdiff_t rsb, float *c,
                            ptrdiff_t ldc, float alpha, float beta);

/* dst[c * dst_ld + r] = src[r * ld + c] for r < rows, c < cols: packing's
 * transposes, in the kernel's instruction set. */
typedef void (*gemm_transpose_fn)(const float *src, ptrdiff_t ld, int rows,
                                  int cols, float *dst, ptrdiff_t dst_ld);

/* The same with the chosen kernel's transpose, any rows and cols (for
 * the convolutions' layout changes; defined in gemm_config.c). */
void gemm_transpose(const float *src, ptrdiff_t ld, int rows, int cols,
                    float *dst, ptrdiff_t dst_ld);

/* tg_gemm threads a product of at least this many flops (2 M N K); a
 * smaller one runs on the calling thread. */
#define GEMM_MIN_PARALLEL_FLOPS 4e6

/* tg_gemm without computing C^T instead: then the tile and K blocks depend
 * on N, K and the transposes alone, and a row of C gets the same bits
 * however many rows are computed with it (the convolutions' chunks). */
void gemm_rows(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);

typedef struct gemm_kernel {
    const char *name;
    int mr, nr; /* tile: mr rows of C, nr columns (a multiple of the vector) */
    gemm_ukr_fn ukr;
    gemm_transpose_fn transpose;
    int (*supported)(void);
    /* The tile used instead when op(A) is A transposed (read down its
     * columns), or NULL for this one. */
    const struct gemm_kernel *strided;
    /* When op(A) is A transposed, size K blocks so that a cache line of A
     * and NR floats of B per k step fit L1d (measured on Zen 3 for the AVX2
     * tiles: +8%); else long K blocks as for rows (AVX-512 measured best
     * so on Zen 5). */
    bool l1_k_blocks_strided;
} gemm_kernel;

/* ---- gemm_config.c: what the driver reads once per product ----------------
 */

/* The kernel family chosen (TG_GEMM_KERNEL, tg_gemm_set_kernel, else the
 * best the CPU runs); the first call reads the environment and caches. */
const gemm_kernel *gemm_config_kernel(void);
/* A family's tile for op(A) read along rows or, a_trans, down columns. */
const gemm_kernel *gemm_tile_for(const gemm_kernel *k, bool a_trans);
/* The same, for a C of N columns (a row tile may give way to the strided
 * one where it pads N less). */
const gemm_kernel *gemm_tile_for_n(const gemm_kernel *k, bool a_trans, int N);
/* A tile's largest K block and its N block, from the caches (or
 * TG_GEMM_BLOCKS). The K blocks decide the float results. */
void gemm_blocks_for(const gemm_kernel *k, bool a_trans, int *kc_max, int *nc);
/* Floats in a thread's pack buffer: room for the largest blocks. */
size_t gemm_buffer_floats(void);
/* TG_GEMM_PACK_A's fixed choice for A transposed (0 or 1), or -1: measure
 * per kernel, in the slot gemm_pack_a_measured gives (0 until measured,
 * else 1 + the choice; kept across tg_gemm_set_kernel). */
int gemm_pack_a_fixed(void);
atomic_int *gemm_pack_a_measured(const gemm_kernel *base);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TG_GEMM_X86 1
extern const gemm_kernel tg_gemm_kernel_avx512;
extern const gemm_kernel tg_gemm_kernel_avx2;
extern const gemm_kernel tg_gemm_kernel_avx2_4x24;
extern const gemm_kernel tg_gemm_kernel_avx2_6x16;
/* Data cache sizes from cpuid (leaf 4, or 0x8000001D on AMD): size[0..2] =
 * L1d, L2, L3 in bytes; entries cpuid does not report are left alone. */
void tg_gemm_x86_caches(long size[3]);
#endif

#pragma GCC visibility pop

#endif

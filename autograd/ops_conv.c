/* Convolutions, NCHW, through the GEMM (im2col / col2im in patch rows).
 *
 * Both ops share one geometry: an "image" side [N, C, H, W] (conv2d's input,
 * conv_transpose2d's output) and a "column" side [N, OC, OH, OW] (conv2d's
 * output, conv_transpose2d's input), joined by a kernel kh x kw with stride,
 * padding and dilation. With K = C*kh*kw and P = OH*OW, each output pixel
 * q = n*P + oh*OW + ow has one patch row of the matrix col [N*P, K]:
 *   col[q][(c*kh + i)*kw + j] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
 * (0 outside), rows ldk >= K floats apart (padded off multiples of 512 bytes,
 * whose rows would share L1 sets when the GEMM reads down a column). With
 * the column side pixel-major too (x' [N*P, OC], one transposing copy away
 * from NCHW), conv2d is one GEMM over all images, y' = col . W^T, and
 * conv_transpose2d is its input gradient: col = x' . W, y = col2im(col).
 *
 * Why patch rows and not the [K, N*P] layout (each kernel tap a row): a
 * patch row is kw-float runs of an image row, so im2col and col2im copy
 * short contiguous runs instead of strided single floats; and the GEMMs get
 * the large dimension N*P as M (rows of C, read in place along rows),
 * which the driver runs faster at these shapes (bench/gemm on conv2's
 * shapes, Zen 3, 1 thread: 6272x64x512 NT 73 GFLOP/s against 64x6272x512
 * NN 62, whose in-place B rows 25 KB apart thrash L1 sets).
 *
 * Scratch matrices come from the tape arena, so a training step allocates
 * nothing after warm-up. Determinism: tg_gemm is bit-identical for any
 * thread count; im2col, col2im and the transposes are parallel loops in
 * which each iteration writes only its own outputs, col2im summing each
 * image's contributions in a fixed (oh, ow, c, i, j) order. */
#include "gemm_internal.h"
#include "parallel.h"
#include "tape.h"
#include "vmath.h"

#ifdef TG_GEMM_X86
#include <immintrin.h>
#endif

#include <limits.h>
#include <string.h>

typedef struct geom {
    int N, C, H, W; /* image side */
    int OC, OH, OW; /* column side */
    int kh, kw, sh, sw, ph, pw, dh, dw;
} geom;

static int K_of(const geom *g) { return g->C * g->kh * g->kw; }
static int P_of(const geom *g) { return g->OH * g->OW; }

/* Row stride of col: K rounded up to 8 floats, plus 16 when that is a
 * multiple of 128 floats (rows 512 bytes apart alias in L1). */
static int ldk_of(const geom *g)
{
    int ld = (K_of(g) + 7) / 8 * 8;
    return ld % 128 == 0 ? ld + 16 : ld;
}

/* d[0..n) = s[0..n) and d[0..n) += s[0..n): the kernel-row runs of
 * im2col and col2im, with k = 4 (the VAE's kernels) and 3 unrolled. */
static inline void copy_run(float *restrict d, const float *restrict s, int n)
{
    if (n == 4) {
        memcpy(d, s, 4 * sizeof *d);
    } else if (n == 3) {
        memcpy(d, s, 3 * sizeof *d);
    } else {
        for (int j = 0; j < n; j++)
            d[j] = s[j];
    }
}

static inline void add_run(float *restrict d, const float *restrict s, int n)
{
    if (n == 4) {
        d[0] += s[0], d[1] += s[1], d[2] += s[2], d[3] += s[3];
    } else if (n == 3) {
        d[0] += s[0], d[1] += s[1], d[2] += s[2];
    } else {
        for (int j = 0; j < n; j++)
            d[j] += s[j];
    }
}

/* The kernel taps [*lo, *hi) of k (spaced d apart, the first at start) that
 * fall inside [0, size). */
static void tap_range(int start, int k, int d, int size, int *lo, int *hi)
{
    int l = 0, h = k;
    while (l < h && start + l * d < 0)
        l++;
    while (h > l && start + (h - 1) * d >= size)
        h--;
    *lo = l;
    *hi = h;
}

/* One patch row's kh x kw block of channel plane xc: kernel rows [ilo, ihi)
 * from the image rows xc + row0 + i*rstep (others zero), kernel columns [jlo,
 * jhi) at xr[iw0 + j*dw] (others zero). full: all columns inside, dw == 1. The
 * branches are on values fixed for the whole row (unswitched by hand), so
 * the inside runs are plain kw-float copies. */
static inline void im2col_block(float *restrict d, const float *restrict xc,
                                ptrdiff_t row0, ptrdiff_t rstep, int kh, int kw,
                                int ilo, int ihi, int iw0, int jlo, int jhi,
                                int dw, bool full)
{
    if (ilo > 0)
        memset(d, 0, (size_t)ilo * kw * sizeof *d);
    if (full && kw == 4) {
        for (int i = ilo; i < ihi; i++)
            memcpy(d + i * 4, xc + (row0 + i * rstep + iw0), 4 * sizeof *d);
    } else if (full) {
        for (int i = ilo; i < ihi; i++)
            copy_run(d + i * kw, xc + (row0 + i * rstep + iw0), kw);
    } else if (kw == 4) { /* a border run as one 16-byte store (the
                           * generic loops became memmove/memset calls) */
        for (int i = ilo; i < ihi; i++) {
            const float *s = xc + (row0 + i * rstep);
            float t[4];
            for (int j = 0; j < 4; j++) /* (not a copy loop, which GCC made
                                         * a memcpy call) */
                t[j] = j >= jlo && j < jhi ? s[iw0 + j * dw] : 0.0f;
            memcpy(d + i * 4, t, sizeof t);
        }
    } else {
        for (int i = ilo; i < ihi; i++) {
            float *dr = d + i * kw;
            const float *s = xc + (row0 + i * rstep);
            for (int j = 0; j < jlo; j++)
                dr[j] = 0.0f;
            for (int j = jlo; j < jhi; j++)
                dr[j] = s[iw0 + j * dw];
            for (int j = jhi; j < kw; j++)
                dr[j] = 0.0f;
        }
    }
    if (ihi < kh)
        memset(d + ihi * kw, 0, (size_t)(kh - ihi) * kw * sizeof *d);
}

/* The P patch rows of image n: col [P, ldk] from x [N, C, H, W]. The taps
 * inside the image are found once per output pixel, not per channel. */
static void im2col_image(const geom *g, const float *x, int n, float *col,
                         int ldk)
{
    const int kh = g->kh, kw = g->kw, C = g->C, W = g->W, K = K_of(g);
    const size_t plane = (size_t)g->H * W;
    const ptrdiff_t rstep = (ptrdiff_t)g->dh * W;
    const float *xn = x + (size_t)n * C * plane;
    float *dst = col;
    for (int oh = 0; oh < g->OH; oh++) {
        int ih0 = oh * g->sh - g->ph, ilo, ihi;
        tap_range(ih0, kh, g->dh, g->H, &ilo, &ihi);
        for (int ow = 0; ow < g->OW; ow++, dst += ldk) {
            int iw0 = ow * g->sw - g->pw, jlo, jhi;
            tap_range(iw0, kw, g->dw, W, &jlo, &jhi);
            if (ilo == ihi || jlo == jhi) {
                memset(dst, 0, (size_t)K * sizeof *dst);
                continue;
            }
            bool full = jlo == 0 && jhi == kw && g->dw == 1;
            /* the image row of kernel row 0 (never dereferenced when it
             * lies outside: i starts at ilo) */
            ptrdiff_t row0 = (ptrdiff_t)ih0 * W;
            float *d = dst;
            for (int c = 0; c < C; c++, d += kh * kw)
                im2col_block(d, xn + (size_t)c * plane, row0, rstep, kh, kw,
                             ilo, ihi, iw0, jlo, jhi, g->dw, full);
        }
    }
}

/* dx [N, C, H, W] += col2im of image n's P patch rows col [P, ldk], added
 * in order (q, then c, i, j). */
static void col2im_image(const geom *g, const float *col, int ldk, int n,
                         float *dx)
{
    const int kh = g->kh, kw = g->kw, C = g->C, W = g->W, dw = g->dw;
    const size_t plane = (size_t)g->H * W;
    const ptrdiff_t rstep = (ptrdiff_t)g->dh * W;
    float *dxn = dx + (size_t)n * C * plane;
    const float *src = col;
#if defined(__GNUC__) || defined(__clang__)
    for (size_t e = 0; e < (size_t)C * plane; e += 16)
        __builtin_prefetch(dxn + e, 1);
#endif
    for (int oh = 0; oh < g->OH; oh++) {
        int ih0 = oh * g->sh - g->ph, ilo, ihi;
        tap_range(ih0, kh, g->dh, g->H, &ilo, &ihi);
        for (int ow = 0; ow < g->OW; ow++, src += ldk) {
            int iw0 = ow * g->sw - g->pw, jlo, jhi;
            tap_range(iw0, kw, dw, W, &jlo, &jhi);
            if (ilo == ihi || jlo == jhi)
                continue;
            bool full = jlo == 0 && jhi == kw && dw == 1;
            ptrdiff_t row0 = (ptrdiff_t)ih0 * W;
            const float *s = src;
            for (int c = 0; c < C; c++, s += kh * kw) {
                float *dc = dxn + (size_t)c * plane;
                if (full && kw == 4) {
                    for (int i = ilo; i < ihi; i++)
                        add_run(dc + (row0 + i * rstep + iw0), s + i * 4, 4);
                } else if (full) {
                    for (int i = ilo; i < ihi; i++)
                        add_run(dc + (row0 + i * rstep + iw0), s + i * kw, kw);
                } else if (dw == 1) { /* a border run: the inside taps
                                       * are contiguous (the generic loop
                                       * below took a third of col2im's
                                       * time on conv2's 7-wide rows) */
                    for (int i = ilo; i < ihi; i++)
                        add_run(dc + (row0 + i * rstep + iw0 + jlo),
                                s + i * kw + jlo, jhi - jlo);
                } else {
                    for (int i = ilo; i < ihi; i++) {
                        float *dr = dc + (row0 + i * rstep);
                        const float *si = s + i * kw;
                        for (int j = jlo; j < jhi; j++)
                            dr[iw0 + j * dw] += si[j];
                    }
                }
            }
        }
    }
}

/* col [N*P, ldk] from x [N, C, H, W]; one iteration per image. */
static void im2col(const geom *g, const float *x, float *col, int ldk)
{
    const size_t rows = (size_t)P_of(g);
    TG_PARALLEL_FOR(g->N, rows * K_of(g))
    for (int n = 0; n < g->N; n++)
        im2col_image(g, x, n, col + (size_t)n * rows * ldk, ldk);
}

/* ---- chunks of images: a patch matrix used while it is in L2 ---------------
 * The GEMMs that make or take col run on a few images' rows at a time, so
 * im2col's output is read back (or col2im's input written) in L2 rather
 * than through memory. On T threads, one parallel region splits the
 * images into T contiguous ranges, and each thread runs its range's chunks
 * with one-thread GEMMs (tg_gemm inside an active parallel region stays on
 * its thread; on one thread no region is opened, as an inactive one would
 * let the GEMM open a nested team, whose new threads allocate): no region per
 * chunk (each costs a time slice whenever the machine is shared), no chunk GEMM
 * split between threads, and im2col's output stays in the L2 of the core that
 * reads it. Any split gives the same bits: gemm_rows computes a row the same
 * however many rows are computed with it (its tile and K blocks depend on N, K
 * and the transposes alone, and each element is one accumulator's chain), and
 * im2col/col2im treat each image alone. */
enum { CHUNK_FLOATS = 1 << 16 }; /* 256 KB of patch rows */

static int chunk_images(const geom *g, int ldk)
{
    long per = (long)P_of(g) * ldk;
    long k = CHUNK_FLOATS / (per > 0 ? per : 1);
    return k < 1 ? 1 : k > g->N ? g->N : (int)k;
}

/* Threads for a loop over the images of `work` floats in all: as
 * TG_PARALLEL_FOR, at most one per image. */
static int image_threads(const geom *g, size_t work)
{
    int T = tg_par_threads();
    T = T > g->N ? g->N : T;
    return T > 1 && work >= TG_PARALLEL_MIN ? T : 1;
}

/* Thread t's images of T: [N*t/T, N*(t+1)/T). */
static int range_start(int N, int t, int T) { return (int)((long)N * t / T); }

/* One image's nchw [C, P] = pm [P, C] + bias[c] (bias may be NULL), or with
 * tmp [C, P] nchw += pm transposed (through tmp). */
static void pm_to_nchw(int C, int P, const float *pm, const float *bias,
                       float *tmp, float *nchw)
{
    if (tmp) {
        gemm_transpose(pm, C, P, C, tmp, P);
        for (size_t e = 0; e < (size_t)C * P; e++)
            nchw[e] += tmp[e];
        return;
    }
    gemm_transpose(pm, C, P, C, nchw, P);
    for (int c = 0; bias && c < C; c++) {
        float b = bias[c], *d = nchw + (size_t)c * P;
        for (int p = 0; p < P; p++)
            d[p] += b;
    }
}

/* Where im2col_gemm's product goes: y [N, OC, P] = product + bias, or with
 * tmp, y += product. pm and tmp are [N*P, OC] scratch of which each thread
 * uses a chunk's rows at the start of its range. */
typedef struct nchw_out {
    float *y;
    const float *bias;
    float *pm, *tmp;
} nchw_out;

/* Images [n0, n1) of im2col_gemm, a chunk at a time: the chunk's product
 * is laid out NCHW while it is in cache. */
static void im2col_gemm_range(const geom *g, const float *x, float *col,
                              int ldk, const float *W, const nchw_out *o,
                              int n0, int n1)
{
    const int G = chunk_images(g, ldk), K = K_of(g), P = P_of(g), OC = g->OC;
    float *pm = o->pm + (size_t)n0 * P * OC,
          *tmp = o->tmp ? o->tmp + (size_t)n0 * P * OC : NULL;
    for (int c0 = n0; c0 < n1; c0 += G) {
        int c1 = c0 + G < n1 ? c0 + G : n1;
        size_t r0 = (size_t)c0 * P;
        for (int n = c0; n < c1; n++)
            im2col_image(g, x, n, col + (size_t)n * P * ldk, ldk);
        gemm_rows(false, true, (c1 - c0) * P, OC, K, 1.0f, col + r0 * ldk, ldk,
                  W, K, 0.0f, pm, OC);
        for (int n = c0; n < c1; n++)
            pm_to_nchw(OC, P, pm + (size_t)(n - c0) * P * OC, o->bias, tmp,
                       o->y + (size_t)n * OC * P);
    }
}

/* col = im2col(x) (all images, kept for backward) and
 * y [N, OC, OH, OW] (+)= col . W^T, W [OC, K], as o says. */
static void im2col_gemm(const geom *g, const float *x, float *col, int ldk,
                        const float *W, const nchw_out *o)
{
    int T = image_threads(g, (size_t)g->N * P_of(g) * K_of(g));
    if (T <= 1) { /* no region: an inactive one would let the GEMM nest one */
        im2col_gemm_range(g, x, col, ldk, W, o, 0, g->N);
        return;
    }
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int t = 0; t < T; t++)
        im2col_gemm_range(g, x, col, ldk, W, o, range_start(g->N, t, T),
                          range_start(g->N, t + 1, T));
}

/* Images [n0, n1) of gemm_col2im, a chunk at a time through col. With
 * init, each image of dx is first set to bias[c] (0 without a bias), just
 * before col2im adds to it (conv_transpose2d's output, set while in cache
 * rather than in a pass of its own). */
static void gemm_col2im_range(const geom *g, const float *in, const float *W,
                              int ldk, float *col, float *dx, bool init,
                              const float *bias, int n0, int n1)
{
    const int G = chunk_images(g, ldk), K = K_of(g), P = P_of(g);
    const size_t plane = (size_t)g->H * g->W;
    for (int c0 = n0; c0 < n1; c0 += G) {
        int c1 = c0 + G < n1 ? c0 + G : n1;
        gemm_rows(false, false, (c1 - c0) * P, K, g->OC, 1.0f,
                  in + (size_t)c0 * P * g->OC, g->OC, W, K, 0.0f, col, ldk);
        for (int n = c0; n < c1; n++) {
            for (int c = 0; init && c < g->C; c++) {
                float bc = bias ? bias[c] : 0.0f,
                      *d = dx + ((size_t)n * g->C + c) * plane;
                for (size_t e = 0; e < plane; e++)
                    d[e] = bc;
            }
            col2im_image(g, col + (size_t)(n - c0) * P * ldk, ldk, n, dx);
        }
    }
}

/* dx [N, C, H, W] += col2im(in . W), in [N*P, OC], W [OC, K]; with init,
 * dx = bias (or 0) + col2im(in . W). The tape
 * buffer is sized for all rows however many threads run (each touches
 * only a chunk's pages at the start of its range), so the arena does not
 * change size with the thread count. */
static void gemm_col2im(tg_tape *tp, const geom *g, const float *in,
                        const float *W, int ldk, float *dx, bool init,
                        const float *bias)
{
    const int P = P_of(g);
    float *col = tg_tape_alloc(tp, (size_t)g->N * P * ldk * sizeof(float));
    int T = image_threads(g, (size_t)g->N * P * K_of(g));
    if (T <= 1) {
        gemm_col2im_range(g, in, W, ldk, col, dx, init, bias, 0, g->N);
        return;
    }
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int t = 0; t < T; t++) {
        int n0 = range_start(g->N, t, T), n1 = range_start(g->N, t + 1, T);
        gemm_col2im_range(g, in, W, ldk, col + (size_t)n0 * P * ldk, dx, init,
                          bias, n0, n1);
    }
}

/* pm [N*P, C] = nchw [N, C, P] (pixel-major: a transpose per image). */
static void to_pm(int N, int C, int P, const float *nchw, float *pm)
{
    TG_PARALLEL_FOR(N, (size_t)C * P)
    for (int n = 0; n < N; n++)
        gemm_transpose(nchw + (size_t)n * C * P, P, C, P,
                       pm + (size_t)n * P * C, C);
}

/* dW [OC, K] += tmp [K, OC] transposed. */
static void add_transposed(int OC, int K, const float *tmp, float *dW)
{
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < K; k++)
            dW[(size_t)o * K + k] += tmp[(size_t)k * OC + o];
}

/* db[c] += sum over n, p of dy [N, C, P]: each image's row by vsum_f64
 * (double, a fixed order, vectorised), the rows added in order in double.
 * In float, a [5, 7, 48, 50] gradient's 12,000-term sums were 1.2e-4 off
 * (bench/conv_check_dump 3000 2; tests/autograd/test_conv.c). */
enum { BIAS_CB = 8 }; /* channels per block: their rows are contiguous */

/* db[c0 .. c0 + nc) += the sums of bias_backward (nc <= BIAS_CB). */
TG_VECTOR_CLONES
static void bias_block(int N, int C, int P, int c0, int nc, const float *dy,
                       float *db)
{
    double s[BIAS_CB] = {0};
    for (int n = 0; n < N; n++) {
        const float *row = dy + ((size_t)n * C + c0) * P;
        for (int c = 0; c < nc; c++)
            s[c] += vsum_f64(row + (size_t)c * P, P);
    }
    for (int c = 0; c < nc; c++)
        db[c0 + c] += (float)s[c];
}

static void bias_backward(int N, int C, int P, const float *dy, float *db)
{
    TG_PARALLEL_FOR((C + BIAS_CB - 1) / BIAS_CB, (size_t)N * P * BIAS_CB)
    for (int c0 = 0; c0 < C; c0 += BIAS_CB)
        bias_block(N, C, P, c0, C - c0 < BIAS_CB ? C - c0 : BIAS_CB, dy, db);
}

static float *scratch(tg_tape *tp, size_t rows, size_t cols)
{
    return tg_tape_alloc(tp, rows * cols * sizeof(float));
}

/* ---- implicit GEMM: patch rows read from a padded image ---------------------
 * For OC a multiple of 16 with an AVX2 or AVX-512 GEMM kernel, the products
 * that read col (conv2d's forward and dW, conv_transpose2d's dx and dW) read
 * the image instead: each image is copied once with its padding as zeros, xp
 * [C][Hq][Wq] (Hq = H + 2ph, Wq = W + 2pw), and col's element (q, k) is
 *   xp[rb(q) + off(k)],  rb(q) = oh*sh*Wq + ow*sw,
 *                        off(k) = c*Hq*Wq + i*dh*Wq + j*dw, k = (c, i, j),
 * so a micro-kernel broadcasts it from there (AVX2: 6 pixel rows or 6 k
 * rows x 16 output channels from W^T laid out in 16-column panels; AVX-512:
 * 8 rows x 32 channels, two panels, and 8 x 16 for a last odd panel). col (13
 * MB for conv2 at batch 128) is never written: the forward saves xp (4 MB). The
 * forward sums each output over k in order with one FMA chain from 0, as the
 * GEMM does in one K block. dW is computed as dW^T [K, OC]: each tile by
 * one thread over all pixels in a fixed order (blocks of a few images, the tile
 * kept in the output between blocks), so the bits do not depend on the thread
 * count, nor on the tile: the AVX2 and AVX-512 kernels make the same FMA chains
 * and give the same bits. */
typedef struct ilay {
    int Hq, Wq;
    size_t plane, image; /* floats per padded channel plane, per image */
} ilay;

static bool implicit_ok(const geom *g)
{
#ifdef TG_GEMM_X86
    /* off(k) and rb(q) are ints: a padded image of at most INT_MAX / 2
     * floats (each factor checked first, so the products cannot wrap) */
    size_t hq = (size_t)g->H + 2 * (size_t)g->ph,
           wq = (size_t)g->W + 2 * (size_t)g->pw;
    if (hq > INT_MAX / 2 || wq > INT_MAX / 2 || hq * wq > INT_MAX / 2 ||
        (size_t)g->C * hq * wq > INT_MAX / 2)
        return false;
    const char *kern = tg_gemm_kernel();
    return g->OC % 16 == 0 && g->C > 1 &&
           (strncmp(kern, "avx2", 4) == 0 || strcmp(kern, "avx512") == 0);
#else
    (void)g;
    return false;
#endif
}

static ilay ilay_of(const geom *g)
{
    ilay l;
    l.Hq = g->H + 2 * g->ph;
    l.Wq = g->W + 2 * g->pw;
    l.plane = (size_t)l.Hq * l.Wq;
    l.image = (size_t)g->C * l.plane;
    return l;
}

/* xp (all images) from x [N, C, H, W]: rows copied, padding zeroed. */
static void pad_images(const geom *g, const ilay *l, const float *x, float *xp)
{
    const size_t plane = (size_t)g->H * g->W;
    TG_PARALLEL_FOR((size_t)g->N * g->C, l->plane)
    for (long nc = 0; nc < (long)g->N * g->C; nc++) {
        const float *s = x + (size_t)nc * plane;
        float *d = xp + (size_t)nc * l->plane;
        memset(d, 0, (size_t)g->ph * l->Wq * sizeof *d);
        d += (size_t)g->ph * l->Wq;
        for (int h = 0; h < g->H; h++, d += l->Wq, s += g->W) {
            memset(d, 0, (size_t)g->pw * sizeof *d);
            memcpy(d + g->pw, s, (size_t)g->W * sizeof *d);
            memset(d + g->pw + g->W, 0, (size_t)g->pw * sizeof *d);
        }
        memset(d, 0, (size_t)g->ph * l->Wq * sizeof *d);
    }
}

/* W [OC, K] as W^T in [OC/16][K][16] panels. */
static float *w_panels(tg_tape *tp, const geom *g, const float *W)
{
    const int K = K_of(g);
    float *wp = scratch(tp, (size_t)K, (size_t)g->OC);
    for (int j = 0; j < g->OC; j += 16)
        gemm_transpose(W + (size_t)j * K, K, 16, K, wp + (size_t)j * K, 16);
    return wp;
}

/* off(k) for every k. */
static int *k_offsets(tg_tape *tp, const geom *g, const ilay *l)
{
    int *off = tg_tape_alloc(tp, (size_t)K_of(g) * sizeof *off);
    int k = 0;
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++)
            for (int j = 0; j < g->kw; j++)
                off[k++] = (int)((size_t)c * l->plane +
                                 (size_t)i * g->dh * l->Wq + (size_t)j * g->dw);
    return off;
}

#ifdef TG_GEMM_X86
/* The AVX2 tile: d[r][0..16) = sum over k of a[r][off[k]] b[k][0..16) for
 * the rows r < rows, b one 16-column panel [K][16]; each element one FMA
 * chain from 0 over k in order. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile_avx2(const float *const a[6], int rows, const float *b, const int *off,
          int K, float *const d[6])
{
    __m256 acc[6][2];
    for (int r = 0; r < 6; r++)
        acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++, b += 16) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        int o = off[k];
        for (int r = 0; r < 6; r++) {
            __m256 av = _mm256_broadcast_ss(a[r] + o);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    /* constant indices (r < 6, not r < rows): with a variable bound GCC
     * kept acc in memory and stored all twelve vectors at every k */
    for (int r = 0; r < 6; r++)
        if (r < rows) {
            _mm256_storeu_ps(d[r], acc[r][0]);
            _mm256_storeu_ps(d[r] + 8, acc[r][1]);
        }
}

/* The outputs of the tile of rows [q0, q0 + mr) at column pn: row q is
 * dr[q] when dr is given, else pm + q NC (rows past mr repeat the first). */
static inline void tile_outs(float *const *dr, float *pm, int NC, int q0,
                             int mr, int pn, int n, float **d)
{
    for (int r = 0; r < n; r++) {
        int q = q0 + (r < mr ? r : 0);
        d[r] = (dr ? dr[q] : pm + (size_t)q * NC) + pn;
    }
}

/* The product of the rows whose bases are a[0 .. rows) (a padded with
 * copies of the last to a multiple of the tile's rows) and the W^T panels
 * wp [NC/16][K][16], offsets off[K], into pm [rows, NC], or row q into
 * dr[q] [NC] when dr is given: 6 rows x 16 columns at a time. */
__attribute__((target("avx2,fma"))) static void
rows_avx2(const float *const *a, int rows, const float *wp, const int *off,
          int K, int NC, float *pm, float *const *dr)
{
    for (int q0 = 0; q0 < rows; q0 += 6)
        for (int pn = 0; pn < NC; pn += 16) {
            int mr = rows - q0 < 6 ? rows - q0 : 6;
            float *d[6];
            tile_outs(dr, pm, NC, q0, mr, pn, 6, d);
            tile_avx2(a + q0, mr, wp + (size_t)pn * K, off, K, d);
        }
}

/* dWt [K, OC] rows [k0, k1) (+)= sum over images [n0, n1) and their pixels
 * of col(q, k) dyp(q, oc), dyp given as dpan [OC/16][N*P][16] (each
 * tile's stream of dy contiguous); with first, the rows are set instead. */
__attribute__((target("avx2,fma"))) static void
implicit_wgrad_rows(const geom *g, const ilay *l, const float *xp,
                    const float *dpan, const int *off, int k0, int k1, int n0,
                    int n1, bool first, float *dWt)
{
    const int P = P_of(g), OC = g->OC, K = K_of(g);
    const size_t NP = (size_t)g->N * P;
    for (int kt = k0; kt < k1; kt += 6) {
        int o[6];
        for (int r = 0; r < 6; r++)
            o[r] = off[kt + r < K ? kt + r : K - 1];
        for (int pn = 0; pn < OC; pn += 16) {
            __m256 acc[6][2];
            for (int r = 0; r < 6; r++) {
                if (first || kt + r >= k1) {
                    acc[r][0] = acc[r][1] = _mm256_setzero_ps();
                } else {
                    const float *c = dWt + (size_t)(kt + r) * OC + pn;
                    acc[r][0] = _mm256_loadu_ps(c);
                    acc[r][1] = _mm256_loadu_ps(c + 8);
                }
            }
            for (int n = n0; n < n1; n++) {
                const float *xn = xp + (size_t)n * l->image;
                const float *dq =
                    dpan + ((size_t)(pn / 16) * NP + (size_t)n * P) * 16;
                for (int oh = 0; oh < g->OH; oh++) {
                    const float *xr = xn + (size_t)oh * g->sh * l->Wq;
                    for (int ow = 0; ow < g->OW; ow++, dq += 16) {
                        const float *x0 = xr + (size_t)ow * g->sw;
                        __m256 b0 = _mm256_loadu_ps(dq),
                               b1 = _mm256_loadu_ps(dq + 8);
                        for (int r = 0; r < 6; r++) {
                            __m256 av = _mm256_broadcast_ss(x0 + o[r]);
                            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
                        }
                    }
                }
            }
            for (int r = 0; r < 6 && kt + r < k1; r++) {
                float *c = dWt + (size_t)(kt + r) * OC + pn;
                _mm256_storeu_ps(c, acc[r][0]);
                _mm256_storeu_ps(c + 8, acc[r][1]);
            }
        }
    }
}

/* The AVX-512 tiles: MR = 8 rows (pixels or k) x NV panels of 16 channels,
 * NV = 2, or 1 for a last odd panel; the same chains as the AVX2 tiles. */
enum { I512_MR = 8, I512_KC = 128 };

/* The AVX-512 tile: d[r][0..16 NV) for the rows r < rows, as tile_avx2 over
 * k in [k0, k1) of NV panels (b: the first panel's k = 0, the next pstride
 * floats on): started from 0 when k0 is 0, else from d (a stored float
 * reloads exactly, so a chain cut into K chunks is the same chain). */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
tile_512(const int NV, const float *const a[I512_MR], int rows, const float *b,
         size_t pstride, const int *off, int k0, int k1,
         float *const d[I512_MR])
{
    __m512 acc[I512_MR][2];
    for (int r = 0; r < I512_MR; r++) {
        if (k0 == 0 || r >= rows) {
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        } else {
            acc[r][0] = _mm512_loadu_ps(d[r]);
            acc[r][1] = NV > 1 ? _mm512_loadu_ps(d[r] + 16) : acc[r][0];
        }
    }
    b += (size_t)k0 * 16;
    for (int k = k0; k < k1; k++, b += 16) {
        __m512 b0 = _mm512_loadu_ps(b),
               b1 = NV > 1 ? _mm512_loadu_ps(b + pstride) : b0;
        int o = off[k];
        for (int r = 0; r < I512_MR; r++) {
            __m512 av = _mm512_set1_ps(a[r][o]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            if (NV > 1)
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < I512_MR; r++) /* constant indices, as tile_avx2 */
        if (r < rows) {
            _mm512_storeu_ps(d[r], acc[r][0]);
            if (NV > 1)
                _mm512_storeu_ps(d[r] + 16, acc[r][1]);
        }
}

/* rows_avx2 with the AVX-512 tiles: for each panel pair, K in chunks of
 * I512_KC (the pair's chunk of W^T, 16 KB, stays in L1 while every row
 * tile uses it). */
__attribute__((target("avx512f,fma"))) static void
rows_512(const float *const *a, int rows, const float *wp, const int *off,
         int K, int NC, float *pm, float *const *dr)
{
    const size_t pstride = (size_t)16 * K;
    for (int pn = 0; pn < NC; pn += 32)
        for (int k0 = 0; k0 < K; k0 += I512_KC) {
            int k1 = K - k0 < I512_KC ? K : k0 + I512_KC;
            for (int q0 = 0; q0 < rows; q0 += I512_MR) {
                int mr = rows - q0 < I512_MR ? rows - q0 : I512_MR;
                const float *b = wp + (size_t)pn * K;
                float *d[I512_MR];
                tile_outs(dr, pm, NC, q0, mr, pn, I512_MR, d);
                if (pn + 32 <= NC)
                    tile_512(2, a + q0, mr, b, pstride, off, k0, k1, d);
                else
                    tile_512(1, a + q0, mr, b, pstride, off, k0, k1, d);
            }
        }
}

/* One tile of implicit_wgrad_rows_512: dWt rows [kt, kt + rows), channels
 * [pn, pn + 16 NV). */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
wgrad_tile_512(const int NV, const geom *g, const ilay *l, const float *xp,
               const float *dpan, const int o[I512_MR], int kt, int rows,
               int pn, int n0, int n1, bool first, float *dWt)
{
    const int P = P_of(g), OC = g->OC;
    const size_t NP = (size_t)g->N * P;
    __m512 acc[I512_MR][2];
    for (int r = 0; r < I512_MR; r++) {
        if (first || r >= rows) {
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        } else {
            const float *c = dWt + (size_t)(kt + r) * OC + pn;
            acc[r][0] = _mm512_loadu_ps(c);
            acc[r][1] = NV > 1 ? _mm512_loadu_ps(c + 16) : acc[r][0];
        }
    }
    for (int n = n0; n < n1; n++) {
        const float *xn = xp + (size_t)n * l->image;
        const float *dq = dpan + ((size_t)(pn / 16) * NP + (size_t)n * P) * 16;
        const size_t pstride = NP * 16; /* the next panel's stream */
        for (int oh = 0; oh < g->OH; oh++) {
            const float *xr = xn + (size_t)oh * g->sh * l->Wq;
            for (int ow = 0; ow < g->OW; ow++, dq += 16) {
                const float *x0 = xr + (size_t)ow * g->sw;
                __m512 b0 = _mm512_loadu_ps(dq),
                       b1 = NV > 1 ? _mm512_loadu_ps(dq + pstride) : b0;
                for (int r = 0; r < I512_MR; r++) {
                    __m512 av = _mm512_set1_ps(x0[o[r]]);
                    acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                    if (NV > 1)
                        acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
                }
            }
        }
    }
    for (int r = 0; r < rows; r++) {
        float *c = dWt + (size_t)(kt + r) * OC + pn;
        _mm512_storeu_ps(c, acc[r][0]);
        if (NV > 1)
            _mm512_storeu_ps(c + 16, acc[r][1]);
    }
}

/* implicit_wgrad_rows with the AVX-512 tiles (k0 a multiple of 8); panel
 * pairs outermost, so that a pair's stream of dy (about 256 pixels x 32
 * channels, 32 KB) stays in L1 across the k tiles. */
__attribute__((target("avx512f,fma"))) static void
implicit_wgrad_rows_512(const geom *g, const ilay *l, const float *xp,
                        const float *dpan, const int *off, int k0, int k1,
                        int n0, int n1, bool first, float *dWt)
{
    const int K = K_of(g), OC = g->OC;
    for (int pn = 0; pn < OC; pn += 32)
        for (int kt = k0; kt < k1; kt += I512_MR) {
            int o[I512_MR];
            for (int r = 0; r < I512_MR; r++)
                o[r] = off[kt + r < K ? kt + r : K - 1];
            int rows = k1 - kt < I512_MR ? k1 - kt : I512_MR;
            if (pn + 32 <= OC)
                wgrad_tile_512(2, g, l, xp, dpan, o, kt, rows, pn, n0, n1,
                               first, dWt);
            else
                wgrad_tile_512(1, g, l, xp, dpan, o, kt, rows, pn, n0, n1,
                               first, dWt);
        }
}

/* Whether the implicit kernels take the AVX-512 tiles: the GEMM's kernel. */
static bool implicit_512(void)
{
    return strcmp(tg_gemm_kernel(), "avx512") == 0;
}
#endif

/* Tiles take row bases in blocks of images of about 256 rows, so that a
 * tile's rows may span images (a 7 x 7 image alone fills 7 tiles of 8 for
 * 49 rows) and each base is computed once per block, not per K chunk. */
enum { BLOCK_ROWS = 256, TILE_MAX = 8 };

static int block_images(int N, int pix)
{
    int G = BLOCK_ROWS / (pix > 0 ? pix : 1);
    return G < 1 ? 1 : G > N ? N : G;
}

/* a[q] for the pixels q of images [n0, n0 + rows / P) of xp (rows
 * rounded up to a whole tile with the last row). */
static void fwd_bases(const geom *g, const ilay *l, const float *xp, int n0,
                      int rows, const float **a)
{
    const int P = P_of(g);
    for (int q = 0; q < rows + TILE_MAX; q++) {
        int qq = q < rows ? q : rows - 1, p = qq % P;
        a[q] = xp + (size_t)(n0 + qq / P) * l->image +
               (size_t)(p / g->OW) * g->sh * l->Wq +
               (size_t)(p % g->OW) * g->sw;
    }
}

/* y [N, OC, OH, OW] (+)= col(xp) . W^T as o says (o->pm: [N*P, OC]
 * scratch, each thread using a block's rows at the start of its range). */
static void implicit_fwd(tg_tape *tp, const geom *g, const ilay *l,
                         const float *xp, const float *W, const nchw_out *o)
{
#ifdef TG_GEMM_X86
    const float *wp = w_panels(tp, g, W);
    const int *off = k_offsets(tp, g, l);
    const int P = P_of(g), OC = g->OC, K = K_of(g);
    const int G = block_images(g->N, P);
    int T = image_threads(g, (size_t)g->N * P * K);
    if (T < 1)
        T = 1;
    const size_t per = (size_t)G * P + TILE_MAX;
    const float **bases = tg_tape_alloc(tp, T * per * sizeof *bases);
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (T > 1)
#endif
    for (int t = 0; t < T; t++) {
        int n0 = range_start(g->N, t, T), n1 = range_start(g->N, t + 1, T);
        float *pm = o->pm + (size_t)n0 * P * OC,
              *tmp = o->tmp ? o->tmp + (size_t)n0 * P * OC : NULL;
        const float **a = bases + t * per;
        const bool z = implicit_512();
        for (int c0 = n0; c0 < n1; c0 += G) {
            int c1 = c0 + G < n1 ? c0 + G : n1, rows = (c1 - c0) * P;
            fwd_bases(g, l, xp, c0, rows, a);
            (z ? rows_512 : rows_avx2)(a, rows, wp, off, K, OC, pm, NULL);
            for (int n = c0; n < c1; n++)
                pm_to_nchw(OC, P, pm + (size_t)(n - c0) * P * OC, o->bias, tmp,
                           o->y + (size_t)n * OC * P);
        }
    }
#else
    (void)tp, (void)g, (void)l, (void)xp, (void)W, (void)o;
#endif
}

/* dW [OC, K] += (col(xp)^T . dyp)^T, dyp [N*P, OC]. Threads take ranges of
 * 6-row tiles of dW^T; each runs every block of images in order. */
static void implicit_wgrad(tg_tape *tp, const geom *g, const ilay *l,
                           const float *xp, const float *dyp, float *dW)
{
#ifdef TG_GEMM_X86
    const int K = K_of(g), P = P_of(g);
    const int *off = k_offsets(tp, g, l);
    float *dWt = scratch(tp, (size_t)K, (size_t)g->OC);
    const size_t NP = (size_t)g->N * P;
    float *dpan = scratch(tp, NP, (size_t)g->OC);
    TG_PARALLEL_FOR(g->OC / 16, NP * 16)
    for (int pn = 0; pn < g->OC / 16; pn++)
        for (size_t q = 0; q < NP; q++)
            memcpy(dpan + ((size_t)pn * NP + q) * 16,
                   dyp + q * g->OC + (size_t)pn * 16, 16 * sizeof(float));
    /* images per block: about 256 pixels */
    int G = 256 / (P > 0 ? P : 1);
    G = G < 1 ? 1 : G;
    const bool z = implicit_512();
    const int mr = z ? I512_MR : 6;
    int tiles = (K + mr - 1) / mr;
    int T = tg_par_threads();
    T = T > tiles ? tiles : T < 1 ? 1 : T;
    if ((size_t)g->N * P * K * g->OC < TG_PARALLEL_MIN * 64)
        T = 1;
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (T > 1)
#endif
    for (int t = 0; t < T; t++) {
        int k0 = (int)((long)tiles * t / T) * mr,
            k1 = (int)((long)tiles * (t + 1) / T) * mr;
        k1 = k1 > K ? K : k1;
        for (int n = 0; n < g->N; n += G)
            (z ? implicit_wgrad_rows_512
               : implicit_wgrad_rows)(g, l, xp, dpan, off, k0, k1, n,
                                      n + G < g->N ? n + G : g->N, n == 0, dWt);
    }
    add_transposed(g->OC, K, dWt, dW);
#else
    (void)tp, (void)g, (void)l, (void)xp, (void)dyp, (void)dW;
#endif
}

/* ---- implicit transposed products: the image side gathered by phase -------
 * conv2d's input gradient and conv_transpose2d's forward are col2im(in . W):
 * image pixel (h, w) of channel c sums W[oc][c][i][j] in[oc][oh][ow] over
 * the taps with oh*sh - ph + i*dh = h (and likewise along w). Instead of a
 * GEMM into col (13 MB for conv2's input gradient at batch 128) and a
 * scatter-add of it, the pixels are gathered by phase: with rh = (h + ph)
 * mod sh, exactly the taps i with i*dh = rh (mod sh) reach h, at oh = u -
 * a_i, u = (h + ph - rh) / sh, a_i = floor(i*dh / sh). So the pixels of a
 * phase (rh, rw) form a grid (u, v) on which the product is a stride-1
 * correlation of the column side with the phase's taps: an implicit GEMM
 * whose rows are the phase's pixels, columns the C image channels (16-wide
 * panels of the phase's W), and K = OC x the phase's taps, reading the
 * column side copied once with Amax = floor((kh-1)dh / sh) zero rows on top
 * (Bmax columns on the left) and zeros below and right as far as any u
 * reaches:
 *   cp[oc][Amax + oh][Bmax + ow] = in[oc][oh][ow],
 *   element (q, k) = cp[rb(q) + off(k)], rb(q) = u*Wq + v,
 *   off(k) = oc*Hq*Wq + (Amax - a_i)*Wq + (Bmax - b_j), k = (oc, i, j).
 * The tiles are the forward's (the same chains on AVX2 and AVX-512: the
 * same bits), a few images' pixels of one phase at a time; each tile row
 * (one pixel's C channels) is stored straight to its pixel in a
 * pixel-major copy of the images, [H][W][C], which is then transposed to
 * NCHW once per image, bias added or the whole added into out (a store
 * per phase into NCHW, every sw-th float of a row, took a tenth of conv2's
 * time). A pixel that no tap reaches (stride > kernel) is bias or 0. Each
 * image is one thread's: the same bits for any thread count. */
typedef struct tphase {
    int rh, rw;      /* residues of (h + ph) mod sh and (w + pw) mod sw */
    int u0, v0;      /* the grid's first u and v */
    int Hr, Wr;      /* its size; Hr*Wr pixels */
    int K;           /* OC x the phase's taps (0: no tap reaches it) */
    const int *off;  /* [K] */
    const float *wp; /* W^T [C/16][K][16] */
} tphase;

typedef struct tlay {
    int Amax, Bmax, Hq, Wq;
    size_t plane, image; /* floats per padded column plane, per image */
    int n_ph, max_pix;   /* phases (sh*sw), the most pixels of one */
    tphase *ph;
} tlay;

enum { TRANS_MAX_PHASES = 64 };

/* The first u >= 0 with u*sh + r - p >= 0, and the grid's length below n. */
static void phase_grid(int r, int p, int s, int n, int *u0, int *len)
{
    long first = p >= r ? ((long)p - r + s - 1) / s : 0,
         last = ((long)n - 1 + p - r) >= 0 ? ((long)n - 1 + p - r) / s : -1;
    *u0 = (int)first;
    *len = last >= first ? (int)(last - first + 1) : 0;
}

/* The padded column plane's rows and columns (Amax + as far as any u
 * reaches, likewise along w), in 64 bits. */
static void trans_plane(const geom *g, long *hq, long *wq)
{
    long u1 = ((long)g->H - 1 + g->ph) / g->sh + 1,
         v1 = ((long)g->W - 1 + g->pw) / g->sw + 1;
    *hq = (long)(g->kh - 1) * g->dh / g->sh + (g->OH > u1 ? g->OH : u1);
    *wq = (long)(g->kw - 1) * g->dw / g->sw + (g->OW > v1 ? g->OW : v1);
}

static bool trans_ok(const geom *g)
{
#ifdef TG_GEMM_X86
    if (g->C % 16 != 0 || (long)g->sh * g->sw > TRANS_MAX_PHASES)
        return false;
    /* off(k), rb(q) are ints: a padded column image of at most INT_MAX / 2
     * floats, each factor checked first */
    long hq, wq;
    trans_plane(g, &hq, &wq);
    if (hq > INT_MAX / 2 || wq > INT_MAX / 2 || hq * wq > INT_MAX / 2 ||
        (long)g->OC * hq * wq > INT_MAX / 2)
        return false;
    /* a huge dilation pads the column planes far past the image (the
     * GEMM + col2im path needs no such planes) */
    if (hq * wq > 4L * g->OH * g->OW + 4096)
        return false;
    const char *kern = tg_gemm_kernel();
    return strncmp(kern, "avx2", 4) == 0 || strcmp(kern, "avx512") == 0;
#else
    (void)g;
    return false;
#endif
}

/* The phases, their offsets and W panels, on the arena. */
static tlay tlay_of(tg_tape *tp, const geom *g, const float *W)
{
    tlay t;
    /* in 64 bits (trans_ok bounded the results, not the products) */
    t.Amax = (int)((long)(g->kh - 1) * g->dh / g->sh);
    t.Bmax = (int)((long)(g->kw - 1) * g->dw / g->sw);
    long hq, wq;
    trans_plane(g, &hq, &wq);
    t.Hq = (int)hq, t.Wq = (int)wq;
    t.plane = (size_t)t.Hq * t.Wq;
    t.image = (size_t)g->OC * t.plane;
    t.n_ph = g->sh * g->sw;
    t.max_pix = 0;
    t.ph = tg_tape_alloc(tp, (size_t)t.n_ph * sizeof *t.ph);
    const int C = g->C, kk = g->kh * g->kw;
    int *ti = tg_tape_alloc(tp, (size_t)(g->kh + g->kw) * sizeof *ti),
        *tj = ti + g->kh;
    for (int p = 0; p < t.n_ph; p++) {
        tphase *f = &t.ph[p];
        f->rh = p / g->sw, f->rw = p % g->sw;
        phase_grid(f->rh, g->ph, g->sh, g->H, &f->u0, &f->Hr);
        phase_grid(f->rw, g->pw, g->sw, g->W, &f->v0, &f->Wr);
        if (f->Hr * f->Wr > t.max_pix)
            t.max_pix = f->Hr * f->Wr;
        int ni = 0, nj = 0;
        for (int i = 0; i < g->kh; i++)
            if ((long)i * g->dh % g->sh == f->rh)
                ti[ni++] = i;
        for (int j = 0; j < g->kw; j++)
            if ((long)j * g->dw % g->sw == f->rw)
                tj[nj++] = j;
        f->K = g->OC * ni * nj;
        f->off = NULL, f->wp = NULL;
        if (f->K == 0 || f->Hr * f->Wr == 0)
            continue;
        int *off = tg_tape_alloc(tp, (size_t)f->K * sizeof *off);
        float *wp = scratch(tp, (size_t)f->K, (size_t)C);
        int k = 0;
        for (int oc = 0; oc < g->OC; oc++)
            for (int a = 0; a < ni; a++)
                for (int b = 0; b < nj; b++, k++) {
                    int i = ti[a], j = tj[b];
                    off[k] = (int)((size_t)oc * t.plane +
                                   (size_t)(t.Amax - (long)i * g->dh / g->sh) *
                                       t.Wq +
                                   (size_t)(t.Bmax - (long)j * g->dw / g->sw));
                    const float *w = W + (size_t)oc * C * kk + i * g->kw + j;
                    for (int c = 0; c < C; c++)
                        wp[((size_t)(c / 16) * f->K + k) * 16 + c % 16] =
                            w[(size_t)c * kk];
                }
        f->off = off, f->wp = wp;
    }
    return t;
}

/* cp [OC][Hq][Wq] from one image of in [OC, OH, OW]: each plane placed at
 * (Amax, Bmax), the rest zeros. */
static void pad_col_image(const geom *g, const tlay *t, const float *in,
                          float *cp)
{
    for (int oc = 0; oc < g->OC; oc++) {
        float *d = cp + (size_t)oc * t->plane;
        memset(d, 0, t->plane * sizeof *d);
        d += (size_t)t->Amax * t->Wq + t->Bmax;
        for (int h = 0; h < g->OH; h++, d += t->Wq, in += g->OW)
            memcpy(d, in, (size_t)g->OW * sizeof *d);
    }
}

/* a[q] for the pixels q of phase f in the images of cp (rows rounded up
 * to a whole tile with the last row). */
static void trans_bases(const tlay *t, const tphase *f, const float *cp,
                        int rows, const float **a)
{
    const int pix = f->Hr * f->Wr;
    for (int q = 0; q < rows + TILE_MAX; q++) {
        int qq = q < rows ? q : rows - 1, p = qq % pix;
        a[q] = cp + (size_t)(qq / pix) * t->image +
               (size_t)(f->u0 + p / f->Wr) * t->Wq +
               (size_t)(f->v0 + p % f->Wr);
    }
}

/* Where the tiles write the pixels q of phase f in the images of ob
 * [images][H][W][C] (pixel-major, so that each pixel's C channels are one
 * contiguous row; rows rounded up to a whole tile as trans_bases). */
static void trans_outs(const geom *g, const tphase *f, float *ob, int rows,
                       float **d)
{
    const int pix = f->Hr * f->Wr;
    const size_t image = (size_t)g->H * g->W * g->C;
    for (int q = 0; q < rows + TILE_MAX; q++) {
        int qq = q < rows ? q : rows - 1, p = qq % pix;
        int h = (f->u0 + p / f->Wr) * g->sh + f->rh - g->ph,
            w = (f->v0 + p % f->Wr) * g->sw + f->rw - g->pw;
        d[q] = ob + (size_t)(qq / pix) * image +
               ((size_t)h * g->W + (size_t)w) * g->C;
    }
}

/* out [N, C, H, W] = bias (or 0) + col2im(in . W) with set, else out +=
 * col2im(in . W); in [N, OC, OH, OW] NCHW, W [OC, C, kh, kw]. */
static void implicit_trans(tg_tape *tp, const geom *g, const float *in,
                           const float *W, float *out, bool set,
                           const float *bias)
{
#ifdef TG_GEMM_X86
    tlay t = tlay_of(tp, g, W);
    const int G = block_images(g->N, t.max_pix);
    int T = image_threads(g, (size_t)g->N * P_of(g) * K_of(g));
    T = T < 1 ? 1 : T;
    const size_t in_image = (size_t)g->OC * g->OH * g->OW,
                 out_image = (size_t)g->C * g->H * g->W;
    /* a pixel that no tap reaches (stride > kernel) is in no tile's rows:
     * its row of ob is zeroed first */
    bool unreached = false;
    for (int p = 0; p < t.n_ph; p++)
        unreached =
            unreached || (t.ph[p].K == 0 && t.ph[p].Hr * t.ph[p].Wr > 0);
    /* per thread: a block's padded column images, its pixel-major outputs,
     * one image's tmp (adding), the row bases and outputs */
    const size_t per = G * t.image + (G + (set ? 0 : 1)) * out_image,
                 nb = (size_t)G * t.max_pix + TILE_MAX;
    float *buf = scratch(tp, (size_t)T, per);
    const float **bases = tg_tape_alloc(tp, T * nb * sizeof *bases);
    float **outs = tg_tape_alloc(tp, T * nb * sizeof *outs);
    const bool z = implicit_512();
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static) if (T > 1)
#endif
    for (int th = 0; th < T; th++) {
        int n0 = range_start(g->N, th, T), n1 = range_start(g->N, th + 1, T);
        float *cp = buf + (size_t)th * per, *ob = cp + G * t.image,
              *tmp = set ? NULL : ob + G * out_image;
        const float **a = bases + th * nb;
        float **d = outs + th * nb;
        for (int c0 = n0; c0 < n1; c0 += G) {
            int c1 = c0 + G < n1 ? c0 + G : n1;
            for (int n = c0; n < c1; n++)
                pad_col_image(g, &t, in + n * in_image,
                              cp + (size_t)(n - c0) * t.image);
            if (unreached)
                memset(ob, 0, (size_t)(c1 - c0) * out_image * sizeof *ob);
            for (int p = 0; p < t.n_ph; p++) {
                const tphase *f = &t.ph[p];
                int rows = (c1 - c0) * f->Hr * f->Wr;
                if (rows == 0 || f->K == 0)
                    continue;
                trans_bases(&t, f, cp, rows, a);
                trans_outs(g, f, ob, rows, d);
                (z ? rows_512 : rows_avx2)(a, rows, f->wp, f->off, f->K, g->C,
                                           NULL, d);
            }
            for (int n = c0; n < c1; n++)
                pm_to_nchw(g->C, g->H * g->W, ob + (size_t)(n - c0) * out_image,
                           set ? bias : NULL, tmp, out + n * out_image);
        }
    }
#else
    (void)tp, (void)g, (void)in, (void)W, (void)out, (void)set, (void)bias;
#endif
}

/* ---- a one-channel image side: direct kernels -------------------------------
 * conv2d with one input channel (the VAE's first layer) and
 * conv_transpose2d with one output channel (its last) make GEMMs with
 * K = kh*kw (16) or N = kh*kw: the GEMM is then cheap and the im2col/col2im,
 * transposes and packing around it cost 3-4x as much (bench/conv_layers:
 * 15-27% of the FMA peak). Here the image is split by stride phase instead:
 * phase (rp, cp) is the plane
 *   ph_r[a][b] = x[a*sh + rp - ph][b*sw + cp - pw]   (0 outside),
 * rows Wp = OW + bmax wide, bmax = (kw-1)*dw / sw. Tap (i, j) reads phase
 * ((i*dh) % sh, (j*dw) % sw) shifted by ai = i*dh / sh rows and bj = j*dw /
 * sw columns, so over the flattened grid t = oh*Wp + ow (the columns ow >=
 * OW are padding, computed and dropped) each tap is one contiguous vector
 * load per 8 output pixels:
 *   corr:  col[oc][t]  = sum_taps W[oc][tap] ph_r(tap)[t + ai*Wp + bj]
 *          (conv2d's forward, conv_transpose2d's input gradient)
 *   wgrad: dW[oc][tap] = sum_t col[oc][t] ph_r(tap)[t + ai*Wp + bj]
 *   trans: ph_r[t]     = sum_{taps of r} sum_oc W[oc][tap] col[oc][t - ai*Wp
 *          - bj]  (conv_transpose2d's forward, conv2d's input gradient;
 *          col laid on the grid with zero padding columns and F = amax*Wp +
 *          bmax zeros in front)
 * corr sums each output over the taps in (i, j) order with one FMA chain
 * from 0 and the padding taps as zeros, as the GEMM's micro-kernel does, so
 * it gives the im2col path's bits (the AVX2 family's). wgrad sums each
 * image's products (fixed order) into its own slot, the slots added in
 * image order afterwards; everything else is per image: the same bits for
 * any thread count. AVX2+FMA only: with the portable GEMM kernel the
 * convolutions take the im2col path. */
typedef struct dlay {
    int P, KK;      /* phases sh*sw, taps kh*kw */
    int amax, bmax; /* largest tap shifts, in phase rows and columns */
    int Wp;         /* grid row: OW + bmax */
    int Lf, Lt;     /* grid lengths of corr/wgrad and trans, whole blocks */
    int F;          /* zeros before a column plane: amax*Wp + bmax */
    size_t PS, CS;  /* floats per phase plane, per column plane */
    size_t slot;    /* scratch floats per thread */
} dlay;

enum { CORR_V = 3, TRANS_V = 3, DIRECT_MAX_TAPS = 1024 };

static size_t round8(size_t v) { return (v + 7) / 8 * 8; }

/* The layout for g, false when the direct kernels do not apply: an image
 * side of more than one channel, no AVX2, or planes too large. */
static bool direct_layout(const geom *g, dlay *d)
{
#ifdef TG_GEMM_X86
    if (g->C != 1 || strcmp(tg_gemm_kernel(), "portable") == 0 ||
        !__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return false;
    /* in 64 bits: strides, dilations and paddings may be near INT_MAX
     * (test_huge_stride_one_channel); then the im2col path */
    long long P = (long long)g->sh * g->sw, KK = (long long)g->kh * g->kw,
              spanh = (long long)(g->kh - 1) * g->dh,
              spanw = (long long)(g->kw - 1) * g->dw;
    if (KK > DIRECT_MAX_TAPS || P > DIRECT_MAX_TAPS || spanh > (1 << 22) ||
        spanw > (1 << 22))
        return false;
    d->P = (int)P;
    d->KK = (int)KK;
    d->amax = (int)(spanh / g->sh);
    d->bmax = (int)(spanw / g->sw);
    long long Wp = (long long)g->OW + d->bmax, lf = (long long)g->OH * Wp,
              lt = (g->OH + (long long)d->amax) * Wp,
              F = (long long)d->amax * Wp + d->bmax;
    if (lt > (1 << 22) || F > (1 << 22))
        return false;
    d->Wp = (int)Wp;
    d->Lf = (int)((lf + 8 * CORR_V - 1) / (8 * CORR_V) * (8 * CORR_V));
    d->Lt = (int)((lt + 8 * TRANS_V - 1) / (8 * TRANS_V) * (8 * TRANS_V));
    d->F = (int)F;
    d->PS = round8((size_t)d->Lf + (size_t)F);
    d->CS = round8((size_t)F + (size_t)(d->Lf > d->Lt ? d->Lf : d->Lt));
    size_t buf = (size_t)4 * (d->Lf > d->Lt ? d->Lf : d->Lt);
    d->slot = (size_t)d->P * d->PS + (size_t)g->OC * d->CS + buf;
    return d->slot < ((size_t)1 << 28);
#else
    (void)g;
    (void)d;
    return false;
#endif
}

#ifdef TG_GEMM_X86
/* Tap k = i*kw + j: its phase and its shift on the grid. */
static int tap_phase(const geom *g, int k)
{
    int i = k / g->kw, j = k % g->kw;
    return (i * g->dh % g->sh) * g->sw + j * g->dw % g->sw;
}

static int tap_shift(const geom *g, const dlay *d, int k)
{
    int i = k / g->kw, j = k % g->kw;
    return i * g->dh / g->sh * d->Wp + j * g->dw / g->sw;
}

/* The phase planes of one image x [H, W]: those some tap reads. */
static void fill_planes(const geom *g, const dlay *d, const float *x,
                        float *planes)
{
    for (int r = 0; r < d->P; r++) {
        bool used = false;
        for (int k = 0; k < d->KK && !used; k++)
            used = tap_phase(g, k) == r;
        if (!used)
            continue;
        int rp = r / g->sw, cp = r % g->sw;
        float *pl = planes + (size_t)r * d->PS;
        /* the columns b whose pixel b*sw + cp - pw lies in [0, W) */
        int blo = 0, bhi = d->Wp;
        while (blo < bhi && (long)blo * g->sw + cp - g->pw < 0)
            blo++;
        while (bhi > blo && (long)(bhi - 1) * g->sw + cp - g->pw >= g->W)
            bhi--;
        size_t rows = (d->PS + d->Wp - 1) / d->Wp, tail = rows * d->Wp - d->PS;
        for (size_t a = 0; a < rows; a++, pl += d->Wp) {
            long h = (long)a * g->sh + rp - g->ph;
            int n = a + 1 < rows ? d->Wp : d->Wp - (int)tail;
            if (h < 0 || h >= g->H || blo == bhi) {
                memset(pl, 0, (size_t)n * sizeof *pl);
                continue;
            }
            long o = h * g->W + cp - g->pw; /* the pixel of column b = 0 */
            int b = 0;
            for (; b < blo && b < n; b++)
                pl[b] = 0.0f;
            if (g->sw == 1)
                for (; b < bhi && b < n; b++)
                    pl[b] = x[o + b];
            else if (g->sw == 2)
                for (; b < bhi && b < n; b++)
                    pl[b] = x[o + 2 * b];
            else
                for (; b < bhi && b < n; b++)
                    pl[b] = x[o + (long)b * g->sw];
            for (; b < n; b++)
                pl[b] = 0.0f;
        }
    }
}

/* One image's column side c [OC, OH, OW] on the grid: plane oc at cg +
 * oc*CS, F zeros, then rows of Wp (OW values, zeros), zeros to CS. */
static void fill_cols(const geom *g, const dlay *d, const float *c, float *cg)
{
    for (int oc = 0; oc < g->OC; oc++) {
        float *p = cg + (size_t)oc * d->CS;
        const float *s = c + (size_t)oc * g->OH * g->OW;
        memset(p, 0, (size_t)d->F * sizeof *p);
        p += d->F;
        for (int oh = 0; oh < g->OH; oh++, p += d->Wp, s += g->OW) {
            memcpy(p, s, (size_t)g->OW * sizeof *p);
            memset(p + g->OW, 0, (size_t)(d->Wp - g->OW) * sizeof *p);
        }
        size_t used = (size_t)d->F + (size_t)g->OH * d->Wp;
        memset(p, 0, (d->CS - used) * sizeof *p);
    }
}

/* corr for NB output channels (W rows KK apart) into buf [NB, Lf]. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
corr_block(const int NB, const dlay *d, const float *planes, const int *src,
           const float *w, float *buf)
{
    const int KK = d->KK, Lf = d->Lf; /* (GCC reloaded them per FMA) */
    for (int t0 = 0; t0 < Lf; t0 += 8 * CORR_V) {
        __m256 acc[4][CORR_V];
        for (int c = 0; c < NB; c++)
            for (int v = 0; v < CORR_V; v++)
                acc[c][v] = _mm256_setzero_ps();
        for (int k = 0; k < KK; k++) {
            const float *s = planes + src[k] + t0;
            __m256 x[CORR_V];
            for (int v = 0; v < CORR_V; v++)
                x[v] = _mm256_loadu_ps(s + 8 * v);
            for (int c = 0; c < NB; c++) {
                __m256 wv = _mm256_broadcast_ss(w + (size_t)c * KK + k);
                for (int v = 0; v < CORR_V; v++)
                    acc[c][v] = _mm256_fmadd_ps(x[v], wv, acc[c][v]);
            }
        }
        for (int c = 0; c < NB; c++)
            for (int v = 0; v < CORR_V; v++)
                _mm256_storeu_ps(buf + (size_t)c * Lf + t0 + 8 * v, acc[c][v]);
    }
}

/* out [OC, OH, OW] = corr + bias[oc] (bias may be NULL), or += corr. */
__attribute__((target("avx2,fma"))) static void
corr_image(const geom *g, const dlay *d, const float *planes, const int *src,
           const float *W, const float *bias, bool add, float *buf, float *out)
{
    for (int oc = 0; oc < g->OC;) {
        int nb = g->OC - oc >= 4 ? 4 : 1;
        const float *w = W + (size_t)oc * d->KK;
        if (nb == 4)
            corr_block(4, d, planes, src, w, buf);
        else
            corr_block(1, d, planes, src, w, buf);
        for (int c = 0; c < nb; c++, oc++) {
            const float *s = buf + (size_t)c * d->Lf;
            float *o = out + (size_t)oc * g->OH * g->OW;
            float b = bias ? bias[oc] : 0.0f;
            for (int oh = 0; oh < g->OH; oh++, s += d->Wp, o += g->OW) {
                if (add)
                    for (int ow = 0; ow < g->OW; ow++)
                        o[ow] += s[ow];
                else if (bias)
                    for (int ow = 0; ow < g->OW; ow++)
                        o[ow] = s[ow] + b;
                else
                    memcpy(o, s, (size_t)g->OW * sizeof *o);
            }
        }
    }
}

/* Sum of the 8 lanes, in a fixed order. */
__attribute__((target("avx2,fma"), always_inline)) static inline float
hsum8(__m256 v)
{
    __m128 s =
        _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* wgrad of NB channels (column planes CS apart) and NT taps into part
 * [oc*KK + k]. */
__attribute__((target("avx2,fma"), always_inline)) static inline void
wgrad_block(const int NB, const int NT, const dlay *d, const float *cg,
            const float *planes, const int *src, int k0, float *part)
{
    __m256 acc[4][2];
    for (int c = 0; c < NB; c++)
        for (int k = 0; k < NT; k++)
            acc[c][k] = _mm256_setzero_ps();
    const float *xs[2];
    for (int k = 0; k < NT; k++)
        xs[k] = planes + src[k0 + k];
    const int Lf = d->Lf;
    const size_t CS = d->CS;
    for (int t = 0; t < Lf; t += 8) {
        __m256 x[2];
        for (int k = 0; k < NT; k++)
            x[k] = _mm256_loadu_ps(xs[k] + t);
        for (int c = 0; c < NB; c++) {
            __m256 dv = _mm256_loadu_ps(cg + c * CS + t);
            for (int k = 0; k < NT; k++)
                acc[c][k] = _mm256_fmadd_ps(dv, x[k], acc[c][k]);
        }
    }
    for (int c = 0; c < NB; c++)
        for (int k = 0; k < NT; k++)
            part[(size_t)c * d->KK + k0 + k] = hsum8(acc[c][k]);
}

/* part [OC, KK] = one image's wgrad; cg is its column grid (past F). */
__attribute__((target("avx2,fma"))) static void
wgrad_image(const geom *g, const dlay *d, const float *cg, const float *planes,
            const int *src, float *part)
{
    for (int oc = 0; oc < g->OC;) {
        int nb = g->OC - oc >= 4 ? 4 : 1;
        const float *c = cg + (size_t)oc * d->CS;
        float *p = part + (size_t)oc * d->KK;
        for (int k = 0; k < d->KK;) {
            int nt = d->KK - k >= 2 ? 2 : 1;
            if (nb == 4 && nt == 2)
                wgrad_block(4, 2, d, c, planes, src, k, p);
            else if (nb == 4)
                wgrad_block(4, 1, d, c, planes, src, k, p);
            else if (nt == 2)
                wgrad_block(1, 2, d, c, planes, src, k, p);
            else
                wgrad_block(1, 1, d, c, planes, src, k, p);
            k += nt;
        }
        oc += nb;
    }
}

/* out [H, W] += phase r's grid values buf, over the pixels they cover. */
static void scatter_phase(const geom *g, const dlay *d, int r, const float *buf,
                          float *out)
{
    int rp = r / g->sw, cp = r % g->sw;
    /* the columns b whose pixel b*sw + cp - pw lies in [0, W) */
    int blo = 0, bhi = d->Wp;
    while (blo < bhi && (long)blo * g->sw + cp - g->pw < 0)
        blo++;
    while (bhi > blo && (long)(bhi - 1) * g->sw + cp - g->pw >= g->W)
        bhi--;
    for (int a = 0; a < g->OH + d->amax; a++) {
        long h = (long)a * g->sh + rp - g->ph;
        if (h < 0 || h >= g->H)
            continue;
        long o = h * g->W + cp - g->pw; /* the pixel of column b = 0 */
        const float *s = buf + (size_t)a * d->Wp;
        if (g->sw == 1)
            for (int b = blo; b < bhi; b++)
                out[o + b] += s[b];
        else
            for (int b = blo; b < bhi; b++)
                out[o + (long)b * g->sw] += s[b];
    }
}

/* out [H, W] += trans of one image's column grid cg. Four phases that
 * each have a tap at every shift (stride 2 with an even kernel, as the
 * VAE's) go together: each column vector loaded serves the four, with
 * weights wq [shift][oc][phase]; else one phase at a time. */
__attribute__((target("avx2,fma"))) static void
trans_image(const geom *g, const dlay *d, const float *cg, const float *W,
            const float *wq, float *buf, float *out)
{
    if (wq) {
        int S = (d->amax + 1) * (d->bmax + 1);
        for (int t0 = 0; t0 < d->Lt; t0 += 8 * TRANS_V) {
            __m256 acc[4][TRANS_V];
            for (int q = 0; q < 4; q++)
                for (int v = 0; v < TRANS_V; v++)
                    acc[q][v] = _mm256_setzero_ps();
            const float *w = wq;
            for (int sh = 0; sh < S; sh++) {
                int shift = sh / (d->bmax + 1) * d->Wp + sh % (d->bmax + 1);
                const float *s = cg + d->F - shift + t0;
                for (int oc = 0; oc < g->OC; oc++, s += d->CS, w += 4) {
                    __m256 x[TRANS_V];
                    for (int v = 0; v < TRANS_V; v++)
                        x[v] = _mm256_loadu_ps(s + 8 * v);
                    for (int q = 0; q < 4; q++) {
                        __m256 wv = _mm256_broadcast_ss(w + q);
                        for (int v = 0; v < TRANS_V; v++)
                            acc[q][v] = _mm256_fmadd_ps(x[v], wv, acc[q][v]);
                    }
                }
            }
            for (int q = 0; q < 4; q++)
                for (int v = 0; v < TRANS_V; v++)
                    _mm256_storeu_ps(buf + (size_t)q * d->Lt + t0 + 8 * v,
                                     acc[q][v]);
        }
        for (int r = 0; r < 4; r++)
            scatter_phase(g, d, r, buf + (size_t)r * d->Lt, out);
        return;
    }
    for (int r = 0; r < d->P; r++) {
        int taps[DIRECT_MAX_TAPS], nt = 0;
        for (int k = 0; k < d->KK; k++)
            if (tap_phase(g, k) == r)
                taps[nt++] = k;
        if (nt == 0)
            continue;
        for (int t0 = 0; t0 < d->Lt; t0 += 8 * TRANS_V) {
            __m256 acc[TRANS_V];
            for (int v = 0; v < TRANS_V; v++)
                acc[v] = _mm256_setzero_ps();
            for (int q = 0; q < nt; q++) {
                int k = taps[q];
                const float *s = cg + d->F - tap_shift(g, d, k) + t0;
                const float *w = W + k;
                for (int oc = 0; oc < g->OC; oc++, s += d->CS, w += d->KK) {
                    __m256 wv = _mm256_broadcast_ss(w);
                    for (int v = 0; v < TRANS_V; v++)
                        acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(s + 8 * v), wv,
                                                 acc[v]);
                }
            }
            for (int v = 0; v < TRANS_V; v++)
                _mm256_storeu_ps(buf + t0 + 8 * v, acc[v]);
        }
        scatter_phase(g, d, r, buf, out);
    }
}

/* Whether trans_image may take the four phases together: P == 4 and each
 * phase has a tap at every shift (a tap's phase and shift determine it, so
 * counting suffices). wq [shift][oc][phase] from W [OC, KK]. */
static bool grouped_phases(const geom *g, const dlay *d)
{
    int S = (d->amax + 1) * (d->bmax + 1), count[4] = {0};
    if (d->P != 4)
        return false;
    for (int k = 0; k < d->KK; k++)
        count[tap_phase(g, k)]++;
    return count[0] == S && count[1] == S && count[2] == S && count[3] == S;
}

static void pack_grouped(const geom *g, const dlay *d, const float *W,
                         float *wq)
{
    int S = (d->amax + 1) * (d->bmax + 1);
    for (int k = 0; k < d->KK; k++) {
        int i = k / g->kw, j = k % g->kw;
        int sh = i * g->dh / g->sh * (d->bmax + 1) + j * g->dw / g->sw;
        int r = tap_phase(g, k);
        for (int oc = 0; oc < g->OC; oc++)
            wq[((size_t)sh * g->OC + oc) * 4 + r] = W[(size_t)oc * d->KK + k];
    }
    (void)S;
}
#endif

/* What direct_images does for each image n (pointers NULL to skip):
 * img: the image side [N, 1, H, W] the phase planes are made of;
 * col: the column side [N, OC, OH, OW] put on the grid;
 * col_out (+)= corr(img) (+ col_bias; += with col_add);
 * img_out (= img_bias[0] or 0 with img_set, then) += trans(col);
 * part [N, OC, KK] = wgrad(col, img) per image. */
typedef struct direct_job {
    const float *img, *col, *W;
    float *col_out;
    const float *col_bias;
    bool col_add;
    float *img_out;
    const float *img_bias;
    bool img_set;
    float *part;
    const float *wq; /* trans_image's grouped weights (set by direct_images) */
} direct_job;

#ifdef TG_GEMM_X86
static void direct_image(const geom *g, const dlay *d, const direct_job *j,
                         int n, float *slot)
{
    float *planes = slot, *cg = planes + (size_t)d->P * d->PS,
          *buf = cg + (size_t)g->OC * d->CS;
    const size_t plane = (size_t)g->H * g->W, P = (size_t)P_of(g);
    int src[DIRECT_MAX_TAPS];
    for (int k = 0; k < d->KK; k++)
        src[k] = (int)((size_t)tap_phase(g, k) * d->PS) + tap_shift(g, d, k);
    if (j->img)
        fill_planes(g, d, j->img + n * plane, planes);
    if (j->col)
        fill_cols(g, d, j->col + n * P * g->OC, cg);
    if (j->col_out)
        corr_image(g, d, planes, src, j->W, j->col_bias, j->col_add, buf,
                   j->col_out + n * P * g->OC);
    if (j->part)
        wgrad_image(g, d, cg + d->F, planes, src,
                    j->part + (size_t)n * g->OC * d->KK);
    if (j->img_out) {
        float *o = j->img_out + n * plane;
        if (j->img_set) {
            float b = j->img_bias ? j->img_bias[0] : 0.0f;
            for (size_t e = 0; e < plane; e++)
                o[e] = b;
        }
        trans_image(g, d, cg, j->W, j->wq, buf, o);
    }
}
#endif

/* The job on every image; with part, then dW [OC, KK] += the images'
 * parts added in image order. Scratch slots for tg_get_threads() threads
 * (so the arena's size does not follow the adaptive thread count). */
static void direct_images(tg_tape *tp, const geom *g, const dlay *d,
                          const direct_job *job, float *dW)
{
#ifdef TG_GEMM_X86
    direct_job jj = *job, *j = &jj;
    if (j->img_out && grouped_phases(g, d)) {
        float *wq = scratch(tp, (size_t)d->KK, (size_t)g->OC);
        pack_grouped(g, d, j->W, wq);
        j->wq = wq;
    }
    int slots = tg_get_threads();
    slots = slots < 1 ? 1 : slots > g->N ? g->N : slots;
    if (g->N == 0)
        return;
    float *scr = scratch(tp, (size_t)slots, d->slot);
    int T = image_threads(g, (size_t)g->N * P_of(g) * g->OC * d->KK / 4);
    T = T > slots ? slots : T;
    if (T <= 1) {
        for (int n = 0; n < g->N; n++)
            direct_image(g, d, j, n, scr);
    } else {
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
        for (int t = 0; t < T; t++)
            for (int n = range_start(g->N, t, T);
                 n < range_start(g->N, t + 1, T); n++)
                direct_image(g, d, j, n, scr + (size_t)t * d->slot);
    }
    if (j->part && dW) {
        /* part[0] += part[n] for n in order, then dW += part[0] */
        size_t e_n = (size_t)g->OC * d->KK;
        float *p0 = j->part;
        for (int n = 1; n < g->N; n++) {
            const float *pn = j->part + (size_t)n * e_n;
            for (size_t e = 0; e < e_n; e++)
                p0[e] += pn[e];
        }
        for (size_t e = 0; e < e_n; e++)
            dW[e] += p0[e];
    }
#else
    (void)tp, (void)g, (void)d, (void)job, (void)dW;
#endif
}

/* ---- argument checks ----------------------------------------------------- */

static int arg_or_1(int v) { return v == 0 ? 1 : v; }

/* Kernel, stride, padding, dilation from W [*, *, kh, kw] and args; aborts
 * on bad values. x and W are 4-D. */
static geom geom_from(const char *op, const tg_tensor *x, const tg_tensor *W,
                      const tg_tensor *b, int b_size, const tg_conv2d_args *a)
{
    char sx[64], sw[64], sb[64];
    bool empty = false; /* only the batch may be empty */
    for (int d = 0; d < 4; d++)
        empty |= (d > 0 && x->shape[d] < 1) || W->shape[d] < 1;
    if (x->ndim != 4 || W->ndim != 4 || empty)
        tg_fatal(op,
                 "needs x [N, C, H, W] and a 4-D weight with no 0 dims "
                 "(but N), got x %s, W %s",
                 tg_shape_str(x, sx), tg_shape_str(W, sw));
    if (b && (b->size != (size_t)b_size))
        tg_fatal(op, "bias %s does not fit W %s (bias has %d elements)",
                 tg_shape_str(b, sb), tg_shape_str(W, sw), b_size);
    tg_conv2d_args d = a ? *a : (tg_conv2d_args){0};
    geom g = {.kh = W->shape[2], .kw = W->shape[3]};
    g.sh = arg_or_1(d.stride[0]), g.sw = arg_or_1(d.stride[1]);
    g.dh = arg_or_1(d.dilation[0]), g.dw = arg_or_1(d.dilation[1]);
    g.ph = d.padding[0], g.pw = d.padding[1];
    if (g.sh < 1 || g.sw < 1 || g.dh < 1 || g.dw < 1 || g.ph < 0 || g.pw < 0 ||
        d.output_padding[0] < 0 || d.output_padding[1] < 0)
        tg_fatal(op,
                 "stride (%d, %d), dilation (%d, %d), padding (%d, %d), "
                 "output padding (%d, %d): stride and dilation must be "
                 ">= 1, paddings >= 0",
                 d.stride[0], d.stride[1], d.dilation[0], d.dilation[1],
                 d.padding[0], d.padding[1], d.output_padding[0],
                 d.output_padding[1]);
    return g;
}

static void check_size(const char *op, const geom *g, const tg_tensor *x,
                       const tg_tensor *W, int oh, int ow)
{
    char sx[64], sw[64];
    if (oh < 1 || ow < 1)
        tg_fatal(op,
                 "x %s with W %s, stride (%d, %d), padding (%d, %d), "
                 "dilation (%d, %d) gives an output of %d x %d",
                 tg_shape_str(x, sx), tg_shape_str(W, sw), g->sh, g->sw, g->ph,
                 g->pw, g->dh, g->dw, oh, ow);
    if ((long)g->N * oh * ow > INT_MAX || (long)g->N * g->H * g->W > INT_MAX)
        tg_fatal(op, "x %s: too many output positions for one GEMM",
                 tg_shape_str(x, sx));
}

/* Output length along one axis, as PyTorch's Conv2d: floor((in + 2p -
 * d(k-1) - 1) / s) + 1, or <= 0 when the kernel does not fit. */
static int conv_len(int in, int k, int s, int p, int d)
{
    /* in 64 bits: a huge padding or dilation overflowed int (UB) */
    long long span = (long long)in + 2LL * p - (long long)d * (k - 1) - 1;
    long long len = span < 0 ? 0 : span / s + 1;
    return len > INT_MAX ? INT_MAX : (int)len;
}

/* conv_transpose2d's output length (in - 1)s - 2p + d(k-1) + op + 1, in
 * 64 bits, clamped to 0..INT_MAX (check_size refuses both ends). */
static int convt_len(int in, int k, int s, int p, int d, int op)
{
    long long len =
        (long long)(in - 1) * s - 2LL * p + (long long)d * (k - 1) + op + 1;
    return len < 0 ? 0 : len > INT_MAX ? INT_MAX : (int)len;
}

/* ---- conv2d -------------------------------------------------------------- */

typedef struct conv_saved {
    geom g;
    float *col;    /* conv2d's im2col [N*P, ldk], conv_transpose2d's x' (NULL
                    * on the direct path) */
    bool direct;   /* a one-channel image side: the direct kernels, laid out */
    dlay d;        /* as d */
    bool implicit; /* col read from the padded image (conv2d: col is it) */
} conv_saved;

/* y [N, OC, OH, OW] = conv(x [N, C, H, W], W [OC, C, kh, kw]) + b [OC].
 * With dy' = dy pixel-major [N*P, OC]:
 * dW [OC, K] += (col^T . dy')^T
 * dx         += col2im(dy' . W)
 * db [OC]    += sum over n, p of dy
 * Saved: col. */
/* The gradient of a convolution's input: written whole (fresh, see
 * grad_fresh) on the paths that write it, set to zeros first on those that
 * add into it (the direct kernels; an empty batch, which writes nothing). */
static float *conv_dx(tg_tape *tp, const tg_record *r, bool writes, bool *fresh)
{
    float *dx = grad_fresh(tp, r, 0, fresh);
    if (*fresh && !writes) {
        memset(dx, 0, r->in[0]->size * sizeof *dx);
        *fresh = false;
    }
    return dx;
}

static void conv2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P, ldk = ldk_of(g);
    bool fresh;
    float *dx = conv_dx(tp, r, NP > 0 && !s->direct, &fresh),
          *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    if (db)
        bias_backward(g->N, g->OC, P, dy, db);
    if (NP == 0)
        return;
    if (s->direct) {
        if (!dx && !dW)
            return;
        direct_job j = {
            .img = dW ? x->data : NULL,
            .col = dy,
            .W = W->data,
            .img_out = dx,
            .part =
                dW ? scratch(tp, (size_t)g->N, (size_t)g->OC * s->d.KK) : NULL};
        direct_images(tp, g, &s->d, &j, dW);
        return;
    }
    float *dyp = scratch(tp, (size_t)NP, (size_t)g->OC);
    to_pm(g->N, g->OC, P, dy, dyp);
    if (dW && s->implicit) {
        ilay l = ilay_of(g);
        implicit_wgrad(tp, g, &l, s->col, dyp, dW);
    } else if (dW) {
        float *tmp = scratch(tp, (size_t)K, (size_t)g->OC);
        tg_gemm(true, false, K, g->OC, NP, 1.0f, s->col, ldk, dyp, g->OC, 0.0f,
                tmp, g->OC);
        add_transposed(g->OC, K, tmp, dW);
    }
    if (dx && trans_ok(g)) /* fresh: written, not added to */
        implicit_trans(tp, g, dy, W->data, dx, fresh, NULL);
    else if (dx) /* fresh: each image's dx set to 0 while in cache */
        gemm_col2im(tp, g, dyp, W->data, ldk, dx, fresh, NULL);
}

tg_tensor *tg_conv2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                        const tg_conv2d_args *args)
{
    const char *op = "conv2d";
    check_inputs(op, x, W);
    geom g = geom_from(op, x, W, b, W->ndim == 4 ? W->shape[0] : 0, args);
    char sx[64], sw[64];
    if (x->shape[1] != W->shape[1])
        tg_fatal(op,
                 "x %s has %d channels, W %s takes %d (W is [out, in, "
                 "kh, kw])",
                 tg_shape_str(x, sx), x->shape[1], tg_shape_str(W, sw),
                 W->shape[1]);
    if (args && (args->output_padding[0] || args->output_padding[1]))
        tg_fatal(op, "output padding is for conv_transpose2d");
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.OC = W->shape[0];
    g.OH = conv_len(g.H, g.kh, g.sh, g.ph, g.dh);
    g.OW = conv_len(g.W, g.kw, g.sw, g.pw, g.dw);
    check_size(op, &g, x, W, g.OH, g.OW);
    int P = P_of(&g), NP = g.N * P, ldk = ldk_of(&g);
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.OC, g.OH, g.OW});
    dlay d = {0};
    bool direct = direct_layout(&g, &d);
    bool implicit = !direct && implicit_ok(&g);
    ilay l = ilay_of(&g);
    float *col = direct     ? NULL
                 : implicit ? scratch(tp, (size_t)g.N, l.image)
                            : scratch(tp, (size_t)NP, (size_t)ldk);
    if (implicit && NP > 0) {
        pad_images(&g, &l, x->data, col);
        nchw_out o = {y->data, b ? b->data : NULL,
                      scratch(tp, (size_t)NP, (size_t)g.OC), NULL};
        implicit_fwd(tp, &g, &l, col, W->data, &o);
    } else if (direct && NP > 0) {
        direct_job j = {.img = x->data,
                        .W = W->data,
                        .col_out = y->data,
                        .col_bias = b ? b->data : NULL};
        direct_images(tp, &g, &d, &j, NULL);
    } else if (NP > 0) {
        float *yp = scratch(tp, (size_t)NP, (size_t)g.OC);
        nchw_out o = {y->data, b ? b->data : NULL, yp, NULL};
        im2col_gemm(&g, x->data, col, ldk, W->data, &o);
    }
    tg_tensor *in[] = {x, W, b};
    tg_record *r = record(tp, op, conv2d_backward, y, b ? 3 : 2, in);
    if (r) {
        conv_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->g = g;
        s->col = col;
        s->direct = direct;
        s->d = d;
        s->implicit = implicit;
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_conv2d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation)
{
    tg_conv2d_args a = {
        {stride, stride}, {padding, padding}, {dilation, dilation}, {0, 0}};
    return tg_conv2d_ex(tp, x, W, b, &a);
}

/* ---- conv_transpose2d -------------------------------------------------------
 * The adjoint of conv2d with W [C_in, C_out, kh, kw] read as a conv2d
 * weight [out = C_in, in = C_out, kh, kw]: the image side is y, the column
 * side x. Output length (PyTorch's ConvTranspose2d):
 *   (in - 1)*s - 2p + d(k-1) + output_padding + 1. */

/* y [N, C_out, OH, OW] = col2im(x' . W) + b [C_out], x' = x pixel-major
 * [N*P, C_in], W as [C_in, K].
 * dx' [N*P, C_in] += im2col(dy) . W^T
 * dW [C_in, K]    += (im2col(dy)^T . x')^T
 * db [C_out]      += sum over n, p of dy
 * Saved: x'. */
static void conv_transpose2d_backward(tg_tape *tp, tg_record *r)
{
    const conv_saved *s = r->saved;
    const geom *g = &s->g;
    tg_tensor *x = r->in[0], *W = r->in[1];
    int K = K_of(g), P = P_of(g), NP = g->N * P, ldk = ldk_of(g);
    bool fresh;
    float *dx = conv_dx(tp, r, NP > 0 && !s->direct, &fresh),
          *dW = grad_of(tp, W);
    float *db = r->n_in == 3 ? grad_of(tp, r->in[2]) : NULL;
    const float *dy = r->out->grad;
    if (db)
        bias_backward(g->N, g->C, g->H * g->W, dy, db);
    if (NP == 0)
        return;
    if (s->direct) {
        if (!dx && !dW)
            return;
        direct_job j = {
            .img = dy,
            .col = dW ? x->data : NULL,
            .W = W->data,
            .col_out = dx,
            .col_add = true,
            .part =
                dW ? scratch(tp, (size_t)g->N, (size_t)g->OC * s->d.KK) : NULL};
        direct_images(tp, g, &s->d, &j, dW);
        return;
    }
    if (s->implicit) { /* im2col(dy) read from dy padded */
        ilay l = ilay_of(g);
        float *xp = scratch(tp, (size_t)g->N, l.image);
        pad_images(g, &l, dy, xp);
        if (dx) { /* fresh: dx written, not added to */
            nchw_out o = {dx, NULL, scratch(tp, (size_t)NP, (size_t)g->OC),
                          fresh ? NULL
                                : scratch(tp, (size_t)NP, (size_t)g->OC)};
            implicit_fwd(tp, g, &l, xp, W->data, &o);
        }
        if (dW)
            implicit_wgrad(tp, g, &l, xp, s->col, dW);
        return;
    }
    float *dcol = scratch(tp, (size_t)NP, (size_t)ldk);
    if (dx) { /* im2col(dy) and dx' by chunks, as conv2d's forward */
        float *dxp = scratch(tp, (size_t)NP, (size_t)g->OC);
        nchw_out o = {dx, NULL, dxp,
                      fresh ? NULL : scratch(tp, (size_t)NP, (size_t)g->OC)};
        im2col_gemm(g, dy, dcol, ldk, W->data, &o);
    } else {
        im2col(g, dy, dcol, ldk);
    }
    if (dW) {
        float *tmp = scratch(tp, (size_t)K, (size_t)g->OC);
        tg_gemm(true, false, K, g->OC, NP, 1.0f, dcol, ldk, s->col, g->OC, 0.0f,
                tmp, g->OC);
        add_transposed(g->OC, K, tmp, dW);
    }
}

tg_tensor *tg_conv_transpose2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                                  tg_tensor *b, const tg_conv2d_args *args)
{
    const char *op = "conv_transpose2d";
    check_inputs(op, x, W);
    geom g = geom_from(op, x, W, b, W->ndim == 4 ? W->shape[1] : 0, args);
    char sx[64], sw[64];
    if (x->shape[1] != W->shape[0])
        tg_fatal(op,
                 "x %s has %d channels, W %s takes %d (W is [in, out, "
                 "kh, kw])",
                 tg_shape_str(x, sx), x->shape[1], tg_shape_str(W, sw),
                 W->shape[0]);
    int oph = args ? args->output_padding[0] : 0;
    int opw = args ? args->output_padding[1] : 0;
    if ((oph >= g.sh && oph >= g.dh) || (opw >= g.sw && opw >= g.dw))
        tg_fatal(op,
                 "output padding (%d, %d) must be smaller than the "
                 "stride (%d, %d) or the dilation (%d, %d)",
                 oph, opw, g.sh, g.sw, g.dh, g.dw);
    g.N = x->shape[0], g.OC = x->shape[1];
    g.OH = x->shape[2], g.OW = x->shape[3];
    g.C = W->shape[1];
    g.H = convt_len(g.OH, g.kh, g.sh, g.ph, g.dh, oph);
    g.W = convt_len(g.OW, g.kw, g.sw, g.pw, g.dw, opw);
    check_size(op, &g, x, W, g.H, g.W);
    int P = P_of(&g), NP = g.N * P, ldk = ldk_of(&g);
    tg_tensor *y = out_tensor(tp, 4, (int[]){g.N, g.C, g.H, g.W});
    dlay d = {0};
    bool direct = direct_layout(&g, &d);
    float *xp = direct ? NULL : scratch(tp, (size_t)NP, (size_t)g.OC);
    if (direct && NP > 0) {
        direct_job j = {.col = x->data,
                        .W = W->data,
                        .img_out = y->data,
                        .img_bias = b ? b->data : NULL,
                        .img_set = true};
        direct_images(tp, &g, &d, &j, NULL);
    } else if (NP > 0) { /* y = b (or 0) + col2im(x' . W), image by image */
        to_pm(g.N, g.OC, P, x->data, xp);
        if (trans_ok(&g))
            implicit_trans(tp, &g, x->data, W->data, y->data, true,
                           b ? b->data : NULL);
        else
            gemm_col2im(tp, &g, xp, W->data, ldk, y->data, true,
                        b ? b->data : NULL);
    }
    tg_tensor *in[] = {x, W, b};
    tg_record *r = record(tp, op, conv_transpose2d_backward, y, b ? 3 : 2, in);
    if (r) {
        conv_saved *s = tg_tape_alloc(tp, sizeof *s);
        s->g = g;
        s->col = xp;
        s->direct = direct;
        s->d = d;
        s->implicit = !direct && implicit_ok(&g);
        r->saved = s;
    }
    return y;
}

tg_tensor *tg_conv_transpose2d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation)
{
    tg_conv2d_args a = {{stride, stride},
                        {padding, padding},
                        {dilation, dilation},
                        {output_padding, output_padding}};
    return tg_conv_transpose2d_ex(tp, x, W, b, &a);
}

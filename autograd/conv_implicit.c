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
#include "conv_internal.h"

#ifdef TG_GEMM_X86
#include <immintrin.h>
#endif

#include <limits.h>
#include <string.h>

bool conv_implicit_ok(const geom *g)
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

/* One padded plane d [Hq][Wq] from s [H][W]: zeroed whole, rows copied
 * in (one call per row: zeroing each row's few padding floats apart cost
 * two more calls per row, 3% of the conv VAE's step). */
static void pad_plane(const geom *g, const ilay *l, const float *s, float *d)
{
    if (g->ph || g->pw)
        memset(d, 0, l->plane * sizeof *d);
    d += (size_t)g->ph * l->Wq + g->pw;
    for (int h = 0; h < g->H; h++, d += l->Wq, s += g->W)
        memcpy(d, s, (size_t)g->W * sizeof *d);
}

/* xp (all images) from x [N, C, H, W]. */
void conv_pad_images(const geom *g, const ilay *l, const float *x, float *xp)
{
    const size_t plane = (size_t)g->H * g->W;
    TG_PARALLEL_FOR((size_t)g->N * g->C, l->plane)
    for (long nc = 0; nc < (long)g->N * g->C; nc++)
        pad_plane(g, l, x + (size_t)nc * plane, xp + (size_t)nc * l->plane);
}

void conv_pad_images_relu(const geom *g, const ilay *l, const float *y,
                          const float *dy, float *xp, double *sums)
{
    const size_t plane = (size_t)g->H * g->W;
    TG_PARALLEL_FOR((size_t)g->N * g->C, l->plane)
    for (long nc = 0; nc < (long)g->N * g->C; nc++) {
        float m[PAD_RELU_MAX]; /* the plane's gradient, in L1 */
        conv_relu_plane((int)plane, y + (size_t)nc * plane,
                        dy + (size_t)nc * plane, m, sums ? sums + nc : NULL);
        pad_plane(g, l, m, xp + (size_t)nc * l->plane);
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

int conv_block_images(int N, int pix)
{
    int G = CONV_BLOCK_ROWS / (pix > 0 ? pix : 1);
    return G < 1 ? 1 : G > N ? N : G;
}

#ifdef TG_GEMM_X86
void conv_implicit_rows(const float *const *a, int rows, const float *wp,
                        const int *off, int K, int NC, float *pm,
                        float *const *dr)
{
    (implicit_512() ? rows_512 : rows_avx2)(a, rows, wp, off, K, NC, pm, dr);
}
#endif

/* a[q] for the pixels q of images [n0, n0 + rows / P) of xp (rows
 * rounded up to a whole tile with the last row). */
static void fwd_bases(const geom *g, const ilay *l, const float *xp, int n0,
                      int rows, const float **a)
{
    const int P = P_of(g);
    for (int q = 0; q < rows + CONV_TILE_MAX; q++) {
        int qq = q < rows ? q : rows - 1, p = qq % P;
        a[q] = xp + (size_t)(n0 + qq / P) * l->image +
               (size_t)(p / g->OW) * g->sh * l->Wq +
               (size_t)(p % g->OW) * g->sw;
    }
}

/* y [N, OC, OH, OW] (+)= col(xp) . W^T as o says (o->pm: [N*P, OC]
 * scratch, each thread using a block's rows at the start of its range). */
void conv_implicit_fwd(tg_tape *tp, const geom *g, const ilay *l,
                       const float *xp, const float *W, const nchw_out *o)
{
#ifdef TG_GEMM_X86
    const float *wp = w_panels(tp, g, W);
    const int *off = k_offsets(tp, g, l);
    const int P = P_of(g), OC = g->OC, K = K_of(g);
    const int G = conv_block_images(g->N, P);
    int T = image_threads(g, (size_t)g->N * P * K);
    if (T < 1)
        T = 1;
    const size_t per = (size_t)G * P + CONV_TILE_MAX;
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
                conv_pm_to_nchw(OC, P, pm + (size_t)(n - c0) * P * OC, o->bias,
                                o->relu, tmp, o->y + (size_t)n * OC * P);
        }
    }
#else
    (void)tp, (void)g, (void)l, (void)xp, (void)W, (void)o;
#endif
}

/* dW [OC, K] += (col(xp)^T . dy')^T, dy' given in panels dpan (see
 * conv_internal.h). Threads take ranges of 6-row tiles of dW^T; each runs
 * every block of images in order. */
void conv_implicit_wgrad(tg_tape *tp, const geom *g, const ilay *l,
                         const float *xp, const float *dpan, float *dW)
{
#ifdef TG_GEMM_X86
    const int K = K_of(g), P = P_of(g);
    const int *off = k_offsets(tp, g, l);
    float *dWt = scratch(tp, (size_t)K, (size_t)g->OC);
    const int G = conv_block_images(g->N, P);
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
    conv_add_transposed(g->OC, K, dWt, dW);
#else
    (void)tp, (void)g, (void)l, (void)xp, (void)dpan, (void)dW;
#endif
}

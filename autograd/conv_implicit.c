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
void conv_implicit_fwd(tg_tape *tp, const geom *g, const ilay *l,
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
    const int G = block_images(g->N, P);
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

bool conv_trans_ok(const geom *g)
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

/* out [N, C, H, W] = bias (or 0) + col2im(in . W) with set (then max(0, .)
 * with relu), else out += col2im(in . W); in [N, OC, OH, OW] NCHW,
 * W [OC, C, kh, kw]. */
void conv_implicit_trans(tg_tape *tp, const geom *g, const float *in,
                         const float *W, float *out, bool set,
                         const float *bias, bool relu)
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
                conv_pm_to_nchw(
                    g->C, g->H * g->W, ob + (size_t)(n - c0) * out_image,
                    set ? bias : NULL, set && relu, tmp, out + n * out_image);
        }
    }
#else
    (void)tp, (void)g, (void)in, (void)W, (void)out, (void)set, (void)bias,
        (void)relu;
#endif
}

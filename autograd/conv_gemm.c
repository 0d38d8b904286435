/* Convolutions through the GEMM: im2col / col2im in patch rows (see the
 * layout in ops_conv.c), a few images at a time. */
#include "conv_internal.h"
#include "vmath.h"

#include <string.h>

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
void conv_im2col(const geom *g, const float *x, float *col, int ldk)
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

/* y += b, then with relu y = max(0, y): the two roundings of y + b and
 * tg_relu's rule, in one pass. */
/* y = max(0, y) as tg_relu (x < 0 ? 0 : x: NaN stays NaN). The clones
 * are static (clang takes target_clones only on a function's first
 * declaration, and the header's has none); the wrapper is conv_relu. */
TG_VECTOR_CLONES
static void relu_clones(float *y, size_t n)
{
    for (size_t e = 0; e < n; e++)
        y[e] = y[e] < 0.0f ? 0.0f : y[e];
}

void conv_relu(float *y, size_t n) { relu_clones(y, n); }

TG_VECTOR_CLONES
static void bias_relu(float *y, size_t n, float b, bool relu)
{
    if (!relu) {
        for (size_t e = 0; e < n; e++)
            y[e] += b;
        return;
    }
    for (size_t e = 0; e < n; e++) {
        float v = y[e] + b;
        y[e] = v < 0.0f ? 0.0f : v;
    }
}

/* One image's nchw [C, P] = pm [P, C] + bias[c] (bias may be NULL), then
 * max(0, .) with relu; or with tmp [C, P], nchw += pm transposed (through
 * tmp; relu must be false). */
void conv_pm_to_nchw(int C, int P, const float *pm, const float *bias,
                     bool relu, float *tmp, float *nchw)
{
    if (tmp) {
        gemm_transpose(pm, C, P, C, tmp, P);
        for (size_t e = 0; e < (size_t)C * P; e++)
            nchw[e] += tmp[e];
        return;
    }
    gemm_transpose(pm, C, P, C, nchw, P);
    for (int c = 0; bias && c < C; c++) /* + bias, then the ReLU, in one */
        bias_relu(nchw + (size_t)c * P, (size_t)P, bias[c], relu);
    if (relu && !bias)
        conv_relu(nchw, (size_t)C * P);
}

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
            conv_pm_to_nchw(OC, P, pm + (size_t)(n - c0) * P * OC, o->bias,
                            o->relu, tmp, o->y + (size_t)n * OC * P);
    }
}

/* col = conv_im2col(x) (all images, kept for backward) and
 * y [N, OC, OH, OW] (+)= col . W^T, W [OC, K], as o says. */
void conv_im2col_gemm(const geom *g, const float *x, float *col, int ldk,
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
                              const float *bias, bool relu, int n0, int n1)
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
            if (init && relu)
                conv_relu(dx + (size_t)n * g->C * plane, g->C * plane);
        }
    }
}

/* dx [N, C, H, W] += col2im(in . W), in [N*P, OC], W [OC, K]; with init,
 * dx = bias (or 0) + col2im(in . W), then max(0, .) with relu. The tape
 * buffer is sized for all rows however many threads run (each touches
 * only a chunk's pages at the start of its range), so the arena does not
 * change size with the thread count. */
void conv_gemm_col2im(tg_tape *tp, const geom *g, const float *in,
                      const float *W, int ldk, float *dx, bool init,
                      const float *bias, bool relu)
{
    const int P = P_of(g);
    float *col = tg_tape_alloc(tp, (size_t)g->N * P * ldk * sizeof(float));
    int T = image_threads(g, (size_t)g->N * P * K_of(g));
    if (T <= 1) {
        gemm_col2im_range(g, in, W, ldk, col, dx, init, bias, relu, 0, g->N);
        return;
    }
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int t = 0; t < T; t++) {
        int n0 = range_start(g->N, t, T), n1 = range_start(g->N, t + 1, T);
        gemm_col2im_range(g, in, W, ldk, col + (size_t)n0 * P * ldk, dx, init,
                          bias, relu, n0, n1);
    }
}

/* pm [N*P, C] = nchw [N, C, P] (pixel-major: a transpose per image). */
void conv_to_pm(int N, int C, int P, const float *nchw, float *pm)
{
    TG_PARALLEL_FOR(N, (size_t)C * P)
    for (int n = 0; n < N; n++)
        gemm_transpose(nchw + (size_t)n * C * P, P, C, P,
                       pm + (size_t)n * P * C, C);
}

/* pan [C/16][N*P][16] = nchw [N, C, P], C a multiple of 16: pixel-major
 * in 16-channel panels, the implicit dW's layout (a transpose per image
 * and panel). */
void conv_to_panels(int N, int C, int P, const float *nchw, float *pan)
{
    const size_t NP = (size_t)N * P;
    TG_PARALLEL_FOR(N, (size_t)C * P)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c += 16)
            gemm_transpose(nchw + ((size_t)n * C + c) * P, P, 16, P,
                           pan + ((size_t)c * NP + (size_t)n * P * 16), 16);
}

/* dW [OC, K] += tmp [K, OC] transposed. */
void conv_add_transposed(int OC, int K, const float *tmp, float *dW)
{
    for (int o = 0; o < OC; o++)
        for (int k = 0; k < K; k++)
            dW[(size_t)o * K + k] += tmp[(size_t)k * OC + o];
}

/* db[c] += sum over n, p of dy [N, C, P]: each image's row by vsum_f64
 * (double, a fixed order, vectorised), the rows added in order in double.
 * In float, a [5, 7, 48, 50] gradient's 12,000-term sums were 1.2e-4 off
 * (bench/conv_check_dump 3000 2; tests/autograd/test_conv_bits.c). */
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

void conv_bias_backward(int N, int C, int P, const float *dy, float *db)
{
    TG_PARALLEL_FOR((C + BIAS_CB - 1) / BIAS_CB, (size_t)N * P * BIAS_CB)
    for (int c0 = 0; c0 < C; c0 += BIAS_CB)
        bias_block(N, C, P, c0, C - c0 < BIAS_CB ? C - c0 : BIAS_CB, dy, db);
}

/* A fused ReLU's gradient over one channel plane: m = dy where y > 0,
 * else 0, and with sum, *sum = vsum_f64(m) (conv_bias_backward's row sum)
 * while m is in L1. */
TG_VECTOR_CLONES
static void relu_plane_clones(int P, const float *y, const float *dy, float *m,
                              double *sum)
{
    for (int p = 0; p < P; p++)
        m[p] = y[p] <= 0.0f ? 0.0f : dy[p];
    if (sum)
        *sum = vsum_f64(m, P);
}

void conv_relu_plane(int P, const float *y, const float *dy, float *m,
                     double *sum)
{
    relu_plane_clones(P, y, dy, m, sum);
}

void conv_bias_from_sums(int N, int C, const double *sums, float *db)
{
    for (int c = 0; c < C; c++) { /* bias_block's order: images in order */
        double s = 0.0;
        for (int n = 0; n < N; n++)
            s += sums[(size_t)n * C + c];
        db[c] += (float)s;
    }
}

void conv_relu_backward(int N, int C, int P, const float *y, const float *dy,
                        float *m, double *sums, float *pm, bool panels)
{
    const size_t NP = (size_t)N * P;
    TG_PARALLEL_FOR(N, (size_t)C * P)
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * C * P;
        for (int c = 0; c < C; c++)
            conv_relu_plane(P, y + o + (size_t)c * P, dy + o + (size_t)c * P,
                            m + o + (size_t)c * P,
                            sums ? sums + (size_t)n * C + c : NULL);
        /* the image's pixel-major copy while it is in cache */
        if (pm && panels)
            for (int c = 0; c < C; c += 16)
                gemm_transpose(m + o + (size_t)c * P, P, 16, P,
                               pm + ((size_t)c * NP + (size_t)n * P * 16), 16);
        else if (pm)
            gemm_transpose(m + o, P, C, P, pm + o, C);
    }
}

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
 * any thread count. AVX2+FMA, or AVX-512 when the avx512 GEMM kernel is
 * chosen: 16 outputs per vector, the same FMA chain for each output (corr
 * and trans give the AVX2 forms' bits; wgrad's lanes are summed 16 at a
 * time, so its bits differ from the AVX2 form's in rounding). With the
 * portable GEMM kernel the convolutions take the im2col path. */
#include "conv_internal.h"

#ifdef TG_GEMM_X86
#include <immintrin.h>
#endif

#include <limits.h>
#include <string.h>

enum { CORR_V = 3, TRANS_V = 3, DIRECT_MAX_TAPS = 1024 };

static size_t round8(size_t v) { return (v + 7) / 8 * 8; }

/* The layout for g, false when the direct kernels do not apply: an image
 * side of more than one channel, no AVX2 and FMA, the portable GEMM kernel
 * chosen, or planes too large. */
bool conv_direct_layout(const geom *g, dlay *d)
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
    d->wide = strcmp(tg_gemm_kernel(), "avx512") == 0;
    /* whole blocks of the kernels: CORR_V / TRANS_V vectors of 8 or 16 */
    long long lanes = d->wide ? 16 : 8, bf = lanes * CORR_V,
              bt = lanes * TRANS_V;
    d->Lf = (int)((lf + bf - 1) / bf * bf);
    d->Lt = (int)((lt + bt - 1) / bt * bt);
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
 * oc*CS, F zeros, then rows of Wp (OW values, zeros), zeros to CS. With y
 * (a fused ReLU's output), c where y > 0, else 0, each plane's vsum_f64
 * into sums[oc] (planes of at most PAD_RELU_MAX floats). */
static void fill_cols(const geom *g, const dlay *d, const float *c,
                      const float *y, double *sums, float *cg)
{
    const size_t P = (size_t)g->OH * g->OW;
    for (int oc = 0; oc < g->OC; oc++) {
        float *p = cg + (size_t)oc * d->CS;
        const float *s = c + (size_t)oc * P;
        float m[PAD_RELU_MAX]; /* the masked plane, in L1 */
        if (y) {
            conv_relu_plane((int)P, y + (size_t)oc * P, s, m,
                            sums ? sums + oc : NULL);
            s = m;
        }
        memset(p, 0, d->CS * sizeof *p); /* one call, not two per row */
        p += d->F;
        for (int oh = 0; oh < g->OH; oh++, p += d->Wp, s += g->OW)
            memcpy(p, s, (size_t)g->OW * sizeof *p);
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

/* corr_block, 16 outputs per vector. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
corr_block_512(const int NB, const dlay *d, const float *planes, const int *src,
               const float *w, float *buf)
{
    const int KK = d->KK, Lf = d->Lf;
    for (int t0 = 0; t0 < Lf; t0 += 16 * CORR_V) {
        __m512 acc[4][CORR_V];
        for (int c = 0; c < NB; c++)
            for (int v = 0; v < CORR_V; v++)
                acc[c][v] = _mm512_setzero_ps();
        for (int k = 0; k < KK; k++) {
            const float *s = planes + src[k] + t0;
            __m512 x[CORR_V];
            for (int v = 0; v < CORR_V; v++)
                x[v] = _mm512_loadu_ps(s + 16 * v);
            for (int c = 0; c < NB; c++) {
                __m512 wv = _mm512_set1_ps(w[(size_t)c * KK + k]);
                for (int v = 0; v < CORR_V; v++)
                    acc[c][v] = _mm512_fmadd_ps(x[v], wv, acc[c][v]);
            }
        }
        for (int c = 0; c < NB; c++)
            for (int v = 0; v < CORR_V; v++)
                _mm512_storeu_ps(buf + (size_t)c * Lf + t0 + 16 * v, acc[c][v]);
    }
}

/* corr of NB (4 or 1) output channels in the layout's vector width. */
__attribute__((target("avx2,fma"))) static void
corr_blocks_avx2(int NB, const dlay *d, const float *planes, const int *src,
                 const float *w, float *buf)
{
    if (NB == 4)
        corr_block(4, d, planes, src, w, buf);
    else
        corr_block(1, d, planes, src, w, buf);
}

__attribute__((target("avx512f,fma"))) static void
corr_blocks_512(int NB, const dlay *d, const float *planes, const int *src,
                const float *w, float *buf)
{
    if (NB == 4)
        corr_block_512(4, d, planes, src, w, buf);
    else
        corr_block_512(1, d, planes, src, w, buf);
}

/* out [OC, OH, OW] = corr + bias[oc] (bias may be NULL), or += corr. */
static void corr_image(const geom *g, const dlay *d, const float *planes,
                       const int *src, const float *W, const float *bias,
                       bool add, float *buf, float *out)
{
    for (int oc = 0; oc < g->OC;) {
        int nb = g->OC - oc >= 4 ? 4 : 1;
        const float *w = W + (size_t)oc * d->KK;
        if (d->wide)
            corr_blocks_512(nb, d, planes, src, w, buf);
        else
            corr_blocks_avx2(nb, d, planes, src, w, buf);
        for (int c = 0; c < nb; c++, oc++) {
            const float *s = buf + (size_t)c * d->Lf;
            float *o = out + (size_t)oc * g->OH * g->OW;
            /* set: s + 0 without a bias, the bits of 0 + s added into a
             * zeroed output (a -0 becomes +0 either way) */
            float b = bias ? bias[oc] : 0.0f;
            for (int oh = 0; oh < g->OH; oh++, s += d->Wp, o += g->OW) {
                if (add)
                    for (int ow = 0; ow < g->OW; ow++)
                        o[ow] += s[ow];
                else
                    for (int ow = 0; ow < g->OW; ow++)
                        o[ow] = s[ow] + b;
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

/* wgrad_block, 16 products per vector. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
wgrad_block_512(const int NB, const int NT, const dlay *d, const float *cg,
                const float *planes, const int *src, int k0, float *part)
{
    __m512 acc[4][2];
    for (int c = 0; c < NB; c++)
        for (int k = 0; k < NT; k++)
            acc[c][k] = _mm512_setzero_ps();
    const float *xs[2];
    for (int k = 0; k < NT; k++)
        xs[k] = planes + src[k0 + k];
    const int Lf = d->Lf;
    const size_t CS = d->CS;
    for (int t = 0; t < Lf; t += 16) {
        __m512 x[2];
        for (int k = 0; k < NT; k++)
            x[k] = _mm512_loadu_ps(xs[k] + t);
        for (int c = 0; c < NB; c++) {
            __m512 dv = _mm512_loadu_ps(cg + c * CS + t);
            for (int k = 0; k < NT; k++)
                acc[c][k] = _mm512_fmadd_ps(dv, x[k], acc[c][k]);
        }
    }
    for (int c = 0; c < NB; c++)
        for (int k = 0; k < NT; k++) /* halves, then hsum8's order */
            part[(size_t)c * d->KK + k0 + k] =
                hsum8(_mm256_add_ps(_mm512_castps512_ps256(acc[c][k]),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(
                                        _mm512_castps_pd(acc[c][k]), 1))));
}

/* wgrad of NB (4 or 1) channels and NT (2 or 1) taps in the layout's
 * vector width. */
__attribute__((target("avx2,fma"))) static void
wgrad_blocks_avx2(int NB, int NT, const dlay *d, const float *c,
                  const float *planes, const int *src, int k, float *p)
{
    if (NB == 4 && NT == 2)
        wgrad_block(4, 2, d, c, planes, src, k, p);
    else if (NB == 4)
        wgrad_block(4, 1, d, c, planes, src, k, p);
    else if (NT == 2)
        wgrad_block(1, 2, d, c, planes, src, k, p);
    else
        wgrad_block(1, 1, d, c, planes, src, k, p);
}

__attribute__((target("avx512f,fma"))) static void
wgrad_blocks_512(int NB, int NT, const dlay *d, const float *c,
                 const float *planes, const int *src, int k, float *p)
{
    if (NB == 4 && NT == 2)
        wgrad_block_512(4, 2, d, c, planes, src, k, p);
    else if (NB == 4)
        wgrad_block_512(4, 1, d, c, planes, src, k, p);
    else if (NT == 2)
        wgrad_block_512(1, 2, d, c, planes, src, k, p);
    else
        wgrad_block_512(1, 1, d, c, planes, src, k, p);
}

/* part [OC, KK] = one image's wgrad; cg is its column grid (past F). */
static void wgrad_image(const geom *g, const dlay *d, const float *cg,
                        const float *planes, const int *src, float *part)
{
    for (int oc = 0; oc < g->OC;) {
        int nb = g->OC - oc >= 4 ? 4 : 1;
        const float *c = cg + (size_t)oc * d->CS;
        float *p = part + (size_t)oc * d->KK;
        for (int k = 0; k < d->KK;) {
            int nt = d->KK - k >= 2 ? 2 : 1;
            if (d->wide)
                wgrad_blocks_512(nb, nt, d, c, planes, src, k, p);
            else
                wgrad_blocks_avx2(nb, nt, d, c, planes, src, k, p);
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

/* The four grouped phases' grid values into buf [4, Lt] (trans_image). */
__attribute__((target("avx2,fma"))) static void
trans_grouped_avx2(const geom *g, const dlay *d, const float *cg,
                   const float *wq, float *buf)
{
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
}

/* trans_grouped_avx2, 16 outputs per vector. */
__attribute__((target("avx512f,fma"))) static void
trans_grouped_512(const geom *g, const dlay *d, const float *cg,
                  const float *wq, float *buf)
{
    int S = (d->amax + 1) * (d->bmax + 1);
    for (int t0 = 0; t0 < d->Lt; t0 += 16 * TRANS_V) {
        __m512 acc[4][TRANS_V];
        for (int q = 0; q < 4; q++)
            for (int v = 0; v < TRANS_V; v++)
                acc[q][v] = _mm512_setzero_ps();
        const float *w = wq;
        for (int sh = 0; sh < S; sh++) {
            int shift = sh / (d->bmax + 1) * d->Wp + sh % (d->bmax + 1);
            const float *s = cg + d->F - shift + t0;
            for (int oc = 0; oc < g->OC; oc++, s += d->CS, w += 4) {
                __m512 x[TRANS_V];
                for (int v = 0; v < TRANS_V; v++)
                    x[v] = _mm512_loadu_ps(s + 16 * v);
                for (int q = 0; q < 4; q++) {
                    __m512 wv = _mm512_set1_ps(w[q]);
                    for (int v = 0; v < TRANS_V; v++)
                        acc[q][v] = _mm512_fmadd_ps(x[v], wv, acc[q][v]);
                }
            }
        }
        for (int q = 0; q < 4; q++)
            for (int v = 0; v < TRANS_V; v++)
                _mm512_storeu_ps(buf + (size_t)q * d->Lt + t0 + 16 * v,
                                 acc[q][v]);
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
        if (d->wide)
            trans_grouped_512(g, d, cg, wq, buf);
        else
            trans_grouped_avx2(g, d, cg, wq, buf);
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
 * counting suffices). */
static bool grouped_phases(const geom *g, const dlay *d)
{
    int S = (d->amax + 1) * (d->bmax + 1), count[4] = {0};
    if (d->P != 4)
        return false;
    for (int k = 0; k < d->KK; k++)
        count[tap_phase(g, k)]++;
    return count[0] == S && count[1] == S && count[2] == S && count[3] == S;
}

/* wq [shift][oc][phase] from W [OC, KK], for grouped phases. */
static void pack_grouped(const geom *g, const dlay *d, const float *W,
                         float *wq)
{
    for (int k = 0; k < d->KK; k++) {
        int i = k / g->kw, j = k % g->kw;
        int sh = i * g->dh / g->sh * (d->bmax + 1) + j * g->dw / g->sw;
        int r = tap_phase(g, k);
        for (int oc = 0; oc < g->OC; oc++)
            wq[((size_t)sh * g->OC + oc) * 4 + r] = W[(size_t)oc * d->KK + k];
    }
}
#endif

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
        fill_cols(g, d, j->col + n * P * g->OC,
                  j->col_y ? j->col_y + n * P * g->OC : NULL,
                  j->col_sums ? j->col_sums + (size_t)n * g->OC : NULL, cg);
    if (j->col_out) {
        corr_image(g, d, planes, src, j->W, j->col_bias, j->col_add, buf,
                   j->col_out + n * P * g->OC);
        if (j->relu && !j->col_add)
            conv_relu(j->col_out + n * P * g->OC, P * g->OC);
    }
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
        if (j->relu && j->img_set)
            conv_relu(o, plane);
    }
}
#endif

/* The job on every image; with part, then dW [OC, KK] += the images'
 * parts added in image order. Scratch slots for tg_get_threads() threads
 * (so the arena's size does not follow the adaptive thread count). */
void conv_direct_images(tg_tape *tp, const geom *g, const dlay *d,
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

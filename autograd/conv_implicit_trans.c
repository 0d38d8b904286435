/* conv2d's input gradient and conv_transpose2d's forward as implicit GEMMs
 * over the stride phases of the image side, with the tiles of
 * conv_implicit.c (AVX2 / AVX-512, image channels a multiple of 16). */
#include "conv_internal.h"

#include <limits.h>
#include <string.h>

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
    for (int q = 0; q < rows + CONV_TILE_MAX; q++) {
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
    for (int q = 0; q < rows + CONV_TILE_MAX; q++) {
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
    const int G = conv_block_images(g->N, t.max_pix);
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
                 nb = (size_t)G * t.max_pix + CONV_TILE_MAX;
    float *buf = scratch(tp, (size_t)T, per);
    const float **bases = tg_tape_alloc(tp, T * nb * sizeof *bases);
    float **outs = tg_tape_alloc(tp, T * nb * sizeof *outs);
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
                conv_implicit_rows(a, rows, f->wp, f->off, f->K, g->C, NULL, d);
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

/* Private to the convolutions: the geometry both ops share and the three
 * ways their products are computed, each in its own file:
 *   conv_gemm.c      im2col / col2im around the GEMM (any shape, any CPU);
 *   conv_implicit.c  implicit GEMM tiles reading the padded image (AVX2 /
 *                    AVX-512, output channels a multiple of 16);
 *   conv_implicit_trans.c  the transposed products gathered by stride
 *                    phase, with those tiles (image channels a multiple
 *                    of 16);
 *   conv_direct.c    direct kernels for a one-channel image side (AVX2 /
 *                    AVX-512);
 * and ops_conv.c, the ops themselves, which choose among them (ops_conv1d.c
 * adds the 1-D ops over them). */
#ifndef TG_CONV_INTERNAL_H
#define TG_CONV_INTERNAL_H

#include "gemm_internal.h"
#include "parallel.h"
#include "tape.h"

#include <stdbool.h>
#include <stddef.h>

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* The image side [N, C, H, W] and the column side [N, OC, OH, OW], joined
 * by a kernel kh x kw with stride, padding and dilation (ops_conv.c). */
typedef struct geom {
    int N, C, H, W; /* image side */
    int OC, OH, OW; /* column side */
    int kh, kw, sh, sw, ph, pw, dh, dw;
} geom;

static inline int K_of(const geom *g) { return g->C * g->kh * g->kw; }
static inline int P_of(const geom *g) { return g->OH * g->OW; }

/* Row stride of col: K rounded up to 8 floats, plus 16 when that is a
 * multiple of 128 floats (rows 512 bytes apart alias in L1). */
static inline int ldk_of(const geom *g)
{
    int ld = (K_of(g) + 7) / 8 * 8;
    return ld % 128 == 0 ? ld + 16 : ld;
}

/* Threads for a loop over the images of `work` floats in all: as
 * TG_PARALLEL_FOR, at most one per image. */
static inline int image_threads(const geom *g, size_t work)
{
    int T = tg_par_threads();
    T = T > g->N ? g->N : T;
    return T > 1 && work >= TG_PARALLEL_MIN ? T : 1;
}

/* Thread t's images of T: [N*t/T, N*(t+1)/T). */
static inline int range_start(int N, int t, int T)
{
    return (int)((long)N * t / T);
}

static inline float *scratch(tg_tape *tp, size_t rows, size_t cols)
{
    return tg_tape_alloc(tp, rows * cols * sizeof(float));
}

/* ---- conv_gemm.c --------------------------------------------------------- */

/* Where im2col_gemm's product goes: y [N, OC, P] = product + bias (then
 * max(0, .) with relu), or with tmp, y += product. pm and tmp are [N*P, OC]
 * scratch of which each thread uses a chunk's rows at the start of its
 * range. */
typedef struct nchw_out {
    float *y;
    const float *bias;
    float *pm, *tmp;
    bool relu; /* only without tmp */
} nchw_out;

/* y (+)= the product of each image's patch rows col (made here) with W^T. */
void conv_im2col_gemm(const geom *g, const float *x, float *col, int ldk,
                      const float *W, const nchw_out *o);
/* dx [N, C, H, W] += col2im(in . W), in [N*P, OC]; with init, dx = bias
 * (or 0) + col2im(in . W), then max(0, .) with relu. */
void conv_gemm_col2im(tg_tape *tp, const geom *g, const float *in,
                      const float *W, int ldk, float *dx, bool init,
                      const float *bias, bool relu);
void conv_im2col(const geom *g, const float *x, float *col, int ldk);
void conv_pm_to_nchw(int C, int P, const float *pm, const float *bias,
                     bool relu, float *tmp, float *nchw);
void conv_relu(float *y, size_t n);
void conv_to_pm(int N, int C, int P, const float *nchw, float *pm);
/* pan [C/16][N*P][16] = nchw [N, C, P] (C a multiple of 16): pixel-major
 * in 16-channel panels, as conv_implicit_wgrad reads it. */
void conv_to_panels(int N, int C, int P, const float *nchw, float *pan);
void conv_add_transposed(int OC, int K, const float *tmp, float *dW);
void conv_bias_backward(int N, int C, int P, const float *dy, float *db);
/* A fused ReLU's backward: m [N, C, P] = dy where y > 0, else 0; with
 * sums [N, C], each channel row's vsum_f64 (conv_bias_from_sums then gives
 * conv_bias_backward's bits); with pm, also m pixel-major (conv_to_pm, or
 * with panels conv_to_panels). */
void conv_relu_backward(int N, int C, int P, const float *y, const float *dy,
                        float *m, double *sums, float *pm, bool panels);
void conv_relu_plane(int P, const float *y, const float *dy, float *m,
                     double *sum);
/* db [C] += the sums [N, C] over n, in image order. */
void conv_bias_from_sums(int N, int C, const double *sums, float *db);

/* ---- conv_implicit.c ----------------------------------------------------- */

/* The padded image xp [N][C][Hq][Wq] the implicit tiles read. */
typedef struct ilay {
    int Hq, Wq;
    size_t plane, image; /* floats per padded channel plane, per image */
} ilay;

static inline ilay ilay_of(const geom *g)
{
    ilay l;
    l.Hq = g->H + 2 * g->ph;
    l.Wq = g->W + 2 * g->pw;
    l.plane = (size_t)l.Hq * l.Wq;
    l.image = (size_t)g->C * l.plane;
    return l;
}

bool conv_implicit_ok(const geom *g);
void conv_pad_images(const geom *g, const ilay *l, const float *x, float *xp);
/* conv_pad_images of a fused ReLU's gradient (dy where y > 0, else 0) with,
 * when sums is not NULL, each channel plane's vsum_f64 into sums [N, C];
 * only for planes of at most PAD_RELU_MAX floats. */
enum { PAD_RELU_MAX = 4096 };
void conv_pad_images_relu(const geom *g, const ilay *l, const float *y,
                          const float *dy, float *xp, double *sums);
/* y [N, OC, OH, OW] (+)= col(xp) . W^T as o says. */
void conv_implicit_fwd(tg_tape *tp, const geom *g, const ilay *l,
                       const float *xp, const float *W, const nchw_out *o);
/* dW [OC, K] += (col(xp)^T . dy')^T, dy' pixel-major [N*P, OC] given in
 * 16-channel panels, dpan [OC/16][N*P][16] (conv_to_panels). */
void conv_implicit_wgrad(tg_tape *tp, const geom *g, const ilay *l,
                         const float *xp, const float *dpan, float *dW);

/* Tiles take row bases in blocks of images of about 256 rows, so that a
 * tile's rows may span images (a 7 x 7 image alone fills 7 tiles of 8 for
 * 49 rows) and each base is computed once per block, not per K chunk;
 * bases and outputs are rounded up to a whole tile of at most
 * CONV_TILE_MAX rows. */
enum { CONV_BLOCK_ROWS = 256, CONV_TILE_MAX = 8 };
/* Images per block, for images of pix rows each. */
int conv_block_images(int N, int pix);
#ifdef TG_GEMM_X86
/* The product of the rows whose bases are a[0 .. rows) (a padded with
 * copies of the last to a whole tile) and the W^T panels wp
 * [NC/16][K][16], offsets off[K], into pm [rows, NC], or row q into dr[q]
 * [NC] when dr is given; the AVX-512 tiles when the GEMM's kernel is
 * avx512, else the AVX2 tiles (the same chains: the same bits). */
void conv_implicit_rows(const float *const *a, int rows, const float *wp,
                        const int *off, int K, int NC, float *pm,
                        float *const *dr);
#endif

/* ---- conv_implicit_trans.c ----------------------------------------------- */

bool conv_trans_ok(const geom *g);
/* out [N, C, H, W] = bias (or 0) + col2im(in . W) with set (then max(0, .)
 * with relu), else out += col2im(in . W); in [N, OC, OH, OW],
 * W [OC, C, kh, kw]. */
void conv_implicit_trans(tg_tape *tp, const geom *g, const float *in,
                         const float *W, float *out, bool set,
                         const float *bias, bool relu);

/* ---- conv_direct.c ------------------------------------------------------- */

/* The phase planes and grid of a one-channel image side. */
typedef struct dlay {
    int P, KK;      /* phases sh*sw, taps kh*kw */
    int amax, bmax; /* largest tap shifts, in phase rows and columns */
    int Wp;         /* grid row: OW + bmax */
    bool wide;      /* AVX-512 kernels (the avx512 GEMM kernel chosen) */
    int Lf, Lt;     /* grid lengths of corr/wgrad and trans, whole blocks */
    int F;          /* zeros before a column plane: amax*Wp + bmax */
    size_t PS, CS;  /* floats per phase plane, per column plane */
    size_t slot;    /* scratch floats per thread */
} dlay;

/* What direct_images does for each image n (pointers NULL to skip):
 * img: the image side [N, 1, H, W] the phase planes are made of;
 * col: the column side [N, OC, OH, OW] put on the grid;
 * col_out (+)= corr(img) (+ col_bias; += with col_add);
 * img_out (= img_bias[0] or 0 with img_set, then) += trans(col);
 * relu: max(0, .) of col_out (without col_add) or img_out (with img_set);
 * col_y: col is a fused ReLU's gradient with output col_y: masked by it
 *   on the grid, each channel plane's sum into col_sums [N, OC] (planes of
 *   at most PAD_RELU_MAX floats);
 * part [N, OC, KK] = wgrad(col, img) per image. */
typedef struct direct_job {
    const float *img, *col, *W;
    float *col_out;
    const float *col_bias;
    bool col_add;
    float *img_out;
    const float *img_bias;
    bool img_set;
    bool relu;
    const float *col_y;
    double *col_sums;
    float *part;
    const float *wq; /* trans_image's grouped weights (set by direct_images) */
} direct_job;

bool conv_direct_layout(const geom *g, dlay *d);
void conv_direct_images(tg_tape *tp, const geom *g, const dlay *d,
                        const direct_job *job, float *dW);

/* ops_conv.c's argument rules, which ops_conv1d.c applies to the 1-D ops:
 * a stride or dilation of 0 means 1; the output length along one axis of a
 * convolution (<= 0 when the kernel does not fit) and of a transposed one,
 * both clamped to INT_MAX. */
int conv_arg_or_1(int v);
int conv_len(int in, int k, int s, int p, int d);
int convt_len(int in, int k, int s, int p, int d, int op);

#pragma GCC visibility pop

#endif

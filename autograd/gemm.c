/* GEMM driver: C[M,N] = alpha * op(A)[M,K] . op(B)[K,N] + beta * C, row-major.
 *
 * GotoBLAS-style loops, per thread over its own rectangle of C:
 *   jc over N by NC     pack B~[kc, nc] (NR-wide panels, L2-resident)
 *    pc over K by kc    first K block applies beta, later ones add
 *     ir over M by MR     MR rows of op(A), read in place, stay in L1
 *      jr over nc by NR   micro-kernel: C[MR, NR] from A rows and a B~ panel
 * B~ packing reads op(B), and the kernel takes op(A) with strides, so one
 * micro-kernel serves all four transpose variants. Reading A in place beats
 * packing it (Zen 5: by 5-12%; Zen 3: packed A~ blocks in BLIS order lost
 * 5-20% on every shape); only a partial row panel is packed (zero-padded),
 * and, when A is transposed, every row panel where a measurement at first
 * use says packing pays (pack_a_transposed: an Intel Xeon).
 * Partial tiles go through a small buffer. The kernel, its tiles and the
 * blocks (from the cache sizes the CPU reports) are gemm_config.c's.
 *
 * Determinism: every C element is computed by exactly one thread as the sum
 * over K blocks in order, each block summed in k order by the micro-kernel.
 * The K split and the tile depend only on the shape, and thread rectangles
 * start on tile boundaries, so results are bit-identical for any thread
 * count. */
#include "gemm_internal.h"
#include "parallel.h"
#include "tg_autograd.h"
#include "tg_config.h"

#include <pthread.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif

/* ---- pack buffers: one per thread, allocated on first use ----------------
 * Each thread's buffer hangs on a pthread key whose destructor frees it when
 * the thread exits (OpenMP pools of threads that call tg_gemm concurrently
 * come and go); a long-lived thread keeps its buffer, so a steady-state call
 * allocates nothing. */
typedef struct pack_buffer {
    float *data;
    size_t len; /* floats */
} pack_buffer;

static pthread_key_t buffer_key;
static pthread_once_t buffer_once = PTHREAD_ONCE_INIT;

static void buffer_free(void *p)
{
    pack_buffer *b = p;
    free(b->data);
    free(b);
}

static void buffer_key_create(void)
{
    if (pthread_key_create(&buffer_key, buffer_free) != 0)
        tg_fatal("tg_gemm", "cannot create the pack buffers' thread key");
}

static float *thread_buffer(size_t floats)
{
    pthread_once(&buffer_once, buffer_key_create);
    pack_buffer *b = pthread_getspecific(buffer_key);
    if (b && b->len >= floats)
        return b->data;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b || pthread_setspecific(buffer_key, b) != 0)
            tg_out_of_memory("tg_gemm", "out of memory for a pack buffer");
    }
    /* Blocks are fixed, so this runs once per thread (again only if the
     * kernel is switched to one with larger blocks). */
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    if (!p)
        tg_out_of_memory("tg_gemm", "out of memory for %zu-byte pack buffer",
                         bytes);
    free(b->data);
    b->data = p;
    b->len = bytes / sizeof(float);
    return p;
}

/* ---- packing ------------------------------------------------------------- */
typedef struct {
    bool ta, tb;
    int M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
    bool c_trans; /* computing C^T = op(B)^T op(A)^T: C(i, j) is C[j*ldc + i] */
    bool b_in_place; /* kernel reads full panels of B (not transposed) */
    bool a_packed;   /* every row panel of op(A) packed, not read in place */
} problem;

/* Packs op(X)(i, p) for i in [i0, i0+n), p in [p0, p0+kc) into panels of w
 * lanes laid out [panel][p][lane], lanes past n zero. op(X)(i, p) is
 * X[p*ld + i] when i is the contiguous index (A transposed, B not), else
 * X[i*ld + p] (a transpose). A~ is (op(A), MR); B~ is (op(B)^T, NR). */
static void pack(const float *X, int ld, bool contig_i, int i0, int n, int p0,
                 int kc, int w, gemm_transpose_fn transpose, float *dst)
{
    for (int ip = 0; ip < n; ip += w, dst += (size_t)kc * w) {
        int lanes = n - ip < w ? n - ip : w;
        if (contig_i) {
            const float *src = X + (size_t)p0 * ld + i0 + ip;
            for (int p = 0; p < kc; p++, src += ld) {
                float *d = dst + (size_t)p * w;
                if (lanes == 32)
                    memcpy(d, src, 32 * sizeof(float));
                else if (lanes == 24)
                    memcpy(d, src, 24 * sizeof(float));
                else if (lanes == 16)
                    memcpy(d, src, 16 * sizeof(float));
                else if (lanes == 8)
                    memcpy(d, src, 8 * sizeof(float));
                else if (lanes == 6)
                    memcpy(d, src, 6 * sizeof(float));
                else if (lanes == 4)
                    memcpy(d, src, 4 * sizeof(float));
                else
                    for (int r = 0; r < lanes; r++)
                        d[r] = src[r];
                for (int r = lanes; r < w; r++)
                    d[r] = 0.0f;
            }
        } else {
            transpose(X + (size_t)(i0 + ip) * ld + p0, ld, lanes, kc, dst, w);
            for (int p = 0; lanes < w && p < kc; p++)
                for (int r = lanes; r < w; r++)
                    dst[(size_t)p * w + r] = 0.0f;
        }
    }
}

/* ---- one thread's rectangle C[m0:m1, n0:n1] ------------------------------ */
/* dst[c * dst_ld + r] = src[r * ld + c] for a tile: rows in blocks of 8 by
 * the kernel's transpose, the rest element by element, dst's way. */
static void transpose_tile(const gemm_kernel *kern, const float *src,
                           ptrdiff_t ld, int rows, int cols, float *dst,
                           ptrdiff_t dst_ld)
{
    int r8 = rows / 8 * 8;
    if (r8 > 0)
        kern->transpose(src, ld, r8, cols, dst, dst_ld);
    for (int c = 0; r8 < rows && c < cols; c++)
        for (int r = r8; r < rows; r++)
            dst[c * dst_ld + r] = src[r * ld + c];
}

/* One MR x NR tile of C at c (element (i, j) at c[i * rs + j * cs]). */
static inline void tile(const problem *pb, const gemm_kernel *kern, int kc,
                        const float *ap, ptrdiff_t ap_rs, ptrdiff_t ap_cs,
                        const float *bp, ptrdiff_t rsb, float *c, ptrdiff_t rs,
                        ptrdiff_t cs, int rows, int cols, float beta)
{
    const int mr = kern->mr, nr = kern->nr;
    if (rows == mr && cols == nr && !pb->c_trans) {
        kern->ukr(kc, ap, ap_rs, ap_cs, bp, rsb, c, pb->ldc, pb->alpha, beta);
        return;
    }
    /* Edge tile: same kernel on a padded copy, so an element's arithmetic
     * never depends on the tile. With beta == 0 the kernel does not read
     * it; rows of C are copied whole when they are contiguous. */
    _Alignas(64) float edge[GEMM_MAX_MR * GEMM_MAX_NR];
    size_t row_bytes = (size_t)cols * sizeof(float);
    if (cs != 1) { /* C^T: c[j * cs + i], a transpose each way */
        if (beta != 0.0f)
            transpose_tile(kern, c, cs, cols, rows, edge, nr);
        kern->ukr(kc, ap, ap_rs, ap_cs, bp, rsb, edge, nr, pb->alpha, beta);
        transpose_tile(kern, edge, nr, rows, cols, c, cs);
        return;
    }
    if (beta != 0.0f)
        for (int i = 0; i < rows; i++)
            memcpy(&edge[i * nr], &c[i * rs], row_bytes);
    kern->ukr(kc, ap, ap_rs, ap_cs, bp, rsb, edge, nr, pb->alpha, beta);
    for (int i = 0; i < rows; i++)
        memcpy(&c[i * rs], &edge[i * nr], row_bytes);
}

static void gemm_block(const problem *pb, const gemm_kernel *kern, int kc_step,
                       int NC, int m0, int m1, int n0, int n1)
{
    const int mr = kern->mr, nr = kern->nr;
    float *bpack = thread_buffer(gemm_buffer_floats());
    float *apack = bpack + (size_t)NC * kc_step;
    /* Element (i, j) of the C being computed is at c[i * rs + j * cs]. */
    const ptrdiff_t ldc = pb->ldc, rs = pb->c_trans ? 1 : ldc,
                    cs = pb->c_trans ? ldc : 1;
    /* op(A)(i, p) is A[i * rsa + p * csa]. */
    const ptrdiff_t rsa = pb->ta ? 1 : pb->lda, csa = pb->ta ? pb->lda : 1;

    /* each loop steps by what it took (nc, kc): jc + NC and pc + kc_step
     * could pass INT_MAX on the last block (TG_GEMM_BLOCKS sets them) */
    for (int jc = n0, nc; jc < n1; jc += nc) {
        nc = n1 - jc < NC ? n1 - jc : NC;
        for (int pc = 0, kc; pc < pb->K; pc += kc) {
            kc = pb->K - pc < kc_step ? pb->K - pc : kc_step;
            float beta = pc == 0 ? pb->beta : 1.0f;
            /* In place, only a partial column panel is packed (at 0). */
            int full = pb->b_in_place ? nc / nr * nr : 0;
            if (full < nc)
                pack(pb->B, pb->ldb, !pb->tb, jc + full, nc - full, pc, kc, nr,
                     kern->transpose, bpack);
            for (int ir = m0; ir < m1; ir += mr) {
                int rows = m1 - ir < mr ? m1 - ir : mr;
                /* Full row panels are read in place (streams the prefetcher
                 * follows), unless pack_a_transposed says otherwise; a
                 * partial one is packed and zero-padded. */
                const float *ap = pb->A + ir * rsa + pc * csa;
                ptrdiff_t ap_rs = rsa, ap_cs = csa;
                if (rows < mr || pb->a_packed) {
                    pack(pb->A, pb->lda, pb->ta, ir, rows, pc, kc, mr,
                         kern->transpose, apack);
                    ap = apack;
                    ap_rs = 1;
                    ap_cs = mr;
                }
                for (int jr = 0; jr < nc; jr += nr) {
                    const float *bp;
                    ptrdiff_t rsb;
                    if (jr < full) {
                        bp = pb->B + (size_t)pc * pb->ldb + jc + jr;
                        rsb = pb->ldb;
                    } else {
                        bp = bpack + (size_t)(jr - full) * kc;
                        rsb = nr;
                    }
                    int cols = nc - jr < nr ? nc - jr : nr;
                    tile(pb, kern, kc, ap, ap_rs, ap_cs, bp, rsb,
                         pb->C + ir * rs + (jc + jr) * cs, rs, cs, rows, cols,
                         beta);
                }
            }
        }
    }
}

/* ---- entry point --------------------------------------------------------- */
static void scale_c(const problem *pb)
{
    for (int i = 0; i < pb->M; i++) {
        float *c = pb->C + (size_t)i * pb->ldc;
        for (int j = 0; j < pb->N; j++)
            c[j] = pb->beta == 0.0f ? 0.0f : pb->beta * c[j];
    }
}

/* Cost of C[M,N] += A[M,K] B[K,N] in MR x NR tiles, in FMA lanes: the
 * padded tiles, packing op(B) (~10 lanes per float), and for C^T the
 * strided copy of C in and out (~16 lanes per element). Rough, measured. */
static double tile_cost(int M, int N, int K, bool c_trans, const gemm_kernel *k)
{
    double mt = (M + k->mr - 1) / k->mr * k->mr,
           nt = (N + k->nr - 1) / k->nr * k->nr;
    return nt * (mt + 10.0) * K + (c_trans ? 16.0 * M * N : 0.0);
}

/* Split T threads into a tm x tn grid of C minimising the largest
 * rectangle's work (FMA lanes per unit of K) plus packing its columns of B
 * (~10 lanes per float; A is read in place). With rows_first, a split of
 * C's rows wins a near tie (within 5%). It is asked for where C's rows are
 * a Dense layer's output units: C = A^T B as the weight gradient
 * dW = dy^T x, and C^T = W x^T, the forward product x W^T computed
 * transposed (see gemm()). Splitting them matches the split of W's rows in
 * the optimizer (nn/params_split.h), so a row of W, dW and Adam's state
 * stays on one core through the step (Zen 3: enc.fc1's 400x784x128
 * gradient costs 2% more split by rows, Adam after it 2-4x less; Xeon:
 * enc.fc1's forward, 128x400x784 computed as 400x128, took 350 us per call
 * inside the step split by batch rows, each core reading all of W, and
 * 290-300 split by units, the step 7% faster). */
static void split_grid(int pm, int pn, int mr, int nr, int T, bool rows_first,
                       int *tm, int *tn)
{
    double best = -1;
    for (int a = 1; a <= T; a++) {
        if (T % a || a > pm || T / a > pn)
            continue;
        double mt = (double)((pm + a - 1) / a) * mr,
               nt = (double)((pn + T / a - 1) / (T / a)) * nr;
        double cost = (mt * nt + 10.0 * nt) * (rows_first && a > 1 ? 0.95 : 1);
        if (best < 0 || cost < best) {
            best = cost;
            *tm = a;
            *tn = T / a;
        }
    }
}

/* Whether to pack op(A) when it is A transposed. Read in place, each k step
 * of the tile reads a new cache line of A (MR floats of 16); packed, the
 * row panel is contiguous, at the cost of copying it. Which wins depends on
 * the core, not on the cache sizes (bench/README: packing took three of
 * four transposed-A products of the VAE from 123-139 to 136-147 GFLOP/s on
 * an Intel Xeon, and lost 2-10% on AMD Zen 3 and 5-12% on Zen 5), so it is
 * measured once per kernel, on one thread: a 768x128x128 product (A's rows
 * 3 KB apart, as the VAE's 784-wide layers), each way three times in turn
 * (about 1 ms in all), packing taken only when its best run is 3% faster
 * (on the Xeon it was 4.3% faster in five of five processes).
 * The choice changes no result: the same values meet in the same FMA
 * chains either way. */
static bool pack_a_transposed(const gemm_kernel *base)
{
    int fixed = gemm_pack_a_fixed();
    if (fixed >= 0)
        return fixed;
    atomic_int *measured = gemm_pack_a_measured(base);
    int v = atomic_load(measured);
    if (v)
        return v - 1;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    v = atomic_load(measured);
    if (!v) {
        enum { M = 768, N = 128, K = 128 };
        float *a = malloc(sizeof(float) * (M * K + K * N + M * N));
        if (!a)
            tg_out_of_memory("tg_gemm",
                             "out of memory measuring the packing of A");
        for (size_t i = 0; i < (size_t)M * K + K * N; i++)
            a[i] = 0.5f;
        float *b = a + M * K, *c = b + K * N;
        const gemm_kernel *kern = gemm_tile_for_n(base, true, N);
        int kc, NC;
        gemm_blocks_for(kern, true, &kc, &NC);
        problem pb = {true, false, M, N, K, 1.0f,  0.0f,  a,
                      b,    c,     M, N, N, false, false, false};
        int64_t best[2] = {INT64_MAX, INT64_MAX};
        for (int round = 0; round < 3; round++)
            for (int packed = 0; packed < 2; packed++) {
                pb.a_packed = packed;
                int64_t t0 = tg_par_now_ns();
                gemm_block(&pb, kern, kc < K ? kc : K, NC, 0, M, 0, N);
                int64_t dt = tg_par_now_ns() - t0;
                best[packed] = dt < best[packed] ? dt : best[packed];
            }
        free(a);
        v = 1 + ((double)best[1] < 0.97 * (double)best[0]);
        atomic_store(measured, v);
    }
    pthread_mutex_unlock(&lock);
    return v - 1;
}

/* C += two K blocks of a C^T problem on two threads: block 0 runs on C
 * (with pb's beta), block 1 into a scratch S (beta 0, so S is the block's
 * sums exactly, alpha being 1), then S is added to C, rows of C^T split
 * over the threads: C + S rounds as the kernel's C + 1 * sums on one
 * thread, so the result has the bits of the blocks run in turn. With two
 * threads each takes a block; should the runtime give fewer (say
 * OMP_THREAD_LIMIT=1), one thread takes both. S is the calling thread's
 * buffer past its packing space. */
static void k_split(const problem *pb, const gemm_kernel *kern, int kc_step,
                    int NC, float *S, tg_par_region *region)
{
    int64_t master_ns = 0;
#ifdef TG_HAVE_OPENMP
#pragma omp parallel num_threads(2)
#endif
    {
#ifdef TG_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int t = 0; t < 2; t++) {
            int64_t start = tg_par_now_ns();
            problem p = *pb;
            p.K = t == 0 ? kc_step : pb->K - kc_step;
            /* block 1 starts kc_step into K: op(A)(i, p) = A[p * lda + i],
             * op(B)(p, j) = B[j * ldb + p] */
            if (t == 1) {
                p.A += (size_t)kc_step * (size_t)pb->lda;
                p.B += kc_step;
                p.C = S;
                p.ldc = pb->M;
                p.beta = 0.0f;
            }
            gemm_block(&p, kern, kc_step, NC, 0, pb->M, 0, pb->N);
            if (t == 0)
                master_ns = tg_par_now_ns() - start;
        }
        /* C(i, j) is C[j * ldc + i] */
#ifdef TG_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int j = 0; j < pb->N; j++) {
            float *c = pb->C + (size_t)j * pb->ldc;
            const float *s = S + (size_t)j * pb->M;
            for (int i = 0; i < pb->M; i++)
                c[i] += s[i];
        }
    }
    /* One thread would take about twice block 0. */
    tg_par_end(region, 2 * master_ns);
}

/* Aborts on sizes, leading dimensions or pointers tg_gemm cannot take. */
static void check_args(bool trans_a, bool trans_b, int M, int N, int K,
                       const float *A, int lda, const float *B, int ldb,
                       const float *C, int ldc)
{
    if (M < 0 || N < 0 || K < 0)
        tg_fatal("tg_gemm", "negative size M=%d N=%d K=%d", M, N, K);
    /* tiles are counted in int past the last row and column (a size
     * rounded up to MR or NR <= 64, ir + MR): a size within 64 of INT_MAX
     * wrapped there */
    if (M > GEMM_MAX_DIM || N > GEMM_MAX_DIM || K > GEMM_MAX_DIM)
        tg_fatal("tg_gemm", "M=%d N=%d K=%d: each must be at most %d", M, N, K,
                 GEMM_MAX_DIM);
    /* At least a stored row's length: 0 for an operand with no columns
     * (K = 0 or N = 0: tg_matmul of [3, 0] by [0, 4] is zeros) */
    int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    if (lda < a_cols || ldb < b_cols || ldc < N)
        tg_fatal("tg_gemm",
                 "leading dimension too small: lda=%d (op(A) %dx%d%s) "
                 "ldb=%d (op(B) %dx%d%s) ldc=%d (C %dx%d)",
                 lda, M, K, trans_a ? " transposed" : "", ldb, K, N,
                 trans_b ? " transposed" : "", ldc, M, N);
    if ((M > 0 && N > 0 && !C) || (M > 0 && N > 0 && K > 0 && (!A || !B)))
        tg_fatal("tg_gemm", "NULL %s with M=%d N=%d K=%d",
                 !C   ? "C"
                 : !A ? "A"
                      : "B",
                 M, N, K);
}

/* The pm x pn tiles of C split into a tm x tn grid of rectangles, one per
 * thread (split_grid), on T threads; the master's share timed for
 * tg_par_end. */
static void run_grid(const problem *pb, const gemm_kernel *kern, int kc_step,
                     int NC, int pm, int pn, int T, tg_par_region *region)
{
    int tm = 1, tn = T;
    split_grid(pm, pn, kern->mr, kern->nr, T,
               (pb->ta && !pb->tb && !pb->c_trans) ||
                   (pb->c_trans && !pb->ta && pb->tb),
               &tm, &tn);
    int64_t master_ns = 0;
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int t = 0; t < T; t++) {
        int64_t start = t == 0 ? tg_par_now_ns() : 0;
        int ti = t / tn, tj = t % tn;
        /* in long: the last tile's end, rounded up to MR, may pass M */
        long m0 = (long)pm * ti / tm * kern->mr,
             m1 = (long)pm * (ti + 1) / tm * kern->mr;
        long n0 = (long)pn * tj / tn * kern->nr,
             n1 = (long)pn * (tj + 1) / tn * kern->nr;
        if (m1 > pb->M)
            m1 = pb->M;
        if (n1 > pb->N)
            n1 = pb->N;
        if (m0 < m1 && n0 < n1)
            gemm_block(pb, kern, kc_step, NC, (int)m0, (int)m1, (int)n0,
                       (int)n1);
        if (t == 0) /* the master's share of the tiles, timed */
            master_ns = tg_par_now_ns() - start;
    }
    /* One thread would take about master_ns / (its share of the tiles). */
    double share = (double)(pm / tm) * (double)(pn / tn) / ((double)pm * pn);
    tg_par_end(region, (int64_t)((double)master_ns / share));
}

static void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc, bool may_swap)
{
    const gemm_kernel *base = gemm_config_kernel(), *kern = base;
    check_args(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc);
    problem pb = {trans_a, trans_b, M,   N,   K,   alpha, beta,  A,
                  B,       C,       lda, ldb, ldc, false, false, false};
    if (M == 0 || N == 0)
        return;
    if (K == 0 || alpha == 0.0f) {
        scale_c(&pb);
        return;
    }

    /* A narrow C wastes most of each NR-wide tile (N = 40 fills 40 of 64
     * lanes): compute C^T = op(B)^T op(A)^T instead when that costs less.
     * Each element is the same FMA chain either way (a*b = b*a). */
    if (may_swap &&
        tile_cost(N, M, K, true, gemm_tile_for(kern, !trans_b)) <
            0.95 * tile_cost(M, N, K, false, gemm_tile_for(kern, trans_a))) {
        problem t = {!trans_b, !trans_a, N,   M,   K,   alpha, beta,  B,
                     A,        C,        ldb, lda, ldc, true,  false, false};
        pb = t;
    }
    /* Packing B pays off over many row panels, not over a few (measured:
     * 20x128x400 gains 35% in place, 1024^3 loses 20%). */
    pb.b_in_place = !pb.tb && pb.M <= 96;
    kern = gemm_tile_for_n(kern, pb.ta, pb.N);
    pb.a_packed = pb.ta && pb.M >= kern->mr && pack_a_transposed(base);
    int kc_max, NC;
    gemm_blocks_for(kern, pb.ta, &kc_max, &NC);
    /* K blocks of near-equal size, a function of K and kc_max (op(A)'s
     * tile class), never of the thread count. */
    int nk = K / kc_max + (K % kc_max != 0); /* K + kc_max - 1 could wrap */
    /* A Dense layer's input gradient dy.W computed as C^T = W^T dy^T: K
     * runs over W's rows, which Adam and the forward keep split over the
     * cores, while any split of C makes each core read the other's half of
     * W. So where one block would hold K, it is two here, on one thread as
     * on two (the same bits), and two threads take one each (k_split). */
    bool k_halves =
        pb.ta && pb.tb && pb.c_trans && alpha == 1.0f && nk == 1 && K >= 256;
    if (k_halves)
        nk = 2;
    int kc_step = K / nk + (K % nk != 0);

    int pm = (pb.M + kern->mr - 1) / kern->mr,
        pn = (pb.N + kern->nr - 1) / kern->nr;
    int T = 1;
#ifdef TG_HAVE_OPENMP
    if (2.0 * M * N * K >= GEMM_MIN_PARALLEL_FLOPS && !omp_in_parallel())
        T = tg_get_threads();
#endif
    if (T > (long long)pm * pn)
        T = (int)((long long)pm * pn);
    /* The K split's scratch grows the calling thread's buffer whether or
     * not this call splits: the busy-machine fallback (tg_par_begin) may
     * run every call of a warm-up on one thread, and a step must not
     * allocate when it next runs two. */
    float *S = NULL;
    size_t floats = gemm_buffer_floats();
    if (k_halves)
        S = thread_buffer(floats + (size_t)pb.M * (size_t)pb.N) + floats;
    tg_par_region region;
    T = tg_par_begin(&region, T);
    if (T <= 1) {
        gemm_block(&pb, kern, kc_step, NC, 0, pb.M, 0, pb.N);
        return;
    }
    if (k_halves && T == 2) {
        k_split(&pb, kern, kc_step, NC, S, &region);
        return;
    }
    run_grid(&pb, kern, kc_step, NC, pm, pn, T, &region);
}

void tg_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc)
{
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, true);
}

void gemm_rows(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc)
{
    gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, false);
}

/* Products: the fused Dense op and a general matmul (batched too). Both run
 * on tg_gemm, forward and backward. */
#include "gemm_internal.h"
#include "parallel.h"
#include "tape.h"

#include <limits.h>
#include <string.h>

/* y [B, out] = x [B, in] . W^T + b, W [out, in], b [out] or NULL.
 * dx += dy . W        [B, in]
 * dW += dy^T . x      [out, in]
 * db += sum_rows dy   [out] */
static void dense_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = r->in[0], *W = r->in[1], *b = r->in[2];
    const float *dy = r->out->grad;
    int B = tg_tensor_rows(x), in = W->shape[1], out = W->shape[0];
    bool fresh;
    float *dx = grad_fresh(tp, r, 0, &fresh), *dW = grad_of(tp, W);
    if (dx)
        tg_gemm(false, false, B, in, out, 1.0f, dy, out, W->data, in,
                fresh ? 0.0f : 1.0f, dx, in);
    if (dW)
        tg_gemm(true, false, out, in, B, 1.0f, dy, out, x->data, in, 1.0f, dW,
                in);
    /* db: columns split over threads, each summed down the rows in order,
     * in double (as the reductions: a float running sum drifts by about
     * B ulp of the sum over large batches) */
    float *db = b ? grad_of(tp, b) : NULL;
    if (db) {
        enum { COLS = 64 };
        /* out + COLS - 1 and j0 + COLS passed INT_MAX near it */
        int n_blocks = out / COLS + (out % COLS != 0);
        TG_PARALLEL_FOR(B, out)
        for (int k = 0; k < n_blocks; k++) {
            int j0 = k * COLS, j1 = out - j0 > COLS ? j0 + COLS : out;
            double acc[COLS] = {0};
            for (int i = 0; i < B; i++)
                for (int j = j0; j < j1; j++)
                    acc[j - j0] += dy[(size_t)i * out + j];
            for (int j = j0; j < j1; j++)
                db[j] += (float)acc[j - j0];
        }
    }
}

tg_tensor *tg_dense(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b)
{
    check_inputs("dense", x, W);
    char sx[64], sw[64], sb[64];
    if (W->ndim != 2 || tg_tensor_cols(x) != W->shape[1])
        tg_fatal("dense", "x %s does not fit W %s (W is [out, in])",
                 tg_shape_str(x, sx), tg_shape_str(W, sw));
    /* a row, [out] or [1, out]: a column [out, 1] (one value per row under
     * tg_add's broadcasting, as torch would add it) or any other shape of
     * out elements was taken as [out] without a word */
    if (b && (b->size != (size_t)W->shape[0] ||
              (b->ndim != 1 && (b->ndim != 2 || b->shape[0] != 1))))
        tg_fatal("dense", "bias %s does not fit W %s (bias is [out])",
                 tg_shape_str(b, sb), tg_shape_str(W, sw));
    int B = tg_tensor_rows(x), in = W->shape[1], out = W->shape[0];
    int shape[TG_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[d];
    shape[x->ndim - 1] = out;
    tg_tensor *y = out_tensor(tp, x->ndim, shape);
    if (b) { /* on the threads: serial, it left the other core waiting */
        const float *bias = b->data;
        float *yd = y->data;
        TG_PARALLEL_FOR(B, out)
        for (int i = 0; i < B; i++)
            memcpy(yd + (size_t)i * out, bias, sizeof(float) * (size_t)out);
    }
    tg_gemm(false, true, B, out, in, 1.0f, x->data, in, W->data, in,
            b ? 1.0f : 0.0f, y->data, out);
    tg_tensor *in_list[] = {x, W, b};
    record(tp, "dense", dense_backward, y, b ? 3 : 2, in_list);
    return y;
}

/* C = op(A) . op(B), op(A) [M, K], op(B) [K, N], for each of nb matrices
 * of a batch; an operand without batch dims (2-D) is shared by all.
 * dA = dC . op(B)^T, stored transposed when A is: op(B) . dC^T
 * dB = op(A)^T . dC, stored transposed when B is: dC^T . op(A)
 * A shared operand's gradient is the sum over the batch, added matrix by
 * matrix in batch order. */
typedef struct mm {
    int M, N, K, nb;
    bool ta, tb;
    int lda, ldb;  /* row lengths of A and B as stored */
    size_t sa, sb; /* floats from one matrix of A (B) to the next: 0 shared */
    bool shared_a, shared_b; /* 2-D: one matrix for the whole batch */
} mm;

/* One matrix's product or gradient. */
enum { PRODUCT, GRAD_A, GRAD_B };

static void mm_item(const mm *m, int what, int i, const float *A,
                    const float *B, const float *dC, float *out)
{
    const int M = m->M, N = m->N, K = m->K;
    const float *a = A + i * m->sa, *b = B + i * m->sb;
    const float *dc = what == PRODUCT ? NULL : dC + (size_t)i * M * N;
    switch (what) {
    case PRODUCT:
        tg_gemm(m->ta, m->tb, M, N, K, 1.0f, a, m->lda, b, m->ldb, 0.0f,
                out + (size_t)i * M * N, N);
        break;
    case GRAD_A:
        if (!m->ta)
            tg_gemm(false, !m->tb, M, K, N, 1.0f, dc, N, b, m->ldb, 1.0f,
                    out + i * m->sa, K);
        else
            tg_gemm(m->tb, true, K, M, N, 1.0f, b, m->ldb, dc, N, 1.0f,
                    out + i * m->sa, M);
        break;
    case GRAD_B:
        if (!m->tb)
            tg_gemm(!m->ta, false, K, N, M, 1.0f, a, m->lda, dc, N, 1.0f,
                    out + i * m->sb, N);
        else
            tg_gemm(true, m->ta, N, K, M, 1.0f, dc, N, a, m->lda, 1.0f,
                    out + i * m->sb, K);
        break;
    }
}

/* mm_item over the batch. Matrices too small for a threaded GEMM go to the
 * threads whole, each with a one-thread GEMM (inside a region tg_gemm does
 * not open another), when each writes its own output; into a shared
 * gradient they are added one after the other, in order. tg_gemm gives the
 * same bits on any thread count, so both ways give the same result. */
static void mm_batch(const mm *m, int what, const float *A, const float *B,
                     const float *dC, float *out)
{
    bool shared_out =
        (what == GRAD_A && m->shared_a) || (what == GRAD_B && m->shared_b);
    int T = tg_par_threads();
    if (shared_out || T < 2 || m->nb < 2 ||
        2.0 * m->M * m->N * m->K >= GEMM_MIN_PARALLEL_FLOPS) {
        for (int i = 0; i < m->nb; i++)
            mm_item(m, what, i, A, B, dC, out);
        return;
    }
#ifdef TG_HAVE_OPENMP
#pragma omp parallel for num_threads(T) schedule(static)
#endif
    for (int i = 0; i < m->nb; i++)
        mm_item(m, what, i, A, B, dC, out);
}

/* The matrices in a batch: the product of all dims but the last two. */
static int batch_count(const tg_tensor *t)
{
    int nb = 1;
    for (int d = 0; d < t->ndim - 2; d++)
        nb *= t->shape[d];
    return nb;
}

static mm mm_of(const tg_tensor *a, const tg_tensor *b, bool ta, bool tb,
                const tg_tensor *c)
{
    mm m = {.ta = ta, .tb = tb};
    m.lda = a->shape[a->ndim - 1];
    m.ldb = b->shape[b->ndim - 1];
    m.M = m.ta ? a->shape[a->ndim - 1] : a->shape[a->ndim - 2];
    m.K = m.ta ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1];
    m.N = m.tb ? b->shape[b->ndim - 2] : b->shape[b->ndim - 1];
    /* shared by the rank, never judged by the stride: a batch of [K, 0]
     * matrices has a stride of 0 too, and was taken for a shared B (dA was
     * written past its end) */
    m.shared_a = a->ndim == 2;
    m.shared_b = b->ndim == 2;
    m.sa = m.shared_a ? 0 : (size_t)m.M * m.K;
    m.sb = m.shared_b ? 0 : (size_t)m.K * m.N;
    m.nb = batch_count(c);
    return m;
}

/* A batch whose B is shared and A not transposed is one product
 * [nb*M, K] . op(B): one GEMM, with rows enough for tiles and threads. */
static void mm_flatten(mm *m)
{
    /* only while the stacked rows are a size tg_gemm takes: nb * M
     * wrapped, a product of a few rows silently taken for the whole
     * batch's, and past GEMM_MAX_DIM tg_gemm refused a batch that one
     * product per matrix computes */
    if (m->shared_b && !m->ta && m->nb > 1 &&
        (long long)m->M * m->nb <= GEMM_MAX_DIM) {
        m->M *= m->nb;
        m->nb = 1;
    }
}

static void matmul_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *A = r->in[0], *B = r->in[1];
    mm m = mm_of(A, B, r->i[0], r->i[1], r->out);
    const float *dC = r->out->grad;
    float *dA = grad_of(tp, A), *dB = grad_of(tp, B);
    mm_flatten(&m);
    if (dA)
        mm_batch(&m, GRAD_A, A->data, B->data, dC, dA);
    if (dB)
        mm_batch(&m, GRAD_B, A->data, B->data, dC, dB);
}

tg_tensor *tg_matmul(tg_tape *tp, tg_tensor *a, tg_tensor *b, bool trans_a,
                     bool trans_b)
{
    check_inputs("matmul", a, b);
    char sa[64], sb[64];
    if (a->ndim < 2 || b->ndim < 2)
        tg_fatal("matmul",
                 "needs matrices (2-D, or 3-D and 4-D batches of "
                 "them), got %s and %s",
                 tg_shape_str(a, sa), tg_shape_str(b, sb));
    bool same_batch = a->ndim == b->ndim;
    for (int d = 0; same_batch && d < a->ndim - 2; d++)
        same_batch = a->shape[d] == b->shape[d];
    if (a->ndim > 2 && b->ndim > 2 && !same_batch)
        tg_fatal("matmul",
                 "batch dims differ: %s and %s (they must be equal, or one "
                 "operand 2-D and shared by the batch)",
                 tg_shape_str(a, sa), tg_shape_str(b, sb));
    int ra = a->ndim - 2, rb = b->ndim - 2; /* the matrix dims */
    int M = a->shape[ra + trans_a], K = a->shape[ra + !trans_a];
    int Kb = b->shape[rb + trans_b], N = b->shape[rb + !trans_b];
    if (K != Kb)
        tg_fatal("matmul", "inner dims differ: %s%s . %s%s",
                 tg_shape_str(a, sa), trans_a ? "^T" : "", tg_shape_str(b, sb),
                 trans_b ? "^T" : "");
    const tg_tensor *batched = a->ndim >= b->ndim ? a : b;
    /* the batch is counted (batch_count) and walked in int */
    long long nb = 1;
    for (int d = 0; d < batched->ndim - 2; d++)
        nb *= batched->shape[d];
    if (nb > INT_MAX)
        tg_fatal("matmul", "%s . %s: %lld matrices in the batch, more than %d",
                 tg_shape_str(a, sa), tg_shape_str(b, sb), nb, INT_MAX);
    int shape[TG_MAX_DIMS], nd = batched->ndim;
    for (int d = 0; d < nd - 2; d++)
        shape[d] = batched->shape[d];
    shape[nd - 2] = M;
    shape[nd - 1] = N;
    tg_tensor *c = out_tensor(tp, nd, shape);
    mm m = mm_of(a, b, trans_a, trans_b, c);
    mm_flatten(&m);
    mm_batch(&m, PRODUCT, a->data, b->data, NULL, c->data);
    tg_record *r =
        record(tp, "matmul", matmul_backward, c, 2, (tg_tensor *[]){a, b});
    if (r) {
        r->i[0] = trans_a;
        r->i[1] = trans_b;
    }
    return c;
}

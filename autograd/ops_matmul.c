/* Products: the fused Dense op and a general matmul. Both run on tg_gemm,
 * forward and backward. */
#include "parallel.h"
#include "tape.h"

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
        int n_blocks = (out + COLS - 1) / COLS;
        TG_PARALLEL_FOR(B, out)
        for (int k = 0; k < n_blocks; k++) {
            int j0 = k * COLS, j1 = j0 + COLS < out ? j0 + COLS : out;
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
    if (b && b->size != (size_t)W->shape[0])
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
    tg_tensor *in_list[] = {x, W, b ? b : W};
    record(tp, "dense", dense_backward, y, b ? 3 : 2, in_list);
    return y;
}

/* C [M, N] = op(A) . op(B), op(A) [M, K], op(B) [K, N].
 * dA = dC . op(B)^T, stored transposed when A is: op(B) . dC^T
 * dB = op(A)^T . dC, stored transposed when B is: dC^T . op(A) */
static void matmul_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *A = r->in[0], *B = r->in[1];
    bool ta = r->i[0], tb = r->i[1];
    int M = r->out->shape[0], N = r->out->shape[1];
    int K = ta ? A->shape[0] : A->shape[1];
    const float *dC = r->out->grad;
    float *dA = grad_of(tp, A), *dB = grad_of(tp, B);
    if (dA) {
        if (!ta)
            tg_gemm(false, !tb, M, K, N, 1.0f, dC, N, B->data, B->shape[1],
                    1.0f, dA, K);
        else
            tg_gemm(tb, true, K, M, N, 1.0f, B->data, B->shape[1], dC, N, 1.0f,
                    dA, M);
    }
    if (dB) {
        if (!tb)
            tg_gemm(!ta, false, K, N, M, 1.0f, A->data, A->shape[1], dC, N,
                    1.0f, dB, N);
        else
            tg_gemm(true, ta, N, K, M, 1.0f, dC, N, A->data, A->shape[1], 1.0f,
                    dB, K);
    }
}

tg_tensor *tg_matmul(tg_tape *tp, tg_tensor *a, tg_tensor *b, bool trans_a,
                     bool trans_b)
{
    check_inputs("matmul", a, b);
    char sa[64], sb[64];
    if (a->ndim != 2 || b->ndim != 2)
        tg_fatal("matmul", "needs 2-D tensors, got %s and %s",
                 tg_shape_str(a, sa), tg_shape_str(b, sb));
    int M = trans_a ? a->shape[1] : a->shape[0];
    int K = trans_a ? a->shape[0] : a->shape[1];
    int Kb = trans_b ? b->shape[1] : b->shape[0];
    int N = trans_b ? b->shape[0] : b->shape[1];
    if (K != Kb)
        tg_fatal("matmul", "inner dims differ: %s%s . %s%s",
                 tg_shape_str(a, sa), trans_a ? "^T" : "", tg_shape_str(b, sb),
                 trans_b ? "^T" : "");
    tg_tensor *c = out_tensor(tp, 2, (int[]){M, N});
    tg_gemm(trans_a, trans_b, M, N, K, 1.0f, a->data, a->shape[1], b->data,
            b->shape[1], 0.0f, c->data, N);
    tg_record *r =
        record(tp, "matmul", matmul_backward, c, 2, (tg_tensor *[]){a, b});
    if (r) {
        r->i[0] = trans_a;
        r->i[1] = trans_b;
    }
    return c;
}

/* tapegrad autograd: tensors, the tape, and the differentiable ops.
 *
 * A tensor is float32, row-major, contiguous, 1 to 4 dims. Ops take the tape
 * they record on as their first argument and return a tensor carved from the
 * tape's arena; it lives until tg_tape_reset(). Parameters and other
 * long-lived tensors come from tg_tensor_new() and are freed by their owner.
 *
 * Shape misuse is a programmer error: the op aborts with a message naming
 * itself and the shapes; so does a NULL tensor. Dims may be 0: a batch of
 * 0 rows ([0, C]) goes through every op, forward and backward, and the mean
 * of no elements is 0. Bad data (files, arguments) never aborts: see
 * tg_status in tg_nn.h. */
#ifndef TG_AUTOGRAD_H
#define TG_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tg_version.h" /* TG_VERSION "major.minor.patch", from meson */

#ifdef __cplusplus
extern "C" {
#endif

#define TG_MAX_DIMS 4

typedef struct tg_tape tg_tape;

typedef struct tg_tensor {
    float *data;
    float *grad; /* NULL until a gradient is needed */
    int ndim;
    int shape[TG_MAX_DIMS];
    size_t size;        /* number of elements */
    bool requires_grad; /* parameters, and anything computed from them */
    bool owns_data;     /* data/grad were malloc'd by tg_tensor_new */
    tg_tape *tape;      /* the tape that made it; NULL when long-lived */
} tg_tensor;

/* ---- errors ------------------------------------------------------------ */

/* Flushes stdout (a program's buffered output is not lost), prints
 * "tapegrad: OP: message" to stderr and aborts. For API misuse only. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
void tg_fatal(const char *op, const char *fmt, ...);

/* Where the library runs out of memory (an arena block, a tensor, a pack
 * buffer, an optimizer's state...) it calls tg_out_of_memory, which is not
 * misuse: a model too large for the machine. It formats "OP: message" and
 * passes it to the handler set by tg_set_oom_handler, which should end the
 * process (a program prints its own one-line error and exits with a status
 * of its choosing). With no handler, or when the handler returns, it is
 * tg_fatal: "tapegrad: OP: message" and abort. The handler may be called
 * on any thread, inside a parallel region. */
typedef void (*tg_oom_handler)(const char *message);
void tg_set_oom_handler(tg_oom_handler fn);
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
void tg_out_of_memory(const char *op, const char *fmt, ...);

/* "[2, 3]" into buf (at least 64 bytes); returns buf. For messages. */
const char *tg_shape_str(const tg_tensor *t, char *buf);

/* ---- long-lived tensors (parameters, data sets) ------------------------- */

/* Zero-filled tensor with its own storage; grad stays NULL until
 * tg_tensor_require_grad(). Its element count may pass INT_MAX; an op that
 * counts rows, planes (N * C), a plane's elements, batched matrices or conv
 * positions in int aborts (tg_fatal) on a shape where one passes INT_MAX
 * (a matrix product's sizes: INT_MAX - 128; conv positions: INT_MAX -
 * 65536, where blocks are stepped past the end). */
tg_tensor *tg_tensor_new(int ndim, const int *shape);
tg_tensor *tg_tensor_new2(int rows, int cols);
void tg_tensor_free(tg_tensor *t);
/* Marks t as a leaf that collects gradients; allocates a zeroed grad if t has
 * none (a parameter set may instead point grad into its shared buffer). */
void tg_tensor_require_grad(tg_tensor *t);
void tg_tensor_zero_grad(tg_tensor *t);
int tg_tensor_rows(const tg_tensor *t); /* product of all dims but the last */
int tg_tensor_cols(const tg_tensor *t); /* the last dim */

/* ---- the tape ------------------------------------------------------------ */

/* A tape owns an arena from which every op output is allocated, and a list of
 * records, one per op called while recording. Reset rewinds the arena and
 * keeps its memory; the first reset after a step outgrew the arena's first
 * block merges its blocks into one (a heap allocation), and from then on a
 * step of the same graph allocates nothing (tg_tape_heap_allocs stays put
 * from the second step's ops on; not with tg_tape_set_checks on). */
tg_tape *tg_tape_new(void);
void tg_tape_free(tg_tape *tp);
/* Forget every record and tensor made since the last reset. Call it at
 * the start of each step: without it the tape keeps every earlier step's
 * ops (their gradients are not computed again, but memory grows and each
 * backward walks them all). */
void tg_tape_reset(tg_tape *tp);
/* Recording on (default): ops append records for backward. Off: ops only
 * compute (inference); outputs never require grad. Returns the old value. */
bool tg_tape_set_recording(tg_tape *tp, bool on);
bool tg_tape_recording(const tg_tape *tp);
/* Checks (off by default; on for every new tape when the environment has
 * TG_TAPE_CHECKS=1): each op records a 64-bit sum of its inputs' and
 * outputs' data, and backward recomputes it before running the op's
 * backward, aborting with the op's name when a tensor changed in between
 * (written by hand after use: the gradient would silently be wrong).
 * A reset then also fills the step's arena with a poison byte and sets its
 * blocks aside for two resets, so that a tensor kept past a reset is
 * refused by the next op or backward given it; a checked step therefore
 * allocates. Costs one pass over every op's tensors at record and at
 * backward: for debugging. Returns the old value. */
bool tg_tape_set_checks(tg_tape *tp, bool on);
/* Profile (off by default; on for every new tape when the environment has
 * TG_PROFILE=1): per op name, its calls, forward time and backward time.
 * An op's forward time is the wall time from the previous record (or the
 * last tg_tape_reset or backward) to its own record: its forward plus any
 * code of yours in between. Only recorded ops are seen (not those run with
 * recording off or on constants). tg_tape_free prints the table to stderr;
 * tg_tape_profile_print prints it to f (a FILE *) at any time. Costs two
 * clock reads per op. Returns the old value. */
bool tg_tape_set_profile(tg_tape *tp, bool on);
void tg_tape_profile_print(const tg_tape *tp, void *f);
/* Bytes of arena memory held, and the number of heap allocations the tape has
 * made over its life (a training step after warm-up makes none). */
size_t tg_tape_arena_bytes(const tg_tape *tp);
size_t tg_tape_heap_allocs(const tg_tape *tp);
size_t tg_tape_records(const tg_tape *tp);

/* A tensor on the tape (input batches, noise): valid until the next reset.
 * Contents are uninitialised unless zeroed is true. */
tg_tensor *tg_tape_tensor(tg_tape *tp, int ndim, const int *shape, bool zeroed);
tg_tensor *tg_tape_tensor2(tg_tape *tp, int rows, int cols, bool zeroed);
/* A tape tensor [rows, cols] over memory the caller owns (a batch's rows in
 * a data set, say): no copy. Ops only read it; keep it alive and unchanged
 * until the next reset. */
tg_tensor *tg_tape_view2(tg_tape *tp, float *data, int rows, int cols);
/* Raw scratch memory from the arena (64-byte aligned), valid until reset. */
void *tg_tape_alloc(tg_tape *tp, size_t bytes);

/* Seeds d(loss)/d(loss) = 1 and walks the records in reverse, adding each
 * op's input gradients. loss must have exactly one element and have been
 * computed on tp. Gradients accumulate into leaves (+=): zero them between
 * steps. May be called again on the same tape (two losses sharing layers,
 * or the same loss twice): each walk starts from zero inside the graph, so
 * backward(l1); backward(l2) gives the leaves what backward(l1 + l2) would,
 * as PyTorch's retain_graph=True. */
void tg_backward(tg_tape *tp, tg_tensor *loss);
/* Same, with a caller-supplied seed gradient of out's shape. */
void tg_backward_with(tg_tape *tp, tg_tensor *out, const float *seed);

/* ---- ops ------------------------------------------------------------------
 * Broadcasting (add, sub, mul): the first operand a sets the output's shape
 * ([R, C], R the product of the leading dims); b has a's shape, or is a row
 * ([C] or [1, C], repeated down the rows), or a per-row column ([R, 1], or
 * a's leading dims then 1: one value for each row), or a single element. A 1-D
 * b is always a row, as in NumPy and PyTorch, also when R == C: one value per
 * row is [R, 1]. A smaller a with a larger b is refused (swap the operands). */

/* y[B, out] = x[B, in] . W^T + b, with W stored [out, in] as in PyTorch and
 * b a row, [out] or [1, out] (b may be NULL). One fused op. As
 * torch.nn.Linear, x may have more dimensions: [..., in] -> [..., out],
 * over its last axis alone. So
 * an image batch [B, C, H, W] must be flattened to [B, C*H*W] first
 * (tg_flatten): with W's in equal to the image width, it would be taken
 * row by row. */
tg_tensor *tg_dense(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b);
/* C = op(A) . op(B), op transposing a matrix when its flag is set. A and B
 * are matrices [M, K] and [K, N] (as stored: [K, M] for op(A) = A^T), or
 * batches of them, [..., M, K]: the leading dims (one or two) equal in both,
 * or one operand 2-D and shared by every matrix of the other (PyTorch's
 * torch.matmul broadcasting, without size-1 dims stretching). C is
 * [..., M, N]. Attention's scores are tg_matmul(tp, q, k, false, true) on
 * [B, T, D] queries and keys. */
tg_tensor *tg_matmul(tg_tape *tp, tg_tensor *a, tg_tensor *b, bool trans_a,
                     bool trans_b);

tg_tensor *tg_add(tg_tape *tp, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_sub(tg_tape *tp, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_mul(tg_tape *tp, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_scale(tg_tape *tp, tg_tensor *x, float s);      /* s * x */
tg_tensor *tg_add_scalar(tg_tape *tp, tg_tensor *x, float s); /* x + s */

tg_tensor *tg_exp(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_log(tg_tape *tp, tg_tensor *x);
/* sigmoid and tanh take their gradients from the float output y, as
 * PyTorch: y (1 - y) and 1 - y^2. Once y rounds to 1 they are 0 (sigmoid
 * beyond x = 16.6, tanh beyond |x| = 9.01) and coarse before that
 * (sigmoid(15)'s is 17% high), where float64 keeps e^-|x|. */
tg_tensor *tg_sigmoid(tg_tape *tp, tg_tensor *x);
/* max(x, 0), gradient 0 where x <= 0; NaN stays NaN and passes its gradient
 * (as PyTorch). */
tg_tensor *tg_relu(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_tanh(tg_tape *tp, tg_tensor *x);
/* log(1 + e^x), stable for any x. Take log sigmoid(x) as -softplus(-x):
 * the composition log(sigmoid(x)) goes wrong where sigmoid does in float
 * (-99.983 at x = -100, subnormal; -Inf below -103.9; 0 above 16.6), as
 * PyTorch's float32 composition does (-Inf already at -100). */
tg_tensor *tg_softplus(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_square(tg_tape *tp, tg_tensor *x);
/* min(max(x, lo), hi); the gradient passes where lo < x < hi and is zero
 * elsewhere, at x == lo and x == hi too (as PyTorch 2.15's clamp; Debian's
 * torch 1.13 passes it at x == lo and x == hi). */
tg_tensor *tg_clamp(tg_tape *tp, tg_tensor *x, float lo, float hi);

tg_tensor *tg_sum(tg_tape *tp, tg_tensor *x);  /* all elements -> [1] */
tg_tensor *tg_mean(tg_tape *tp, tg_tensor *x); /* all -> [1]; 0 if none */
/* Per row: [R, C] -> [R, 1], R the product of the leading dims, so
 * [2, 3, 4] gives [6, 1] (torch's keepdim gives [2, 3, 1]); as b of add, sub,
 * mul or div it broadcasts back onto x as one value per row. The per-row
 * losses and logsumexp give [R, 1] in the same way. */
tg_tensor *tg_sum_rows(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_mean_rows(tg_tape *tp, tg_tensor *x);

/* Splits x along its last axis into k equal parts: outs[i] gets columns
 * [i*C/k, (i+1)*C/k). One op, k outputs; gradients flow back into the
 * matching slices. */
void tg_split(tg_tape *tp, tg_tensor *x, int k, tg_tensor **outs);
/* Joins n tensors with equal leading dims along the last axis. */
tg_tensor *tg_concat(tg_tape *tp, int n, tg_tensor **xs);
/* Same data, new shape (same element count): a view, no copy. */
tg_tensor *tg_reshape(tg_tape *tp, tg_tensor *x, int ndim, const int *shape);

/* Binary cross-entropy of logits x against targets z in [0,1], summed over
 * the last axis: [R, C] -> [R, 1], each row -log p(z|x) under
 * Bernoulli(sigmoid(x)). Stable form: ([x > 0] - z) x + log1p(exp(-|x|))
 * (max(x,0) - x*z without its cancellation for x > 0 and z near 1). The
 * gradient sigmoid(x) - z is rounded as PyTorch's: for z = 1 it is 0 beyond
 * x = 16.6, where sigmoid(x) rounds to 1. */
tg_tensor *tg_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                              tg_tensor *targets);
/* Softmax cross-entropy of logits [R, C] against class labels (0..C-1):
 * [R, 1], each row -log softmax(x)[label]. Labels get no gradient. labels
 * must hold R entries (one per row of logits; a shorter array is read past
 * its end: pass the batch's labels with the batch's logits). Logits of
 * another rank abort: classes are the last axis here, dim 1 in PyTorch's
 * cross_entropy on [B, C, H, W]. */
tg_tensor *tg_softmax_xent(tg_tape *tp, tg_tensor *logits, const int *labels);
/* Negative log-likelihood of log-probabilities logp [R, C] (tg_log_softmax's
 * output, say) at class labels (0..C-1): [R, 1], each row -logp[label], as
 * torch.nn.functional.nll_loss with reduction='none'. Labels get no
 * gradient; labels must hold R entries, as for tg_softmax_xent. */
tg_tensor *tg_nll(tg_tape *tp, tg_tensor *logp, const int *labels);
/* KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis: [R, 1],
 * -0.5 * sum(1 + logvar - mean^2 - exp(logvar)). One fused op. */
tg_tensor *tg_kl_normal(tg_tape *tp, tg_tensor *mean, tg_tensor *logvar);

/* ---- more ops: binary, broadcasting as add / sub / mul ---------------------
 * b has a's shape, is a row, a per-row column [R, 1] or one element. */
/* a / b; b = 0 gives +-Inf or NaN (IEEE), and so does its gradient. */
tg_tensor *tg_div(tg_tape *tp, tg_tensor *a, tg_tensor *b);
/* Elementwise max(a, b) and min(a, b). The gradient goes whole to the
 * operand picked; a tie (a == b) picks a, the first operand (PyTorch splits
 * a tie in halves). A NaN in either operand comes out as NaN and is the
 * operand picked (PyTorch gives the whole gradient to both). */
tg_tensor *tg_maximum(tg_tape *tp, tg_tensor *a, tg_tensor *b);
tg_tensor *tg_minimum(tg_tape *tp, tg_tensor *a, tg_tensor *b);

/* ---- more ops: unary math ---------------------------------------------------
 * Shape in = shape out. Kinks: abs and leaky_relu take the gradient of the
 * x < 0 side at exactly 0 (abs: 0; leaky_relu: slope), as PyTorch. */
tg_tensor *tg_neg(tg_tape *tp, tg_tensor *x); /* -x */
tg_tensor *tg_abs(tg_tape *tp, tg_tensor *x); /* |x| */
/* sqrt(x); the gradient 1 / (2 sqrt x) is +Inf at 0 and NaN below. */
tg_tensor *tg_sqrt(tg_tape *tp, tg_tensor *x);
/* x^p for a constant p (gradient p x^(p-1); p = 0 gives 1 and gradient 0).
 * A non-integer p needs x >= 0: a finite x < 0 gives NaN, and x = -Inf
 * what powf gives (+Inf for p > 0, 0 for p < 0; PyTorch gives NaN for
 * p = +-0.5, its sqrt path), as -0 does ((-0)^-0.5 = +Inf, PyTorch -Inf). */
tg_tensor *tg_pow(tg_tape *tp, tg_tensor *x, float p);
/* x for x > 0, slope * x otherwise (PyTorch's default slope is 0.01). */
tg_tensor *tg_leaky_relu(tg_tape *tp, tg_tensor *x, float slope);
/* The exact GELU x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): PyTorch's
 * default (approximate='none'), not the tanh approximation. */
tg_tensor *tg_gelu(tg_tape *tp, tg_tensor *x);
/* log C of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) with
 * lambda = sigmoid(logits): C = 2 atanh(1 - 2 lambda) / (1 - 2 lambda)
 * = x / tanh(x/2), log 2 at x = 0; a series near 0 and a closed form
 * elsewhere, accurate to a few ulp for any x (about log|x| for large |x|;
 * +-Inf gives +Inf with gradient 0). Adding its sum to -bce_with_logits
 * turns the Bernoulli log-likelihood into the continuous Bernoulli's, a
 * density on [0, 1]. */
tg_tensor *tg_cb_log_norm(tg_tape *tp, tg_tensor *logits);

/* ---- more ops: softmax family (over the last axis, rows independent) -------
 * x [R, C] (leading dims flattened into R), C >= 1. Each row's max is
 * subtracted before exp, so large logits never overflow. A row holding +Inf
 * is shifted by 0: its +Inf entries come out NaN and the others 0 (log:
 * -Inf), where PyTorch makes the whole row NaN; a row of -Inf gives NaN
 * (logsumexp -Inf), as PyTorch. */
tg_tensor *tg_softmax(tg_tape *tp, tg_tensor *x);     /* x's shape */
tg_tensor *tg_log_softmax(tg_tape *tp, tg_tensor *x); /* x's shape */
tg_tensor *tg_logsumexp(tg_tape *tp, tg_tensor *x);   /* [R, 1] */

/* ---- more ops: reductions down the rows -----------------------------------
 * x [R, C] -> [1, C] (2-D, so the result broadcasts back as a row): the
 * column sums / means over every row (for rank > 2, over all leading dims).
 * With 0 rows both are 0 (the mean of nothing is 0, as tg_mean). */
tg_tensor *tg_sum_axis0(tg_tape *tp, tg_tensor *x);
tg_tensor *tg_mean_axis0(tg_tape *tp, tg_tensor *x);

/* ---- more ops: selecting and rearranging --------------------------------- */

/* x [R, C] -> [C, R] (2-D only; a copy). */
tg_tensor *tg_transpose(tg_tape *tp, tg_tensor *x);
/* x with its axes reordered, as torch.permute: y.shape[d] =
 * x.shape[perm[d]]. perm holds x->ndim entries (it is read that far: a
 * shorter array is read past its end), each axis 0..ndim-1 once; unlike
 * torch, negative axes are refused. A copy. For heads of attention:
 * [B, T, H, Dh] -> [B, H, T, Dh] is perm {0, 2, 1, 3}. */
tg_tensor *tg_permute(tg_tape *tp, tg_tensor *x, const int *perm);
/* Columns [c0, c1) of the last axis: [..., C] -> [..., c1 - c0], a copy;
 * 0 <= c0 < c1 <= C. */
tg_tensor *tg_slice_cols(tg_tape *tp, tg_tensor *x, int c0, int c1);
/* Rows [r0, r1) of the first axis: [N, ...] -> [r1 - r0, ...], a view of
 * x's data (no copy); 0 <= r0 <= r1 <= N. */
tg_tensor *tg_slice_rows(tg_tape *tp, tg_tensor *x, int r0, int r1);
/* Embedding lookup: table [N, D], idx[i] in [0, N) -> [n, D], row i is
 * table[idx[i]]. Backward adds row i's gradient into table row idx[i];
 * repeated indices sum, in index order, the same for any thread count.
 * idx is copied: the caller's array may go once the call returns. */
tg_tensor *tg_gather_rows(tg_tape *tp, tg_tensor *table, const int *idx, int n);
/* Stop-gradient: x's values (shared, not copied) as a constant. Nothing is
 * recorded; the result never requires grad. */
tg_tensor *tg_detach(tg_tape *tp, tg_tensor *x);

/* ---- more ops: normalisation and masking --------------------------------- */

/* Layer normalisation over the last axis: x [R, C] or [..., C] (each row
 * of the last axis alone; y has x's shape, so [B, T, D] stays [B, T, D]),
 * gamma and beta [C] or [1, C] (either may be NULL: scale 1, shift 0),
 * eps >= 0 (PyTorch: 1e-5):
 * y = (x - mean) / sqrt(var + eps) * gamma + beta, per row, with the biased
 * variance (divide by C) as PyTorch. Saves mean and 1/std for backward. */
tg_tensor *tg_layer_norm(tg_tape *tp, tg_tensor *x, tg_tensor *gamma,
                         tg_tensor *beta, float eps);
/* Group normalisation, as torch.nn.functional.group_norm: x [B, C, ...]
 * (2-4 dims: [B, C], [B, C, L], [B, C, H, W]), groups >= 1 dividing C,
 * gamma and beta [C] or [1, C] (either may be NULL: scale 1, shift 0),
 * eps >= 0 (PyTorch: 1e-5). Each example's channels split into `groups`
 * groups of C / groups; each (example, group) is normalised over its
 * channels and positions with the biased variance, then
 * y[b, c, ...] = xhat * gamma[c] + beta[c]. groups = C is InstanceNorm,
 * groups = 1 a LayerNorm over C·H·W (scaled per channel). Each example
 * alone (no batch statistics). Saves mean and 1/std per (example, group)
 * for backward. */
tg_tensor *tg_group_norm(tg_tape *tp, tg_tensor *x, int groups,
                         tg_tensor *gamma, tg_tensor *beta, float eps);
/* y = keep[k] ? scale * x[k] : 0 for each element k (keep has x->size
 * bytes, nonzero = keep; copied, so the caller's may go). The building block
 * of dropout: tg_dropout (tg_nn.h) draws the mask from a tg_rng. A select,
 * not a product: a dropped element and its gradient are 0 even where x or
 * dy is Inf or NaN (PyTorch's x * mask gives NaN there). */
tg_tensor *tg_mask_scale(tg_tape *tp, tg_tensor *x, const uint8_t *keep,
                         float scale);

/* ---- more losses (per row, [R, C] -> [R, 1], like bce_with_logits) ------ */

/* Binary cross-entropy of probabilities p against targets z (equal shapes),
 * for models that apply sigmoid themselves (prefer bce_with_logits when you
 * have logits: it is exact where this one clamps):
 * -sum_c z log q + (1 - z) log(1 - q),  q = clamp(p, eps, 1 - eps) with
 * eps = TG_BCE_EPS = 1e-7. Where p is at or beyond a bound (p <= eps or
 * p >= 1 - eps) the gradient to p is 0: a saturated probability gets no
 * signal. (PyTorch's binary_cross_entropy clamps log p at -100 instead.) */
#define TG_BCE_EPS 1e-7f
tg_tensor *tg_bce(tg_tape *tp, tg_tensor *probs, tg_tensor *targets);
/* KL(N(mean_q, e^logvar_q) || N(mean_p, e^logvar_p)) of two diagonal
 * Gaussians, summed over the last axis: mean_q, logvar_q [R, C]; mean_p,
 * logvar_p (of one shape) either [R, C] too or one row [C] / [1, C] shared
 * by every row (a learned prior):
 * 0.5 * sum(lvp - lvq + e^(lvq - lvp) + (mq - mp)^2 e^-lvp - 1).
 * One fused op; every input gets a gradient. */
tg_tensor *tg_kl_normals(tg_tape *tp, tg_tensor *mean_q, tg_tensor *logvar_q,
                         tg_tensor *mean_p, tg_tensor *logvar_p);
/* ---- convolution and pooling (NCHW) ----------------------------------------
 * Images are [N, C, H, W]. Geometry per axis (h, w); in tg_conv2d_args a
 * stride or dilation of 0 means 1, so {0} is a plain stride-1 convolution.
 * Output sizes are PyTorch's:
 *   conv2d:           floor((H + 2p - d(k-1) - 1) / s) + 1
 *   conv_transpose2d: (H - 1)s - 2p + d(k-1) + output_padding + 1
 * A geometry that gives an output size < 1 aborts, naming op and shapes.
 * An Inf or NaN in x of a conv2d with C = 1 (the direct kernels, taken
 * with an AVX2 or AVX-512 GEMM kernel) makes the weight gradients whose
 * taps pass over it NaN, where PyTorch's may be +-Inf or finite: those
 * kernels multiply it by the zeros of their padding columns. The output is
 * non-finite there already. */
typedef struct tg_conv2d_args {
    int stride[2];
    int padding[2];
    int dilation[2];
    int output_padding[2]; /* conv_transpose2d only; < stride or dilation */
    /* relu: the output is max(0, .) of the convolution plus bias, with
     * tg_relu's values and gradients bit for bit, computed inside the op
     * (without the two passes over memory and the tensor a tg_relu after
     * it takes). */
    bool relu;
} tg_conv2d_args;

/* y [N, OC, OH, OW] = x [N, C, H, W] convolved (cross-correlated, as
 * PyTorch) with W [OC, C, kh, kw], plus b [OC] (b may be NULL). */
tg_tensor *tg_conv2d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation);
tg_tensor *tg_conv2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                        const tg_conv2d_args *args);
/* The adjoint of conv2d ("deconvolution"): W [C, OC, kh, kw] as PyTorch's
 * ConvTranspose2d, x [N, C, H, W] -> y [N, OC, OH, OW], b [OC] or NULL. */
tg_tensor *tg_conv_transpose2d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation);
tg_tensor *tg_conv_transpose2d_ex(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                                  tg_tensor *b, const tg_conv2d_args *args);
/* Square windows of side kernel, stride (0: = kernel), padding at most
 * kernel/2; output floor((H + 2p - k) / s) + 1 per axis. max_pool2d sends
 * each output's gradient to its window's maximum (ties: the first in
 * row-major window order; padding never wins; a NaN wins, the first of a
 * window's NaNs). avg_pool2d divides the sum of the real elements by
 * kernel^2 (PyTorch's count_include_pad=True), summed and scaled in
 * double and rounded once: a window of one value averages to that value,
 * also near FLT_MAX (PyTorch's float32 rounds at each addition); each
 * element's gradient is dy / kernel^2 rounded once, as the means'. */
tg_tensor *tg_max_pool2d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding);
tg_tensor *tg_avg_pool2d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding);
/* Nearest neighbour: y [N, C, H*s, W*s], y[.., h, w] = x[.., h/s, w/s]. */
tg_tensor *tg_upsample2d(tg_tape *tp, tg_tensor *x, int scale);

/* 1-D, as PyTorch's Conv1d, ConvTranspose1d, MaxPool1d and AvgPool1d:
 * sequences x [N, C, L], weights [OC, C, k] (conv1d) and [C, OC, k]
 * (conv_transpose1d), b [OC] or NULL, output lengths by the formulas above;
 * stride and dilation 0 mean 1 (a pool's stride 0: = kernel). Each is its
 * 2-D op on the views [N, C, 1, L] and [.., 1, k], with the same paths,
 * determinism and edge rules (ties, padding), and aborts naming the 1-D op
 * with the shapes it was given. */
tg_tensor *tg_conv1d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation);
tg_tensor *tg_conv_transpose1d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation);
tg_tensor *tg_max_pool1d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding);
tg_tensor *tg_avg_pool1d(tg_tape *tp, tg_tensor *x, int kernel, int stride,
                         int padding);

/* ---- writing your own op ------------------------------------------------
 * An op is two functions. Its forward checks its inputs
 * (tg_check_tensors), makes its outputs on the tape (tg_tape_tensor),
 * computes them, and calls tg_op_record. Its backward is called by
 * tg_backward with the record: it reads each output's gradient
 * (tg_op_grad_out) and ADDS (+=, never =: an input may feed several ops)
 * into each input's gradient, tg_grad_of(tp, input), which is NULL for an
 * input that needs none. The tape then gives a user's op every guarantee a
 * built-in one has: repeated backward, recording off, 0-row batches, and the
 * gradient check (tg_gradcheck). README, "Writing your own op", has a
 * complete example. */
typedef struct tg_record tg_record; /* one op on the tape */
typedef void (*tg_backward_fn)(tg_tape *tp, tg_record *r);

/* Records an op on tp: n_in inputs (none NULL), n_out outputs (tensors made
 * on tp for this op), and saved, any memory the backward needs (usually from
 * tg_tape_alloc, so it lives as long as the record). name appears in error
 * messages and must outlive the tape (a string literal). When tp is not
 * recording or no input requires grad, records nothing and returns NULL;
 * otherwise marks the outputs as requiring grad and returns the record. */
tg_record *tg_op_record(tg_tape *tp, const char *name, tg_backward_fn backward,
                        int n_in, tg_tensor *const *inputs, int n_out,
                        tg_tensor *const *outputs, void *saved);
/* In a backward: the record's i-th input and output, output i's gradient
 * dL/dy (same shape as the output; NULL when that output did not reach the
 * loss), and the saved pointer given to tg_op_record. */
tg_tensor *tg_op_input(const tg_record *r, int i);
tg_tensor *tg_op_output(const tg_record *r, int i);
const float *tg_op_grad_out(const tg_record *r, int i);
void *tg_op_saved(const tg_record *r);
/* t's gradient buffer, to add into; zero-filled at first use. NULL when t
 * does not require grad (a constant). */
float *tg_grad_of(tg_tape *tp, tg_tensor *t);
/* Aborts with "tapegrad: OP: tensor argument K is NULL" when any of the n
 * tensors is NULL. */
void tg_check_tensors(const char *op, int n, const tg_tensor *const *ts);

/* ---- matmul kernel --------------------------------------------------------
 * C[M,N] = alpha * op(A) . op(B) + beta * C, row-major, leading dimensions in
 * elements (at least a stored row's length; any dimension may be 0, K = 0
 * giving beta * C; each at most INT_MAX - 128, else it aborts). op(A) is
 * M x K, op(B) is K x N. Used by dense, matmul and the convolutions,
 * forward and backward. Results do not depend on the thread count. As in
 * BLAS, beta = 0 never reads C and alpha = 0 never reads A or B (a NaN
 * there does not reach the result). */
void tg_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
             const float *A, int lda, const float *B, int ldb, float beta,
             float *C, int ldc);
/* Threads used by the library (OpenMP). 0 (the default; or less) means
 * OMP_NUM_THREADS when the environment sets it, else all cores, falling back
 * to one thread while the machine is too busy for more to pay; n > 0 is used
 * as given. tg_get_threads reports the count (before any fallback): always 1
 * in a build without OpenMP, whatever was set. */
void tg_set_threads(int n);
int tg_get_threads(void);
/* The micro-kernel in use ("avx512", "avx2", "portable"; "avx2-4x24" or
 * "avx2-6x16" pin one AVX2 tile, where "avx2" picks per call). Forcing one
 * the CPU cannot run is refused (returns false). TG_GEMM_KERNEL in the
 * environment does the same at start-up. */
const char *tg_gemm_kernel(void);
bool tg_gemm_set_kernel(const char *name);
/* What decides the GEMM's float results here, as text: the kernel and its
 * K blocks (from the CPU's L1 size, or TG_GEMM_BLOCKS="kc,nc", a tuning aid;
 * a value not of that form is ignored with a note on stderr). Processes with
 * the same text compute the same bits; data-parallel ranks compare it. */
const char *tg_gemm_numerics(void);

/* ---- gradient check ---------------------------------------------------------
 * f builds a graph on tp from inputs and returns its output (any shape).
 * tg_gradcheck compares backward's gradient of L = sum(w * f(inputs)) (w
 * fixed random weights, sums in double) with fourth-order central differences
 * in each input element. An element fails when
 * |analytic - numeric| > atol + rtol * |numeric|. It also fails when every
 * analytic and numeric gradient is zero (a check that cannot fail is no
 * check). Inputs may be long-lived tensors or tape tensors (of a tape other
 * than the one f is given); their data, gradients and requires_grad are
 * restored. Any other tensor f uses that requires grad (a parameter left
 * out of inputs, say) collects the check's one backward pass into its
 * gradient: pass every parameter f uses, or zero the gradients after. */
typedef tg_tensor *(*tg_graph_fn)(tg_tape *tp, tg_tensor **inputs, void *ctx);

typedef struct tg_gradcheck_report {
    bool ok;
    bool all_zero;      /* both gradients were zero everywhere */
    double max_abs_err; /* worst |analytic - numeric| */
    double max_rel_err; /* worst |analytic - numeric| / max(|numeric|, 1e-3) */
    int worst_input;    /* where the worst ratio to the tolerance was */
    size_t worst_index;
    double worst_analytic, worst_numeric;
    size_t checked; /* elements compared */
} tg_gradcheck_report;

/* Every field left 0 takes its default (so {.eps = 0x1p-8} changes the step
 * alone); a value not > 0 is taken as 0. */
typedef struct tg_gradcheck_opts {
    double eps;    /* step, rounded to a power of two (default 2^-6) */
    double atol;   /* default 1e-4; also the all-zero guard's bound */
    double rtol;   /* default 1e-3 */
    uint64_t seed; /* of the random output weights (default 42) */
} tg_gradcheck_opts;

/* opts may be NULL for the defaults. Returns report.ok. */
bool tg_gradcheck(tg_graph_fn f, int n_inputs, tg_tensor **inputs, void *ctx,
                  const tg_gradcheck_opts *opts, tg_gradcheck_report *report);
/* One line: "ok: 123 elements, max abs err ..., max rel err ..." or where it
 * failed. */
void tg_gradcheck_print(const tg_gradcheck_report *r, const char *name);

#ifdef __cplusplus
}
#endif
#endif

/* Gradient check of every op, on random shapes (1x1 and non-square among
 * them) and random values, plus composite graphs and the checker's own
 * ability to fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_autograd.h"

#define TEST_SEED 12345
#include "test_random.h"

/* ---- random inputs ------------------------------------------------------- */

/* Values in [lo, hi], kept at least `gap` away from each kink point (so a
 * finite-difference step never straddles a point where f is not smooth). */
typedef struct domain {
    float lo, hi, gap;
    int n_kinks;
    float kinks[2];
} domain;

enum { ANY, POSITIVE, PROB, AWAY_FROM_0, CLAMP_RANGE };
static const domain domains[] = {
    [ANY] = {-2.0f, 2.0f, 0.0f, 0, {0}},
    [POSITIVE] = {0.5f, 2.0f, 0.0f, 0, {0}},
    [PROB] = {0.0f, 1.0f, 0.0f, 0, {0}},
    [AWAY_FROM_0] = {-2.0f, 2.0f, 0.1f, 1, {0.0f}},
    [CLAMP_RANGE] = {-1.0f, 1.0f, 0.1f, 2, {-0.5f, 0.5f}},
};

static tg_tensor *random_tensor(int ndim, const int *shape, int kind)
{
    domain d = domains[kind];
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t i = 0; i < t->size; i++) {
        float v;
        bool near;
        do {
            v = d.lo + (float)uniform() * (d.hi - d.lo);
            near = false;
            for (int k = 0; k < d.n_kinks; k++)
                near |= fabsf(v - d.kinks[k]) < d.gap;
        } while (near);
        t->data[i] = v;
    }
    return t;
}

static tg_tensor *rand2(int rows, int cols, int kind)
{
    return random_tensor(2, (int[]){rows, cols}, kind);
}

/* ---- the graphs under test: one per op --------------------------------- */

static tg_tensor *f_dense(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    return tg_dense(tp, in[0], in[1], in[2]);
}
static tg_tensor *f_dense_nobias(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    return tg_dense(tp, in[0], in[1], NULL);
}
static tg_tensor *f_matmul(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const int *flags = ctx;
    return tg_matmul(tp, in[0], in[1], flags[0], flags[1]);
}
static tg_tensor *f_add(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_add(tp, in[0], in[1]);
}
static tg_tensor *f_sub(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_sub(tp, in[0], in[1]);
}
static tg_tensor *f_mul(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_mul(tp, in[0], in[1]);
}
static tg_tensor *f_scale(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_scale(tp, in[0], -1.75f);
}
static tg_tensor *f_add_scalar(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_add_scalar(tp, in[0], 0.3f);
}
static tg_tensor *f_exp(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_exp(tp, in[0]);
}
static tg_tensor *f_log(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_log(tp, in[0]);
}
static tg_tensor *f_sigmoid(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_sigmoid(tp, in[0]);
}
static tg_tensor *f_relu(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_relu(tp, in[0]);
}
static tg_tensor *f_tanh(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_tanh(tp, in[0]);
}
static tg_tensor *f_softplus(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_softplus(tp, in[0]);
}
static tg_tensor *f_square(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_square(tp, in[0]);
}
static tg_tensor *f_clamp(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_clamp(tp, in[0], -0.5f, 0.5f);
}
static tg_tensor *f_sum(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_sum(tp, in[0]);
}
static tg_tensor *f_mean(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_mean(tp, in[0]);
}
static tg_tensor *f_sum_rows(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_sum_rows(tp, in[0]);
}
static tg_tensor *f_mean_rows(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_mean_rows(tp, in[0]);
}
static tg_tensor *f_bce(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_bce_with_logits(tp, in[0], in[1]);
}
static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_kl_normal(tp, in[0], in[1]);
}

/* Each split part is weighted differently, so a gradient sent to the wrong
 * slice shows. */
static tg_tensor *f_split(tg_tape *tp, tg_tensor **in, void *ctx)
{
    int k = *(const int *)ctx;
    tg_tensor *parts[8];
    tg_split(tp, in[0], k, parts);
    tg_tensor *acc = tg_scale(tp, parts[0], 1.0f);
    for (int p = 1; p < k; p++)
        acc = tg_add(tp, acc, tg_scale(tp, tg_square(tp, parts[p]), (float)p));
    return acc;
}

static tg_tensor *f_split_unused(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    tg_tensor *parts[2];
    tg_split(tp, in[0], 2, parts);
    return tg_exp(tp, parts[1]); /* parts[0] never reaches the output */
}

static tg_tensor *f_concat(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_concat(tp, 3, in);
}

static tg_tensor *f_reshape(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    int n = (int)in[0]->size;
    tg_tensor *flat = tg_reshape(tp, in[0], 1, &n);
    return tg_square(tp, flat);
}

static int *xent_labels;
static tg_tensor *f_xent(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_softmax_xent(tp, in[0], xent_labels);
}
static tg_tensor *f_nll(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_nll(tp, in[0], xent_labels);
}

/* ---- the table ----------------------------------------------------------- */

typedef enum layout {
    ONE,          /* x [R, C] */
    SAME2,        /* a, b [R, C] */
    ROW_B,        /* a [R, C], b [C] */
    COL_B,        /* a [R, C], b [R, 1] */
    SCALAR_B,     /* a [R, C], b [1] */
    DENSE,        /* x [R, in], W [C, in], b [C] */
    DENSE_NOBIAS, /* x [R, in], W [C, in] */
    MATMUL,       /* shapes from the transpose flags in ctx */
    SPLIT,        /* x [R, k * w] */
    CONCAT3,      /* three [R, C_p] */
    RANK3,        /* x [2, R, C] */
    RANK3_ROW,    /* a [2, R, C], b [1, 1, C] */
    RANK3_COL,    /* a [2, R, C], b [2, R, 1] */
} layout;

typedef struct op_case {
    const char *name;
    tg_graph_fn f;
    layout layout;
    int dom[2]; /* value domain of each input */
    void *ctx;
} op_case;

static int tt[] = {1, 1}, tn[] = {1, 0}, nt[] = {0, 1}, nn[] = {0, 0};
static int split1 = 1, split2 = 2, split3 = 3;

static const op_case cases[] = {
    {"dense", f_dense, DENSE, {ANY, ANY}, NULL},
    {"dense (no bias)", f_dense_nobias, DENSE_NOBIAS, {ANY, ANY}, NULL},
    {"matmul", f_matmul, MATMUL, {ANY, ANY}, nn},
    {"matmul A^T", f_matmul, MATMUL, {ANY, ANY}, tn},
    {"matmul B^T", f_matmul, MATMUL, {ANY, ANY}, nt},
    {"matmul A^T B^T", f_matmul, MATMUL, {ANY, ANY}, tt},
    {"add", f_add, SAME2, {ANY, ANY}, NULL},
    {"add row", f_add, ROW_B, {ANY, ANY}, NULL},
    {"add per-row", f_add, COL_B, {ANY, ANY}, NULL},
    {"add scalar tensor", f_add, SCALAR_B, {ANY, ANY}, NULL},
    {"sub", f_sub, SAME2, {ANY, ANY}, NULL},
    {"sub row", f_sub, ROW_B, {ANY, ANY}, NULL},
    {"sub per-row", f_sub, COL_B, {ANY, ANY}, NULL},
    {"mul", f_mul, SAME2, {ANY, ANY}, NULL},
    {"mul row", f_mul, ROW_B, {ANY, ANY}, NULL},
    {"mul per-row", f_mul, COL_B, {ANY, ANY}, NULL},
    {"mul scalar tensor", f_mul, SCALAR_B, {ANY, ANY}, NULL},
    {"scale", f_scale, ONE, {ANY}, NULL},
    {"add_scalar", f_add_scalar, ONE, {ANY}, NULL},
    {"exp", f_exp, ONE, {ANY}, NULL},
    {"log", f_log, ONE, {POSITIVE}, NULL},
    {"sigmoid", f_sigmoid, ONE, {ANY}, NULL},
    {"relu", f_relu, ONE, {AWAY_FROM_0}, NULL},
    {"tanh", f_tanh, ONE, {ANY}, NULL},
    {"softplus", f_softplus, ONE, {ANY}, NULL},
    {"square", f_square, ONE, {ANY}, NULL},
    {"clamp", f_clamp, ONE, {CLAMP_RANGE}, NULL},
    {"sum", f_sum, ONE, {ANY}, NULL},
    {"mean", f_mean, ONE, {ANY}, NULL},
    {"sum_rows", f_sum_rows, ONE, {ANY}, NULL},
    {"mean_rows", f_mean_rows, ONE, {ANY}, NULL},
    {"split 2", f_split, SPLIT, {ANY}, &split2},
    {"split 3", f_split, SPLIT, {ANY}, &split3},
    {"split, one part unused", f_split_unused, SPLIT, {ANY}, &split2},
    {"concat", f_concat, CONCAT3, {ANY}, NULL},
    {"reshape", f_reshape, RANK3, {ANY}, NULL},
    {"bce_with_logits", f_bce, SAME2, {ANY, PROB}, NULL},
    {"softmax_xent", f_xent, ONE, {ANY}, NULL},
    {"nll", f_nll, ONE, {ANY}, NULL},
    {"kl_normal", f_kl, SAME2, {ANY, ANY}, NULL},
    /* broadcasting over a rank-3 a (last: the rows above keep their draws) */
    {"add rank 3, row [1, 1, C]", f_add, RANK3_ROW, {ANY, ANY}, NULL},
    {"sub rank 3, row [1, 1, C]", f_sub, RANK3_ROW, {ANY, ANY}, NULL},
    {"mul rank 3, row [1, 1, C]", f_mul, RANK3_ROW, {ANY, ANY}, NULL},
    {"add rank 3, per-row [2, R, 1]", f_add, RANK3_COL, {ANY, ANY}, NULL},
    {"sub rank 3, per-row [2, R, 1]", f_sub, RANK3_COL, {ANY, ANY}, NULL},
    {"mul rank 3, per-row [2, R, 1]", f_mul, RANK3_COL, {ANY, ANY}, NULL},
    /* one part, the whole of x: a valid split (k <= 1 refused it) */
    {"split 1", f_split, SPLIT, {ANY}, &split1},
};

static int make_inputs(const op_case *c, int R, int C, tg_tensor **in)
{
    int in_dim = randint(1, 5);
    switch (c->layout) {
    case ONE:
        in[0] = rand2(R, C, c->dom[0]);
        return 1;
    case SAME2:
        in[0] = rand2(R, C, c->dom[0]);
        in[1] = rand2(R, C, c->dom[1]);
        return 2;
    case ROW_B:
        in[0] = rand2(R, C, c->dom[0]);
        in[1] = random_tensor(1, &C, c->dom[1]);
        return 2;
    case COL_B:
        in[0] = rand2(R, C, c->dom[0]);
        in[1] = rand2(R, 1, c->dom[1]);
        return 2;
    case SCALAR_B:
        in[0] = rand2(R, C, c->dom[0]);
        in[1] = random_tensor(1, (int[]){1}, c->dom[1]);
        return 2;
    case DENSE:
    case DENSE_NOBIAS:
        in[0] = rand2(R, in_dim, c->dom[0]);
        in[1] = rand2(C, in_dim, c->dom[1]);
        if (c->layout == DENSE_NOBIAS)
            return 2;
        in[2] = random_tensor(1, &C, ANY);
        return 3;
    case MATMUL: {
        const int *t = c->ctx;
        int K = in_dim;
        in[0] = t[0] ? rand2(K, R, ANY) : rand2(R, K, ANY);
        in[1] = t[1] ? rand2(C, K, ANY) : rand2(K, C, ANY);
        return 2;
    }
    case SPLIT:
        in[0] = rand2(R, C * *(const int *)c->ctx, c->dom[0]);
        return 1;
    case CONCAT3:
        for (int p = 0; p < 3; p++)
            in[p] = rand2(R, randint(1, 4), c->dom[0]);
        return 3;
    case RANK3:
        in[0] = random_tensor(3, (int[]){2, R, C}, c->dom[0]);
        return 1;
    case RANK3_ROW:
    case RANK3_COL:
        in[0] = random_tensor(3, (int[]){2, R, C}, c->dom[0]);
        in[1] = c->layout == RANK3_ROW
                    ? random_tensor(3, (int[]){1, 1, C}, c->dom[1])
                    : random_tensor(3, (int[]){2, R, 1}, c->dom[1]);
        return 2;
    }
    return 0;
}

/* Shapes per case: 1x1, a column, a row, then random non-square ones. */
static void shape_for_trial(int trial, int *R, int *C)
{
    static const int fixed[][2] = {{1, 1}, {4, 1}, {1, 5}};
    if (trial < 3) {
        *R = fixed[trial][0];
        *C = fixed[trial][1];
    } else {
        *R = randint(2, 6);
        do
            *C = randint(2, 7);
        while (*C == *R);
    }
}

#define TRIALS 6

/* The op's graph with every input used once more after it: y and the
 * inputs themselves, each flattened to one row, joined side by side. The
 * later uses run their backward first, so the op's backward finds each
 * input's gradient already holding the check's weights and must add to it
 * (a backward that wrote its share over them passed the check of the op
 * alone). Joined rather than summed into y: y + sum(x^2) carried float
 * rounding of the sum into every element, 1e-2 off for logits ~100. */
typedef struct fan_out_ctx {
    const op_case *c;
    int n;
} fan_out_ctx;

static tg_tensor *f_fan_out(tg_tape *tp, tg_tensor **in, void *ctx)
{
    const fan_out_ctx *fo = ctx;
    tg_tensor *y = fo->c->f(tp, in, fo->c->ctx);
    tg_tensor *parts[5];
    parts[0] = tg_reshape(tp, y, 2, (int[]){1, (int)y->size});
    for (int i = 0; i < fo->n; i++)
        parts[i + 1] = tg_reshape(tp, in[i], 2, (int[]){1, (int)in[i]->size});
    return tg_concat(tp, fo->n + 1, parts);
}

static void check_every_op(bool fan_out)
{
    int failures = 0;
    printf("%-26s %8s %12s %12s\n", "op", "elements", "max abs err",
           "max rel err");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const op_case *c = &cases[k];
        double worst_abs = 0, worst_rel = 0;
        size_t elements = 0;
        for (int trial = 0; trial < TRIALS; trial++) {
            int R, C;
            shape_for_trial(trial, &R, &C);
            tg_tensor *in[3] = {0};
            if (c->f == f_xent && C == 1)
                C = 2; /* one class: the loss is 0 whatever the logits */
            int n = make_inputs(c, R, C, in);
            if (c->f == f_clamp)
                in[0]->data[0] = 0.25f; /* at least one value unclamped */
            /* one value positive: a 1x1 relu input had an even chance of
             * all-zero gradients, which the check fails */
            if (c->f == f_relu)
                in[0]->data[0] = fabsf(in[0]->data[0]);
            int labels[16];
            for (int i = 0; i < R; i++)
                labels[i] = randint(0, C - 1);
            xent_labels = labels;
            tg_gradcheck_report rep;
            fan_out_ctx fo = {c, n};
            bool ok = fan_out ? tg_gradcheck(f_fan_out, n, in, &fo, NULL, &rep)
                              : tg_gradcheck(c->f, n, in, c->ctx, NULL, &rep);
            if (!ok) {
                char name[96];
                snprintf(name, sizeof name, "%s%s (trial %d, R=%d C=%d)",
                         c->name, fan_out ? ", fan-out" : "", trial, R, C);
                tg_gradcheck_print(&rep, name);
                failures++;
            }
            worst_abs = fmax(worst_abs, rep.max_abs_err);
            worst_rel = fmax(worst_rel, rep.max_rel_err);
            elements += rep.checked;
            for (int i = 0; i < n; i++)
                tg_tensor_free(in[i]);
        }
        printf("%-26s %8zu %12.3g %12.3g\n", c->name, elements, worst_abs,
               worst_rel);
    }
    assert_int_equal(failures, 0);
}

static void test_every_op(void **state)
{
    (void)state;
    check_every_op(false);
}

/* Each op's backward adds into gradients that already hold something. */
static void test_every_op_accumulates(void **state)
{
    (void)state;
    check_every_op(true);
}

/* ---- forward values -------------------------------------------------------
 * The check above compares the backward with the forward's differences, so
 * it passes a forward off by a constant (add_scalar's x - s had passed).
 * Each elementwise op here against its closed form in double. */

static double ref_exp(double x) { return exp(x); }
static double ref_log(double x) { return log(fabs(x) + 0.125); }
static double ref_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double ref_relu(double x) { return x > 0 ? x : 0.0; }
static double ref_tanh(double x) { return tanh(x); }
static double ref_softplus(double x) { return log1p(exp(x)); }
static double ref_square(double x) { return x * x; }
static double ref_scale(double x) { return -1.75 * x; }
static double ref_add_scalar(double x) { return x + 0.3; }
static double ref_clamp(double x) { return fmin(fmax(x, -0.5), 0.5); }

static tg_tensor *f_log_shifted(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c; /* log of |x| + 1/8, so that every x of the grid has one */
    return tg_log(tp, tg_add_scalar(tp, tg_abs(tp, in[0]), 0.125f));
}

static void test_elementwise_values(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        tg_graph_fn f;
        double (*ref)(double);
    } ops[] = {
        {"exp", f_exp, ref_exp},
        {"log", f_log_shifted, ref_log},
        {"sigmoid", f_sigmoid, ref_sigmoid},
        {"relu", f_relu, ref_relu},
        {"tanh", f_tanh, ref_tanh},
        {"softplus", f_softplus, ref_softplus},
        {"square", f_square, ref_square},
        {"scale", f_scale, ref_scale},
        {"add_scalar", f_add_scalar, ref_add_scalar},
        {"clamp", f_clamp, ref_clamp},
    };
    enum { N = 33 };
    tg_tensor *x = tg_tensor_new2(1, N);
    for (int k = 0; k < N; k++) /* -4 .. 4 by 1/4, 0 and both signs */
        x->data[k] = -4.0f + 0.25f * (float)k;
    int failures = 0;
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = ops[o].f(tp, &x, NULL);
        assert_int_equal(y->size, N);
        for (int k = 0; k < N; k++) {
            double want = ops[o].ref(x->data[k]);
            if (!(fabs(y->data[k] - want) <= 1e-6 + 1e-5 * fabs(want))) {
                printf("%s(%g) = %.9g, want %.9g\n", ops[o].name,
                       (double)x->data[k], (double)y->data[k], want);
                failures++;
            }
        }
        tg_tape_free(tp);
    }
    tg_tensor_free(x);
    assert_int_equal(failures, 0);
}

/* ---- composite graphs ---------------------------------------------------- */

/* Two-layer MLP: mean over rows of bce(dense(relu(dense(x))), target). */
static tg_tensor *f_mlp(tg_tape *tp, tg_tensor **in, void *ctx)
{
    tg_tensor *target = ctx;
    tg_tensor *h = tg_relu(tp, tg_dense(tp, in[0], in[1], in[2]));
    tg_tensor *logits = tg_dense(tp, h, in[3], in[4]);
    return tg_mean(tp, tg_bce_with_logits(tp, logits, target));
}

static void test_mlp_loss(void **state)
{
    (void)state;
    tg_tensor *target = rand2(5, 3, PROB);
    tg_tensor *in[5];
    /* Draw until every hidden pre-activation is clear of ReLU's kink by more
     * than a finite-difference step can move it. */
    for (bool clear = false; !clear;) {
        in[0] = rand2(5, 4, ANY);
        in[1] = rand2(6, 4, ANY);
        in[2] = random_tensor(1, (int[]){6}, ANY);
        in[3] = rand2(3, 6, ANY);
        in[4] = random_tensor(1, (int[]){3}, ANY);
        tg_tape *tp = tg_tape_new();
        tg_tensor *pre = tg_dense(tp, in[0], in[1], in[2]);
        clear = true;
        for (size_t i = 0; i < pre->size; i++)
            clear &= fabsf(pre->data[i]) > 0.2f;
        tg_tape_free(tp);
        for (int i = 0; !clear && i < 5; i++)
            tg_tensor_free(in[i]);
    }
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_mlp, 5, in, target, NULL, &rep);
    tg_gradcheck_print(&rep, "mlp loss");
    assert_true(ok);
    for (int i = 0; i < 5; i++)
        tg_tensor_free(in[i]);
    tg_tensor_free(target);
}

/* The same W and b used by two layers, and x used three times (fan-out). */
static tg_tensor *f_shared(tg_tape *tp, tg_tensor **in, void *ctx)
{
    (void)ctx;
    tg_tensor *x = in[0], *W = in[1], *b = in[2];
    tg_tensor *h = tg_tanh(tp, tg_dense(tp, x, W, b));
    tg_tensor *y = tg_dense(tp, h, W, b);
    return tg_add(tp, tg_mul(tp, y, x), tg_exp(tp, x));
}

static void test_shared_weights_and_fan_out(void **state)
{
    (void)state;
    tg_tensor *in[3] = {rand2(3, 4, ANY), rand2(4, 4, ANY),
                        random_tensor(1, (int[]){4}, ANY)};
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_shared, 3, in, NULL, NULL, &rep);
    tg_gradcheck_print(&rep, "shared weights");
    assert_true(ok);
    for (int i = 0; i < 3; i++)
        tg_tensor_free(in[i]);
}

/* ---- the checker must be able to fail ------------------------------------ */

/* exp with a wrong backward (dy * x instead of dy * e^x), written as a
 * user's op through the public API. */
static void bad_exp_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = tg_op_input(r, 0);
    float *dx = tg_grad_of(tp, x);
    const float *dy = tg_op_grad_out(r, 0);
    for (size_t i = 0; i < x->size; i++)
        dx[i] += dy[i] * x->data[i];
}

static tg_tensor *f_bad_exp(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *x = in[0], *y = tg_tape_tensor(tp, x->ndim, x->shape, false);
    for (size_t i = 0; i < x->size; i++)
        y->data[i] = expf(x->data[i]);
    tg_op_record(tp, "bad_exp", bad_exp_backward, 1, &x, 1, &y, NULL);
    return y;
}

static void test_wrong_backward_fails(void **state)
{
    (void)state;
    tg_tensor *x = rand2(3, 4, ANY);
    tg_gradcheck_report rep;
    assert_false(tg_gradcheck(f_bad_exp, 1, &x, NULL, NULL, &rep));
    assert_false(rep.all_zero);
    tg_tensor_free(x);
}

/* 2x whose backward leaves a NaN in element 1's gradient: NaN compares
 * false with any tolerance, and the check had passed it. */
static void nan_grad_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = tg_op_input(r, 0);
    float *dx = tg_grad_of(tp, x);
    const float *dy = tg_op_grad_out(r, 0);
    for (size_t i = 0; i < x->size; i++)
        dx[i] += 2.0f * dy[i];
    dx[1] = NAN;
}

static tg_tensor *f_nan_grad(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *x = in[0], *y = tg_tape_tensor(tp, x->ndim, x->shape, false);
    for (size_t i = 0; i < x->size; i++)
        y->data[i] = 2.0f * x->data[i];
    tg_op_record(tp, "nan_grad", nan_grad_backward, 1, &x, 1, &y, NULL);
    return y;
}

static void test_nan_gradient_fails(void **state)
{
    (void)state;
    tg_tensor *x = rand2(3, 4, ANY);
    tg_gradcheck_report rep;
    assert_false(tg_gradcheck(f_nan_grad, 1, &x, NULL, NULL, &rep));
    assert_int_equal(rep.worst_input, 0);
    assert_int_equal(rep.worst_index, 1);
    assert_true(isnan(rep.worst_analytic));
    tg_tensor_free(x);
}

static void test_all_zero_gradients_fail(void **state)
{
    (void)state;
    tg_tensor *x = rand2(3, 4, ANY);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = -0.5f - fabsf(x->data[i]); /* all negative */
    tg_gradcheck_report rep;
    assert_false(tg_gradcheck(f_relu, 1, &x, NULL, NULL, &rep));
    assert_true(rep.all_zero);
    /* with options that set only the step (the README's advice), the
     * tolerances keep their defaults and so does the guard (atol 0 had
     * turned it off: the all-zero graph passed) */
    tg_gradcheck_opts step_only = {.eps = 0x1p-8};
    assert_false(tg_gradcheck(f_relu, 1, &x, NULL, &step_only, &rep));
    assert_true(rep.all_zero);
    for (size_t i = 0; i < x->size; i++) /* and a correct graph passes */
        x->data[i] = -x->data[i];
    assert_true(tg_gradcheck(f_relu, 1, &x, NULL, &step_only, &rep));
    tg_tensor_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op),
        cmocka_unit_test(test_every_op_accumulates),
        cmocka_unit_test(test_elementwise_values),
        cmocka_unit_test(test_mlp_loss),
        cmocka_unit_test(test_shared_weights_and_fan_out),
        cmocka_unit_test(test_wrong_backward_fails),
        cmocka_unit_test(test_nan_gradient_fails),
        cmocka_unit_test(test_all_zero_gradients_fail),
    };
    return cmocka_run_group_tests_name("autograd gradcheck", tests, NULL, NULL);
}

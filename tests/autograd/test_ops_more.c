/* Gradient check of the ops added for issue 13 (div, maximum, minimum, unary
 * math, softmax family, reductions down the rows, selection, layer_norm,
 * group_norm, mask_scale, bce on probabilities, kl_normals), on random
 * non-square shapes and values kept away from kinks and ties. Forward values,
 * 0-row batches and misuse are in test_ops_values.c. */
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

#define TEST_SEED 2026
#include "test_random.h"

/* ---- random inputs ------------------------------------------------------- */

/* Values in [lo, hi], at least gap away from kink (when gap > 0). */
typedef struct domain {
    float lo, hi, gap, kink;
} domain;

enum {
    ANY,
    WIDE,
    POSITIVE,
    PROB,
    OPEN_PROB,
    AWAY_FROM_0,
    NONZERO,
    LARGE,
    N_DOMAINS
};
static const domain domains[N_DOMAINS] = {
    [ANY] = {-2.0f, 2.0f, 0.0f, 0.0f},
    [WIDE] = {-3.0f, 3.0f, 0.0f, 0.0f},
    [POSITIVE] = {0.5f, 2.0f, 0.0f, 0.0f},
    [PROB] = {0.0f, 1.0f, 0.0f, 0.0f},
    [OPEN_PROB] = {0.1f, 0.9f, 0.0f, 0.0f},
    [AWAY_FROM_0] = {-2.0f, 2.0f, 0.1f, 0.0f},
    [NONZERO] = {-2.0f, 2.0f, 0.5f, 0.0f}, /* divisors */
    /* e^x overflows float32; softmax's outputs in [0, 1] keep their
     * resolution (log_softmax's and logsumexp's, near 100, do not: their
     * stability is checked against double in test_ops_values.c) */
    [LARGE] = {100.0f, 104.0f, 0.0f, 0.0f},
};

static tg_tensor *rand_t(int ndim, const int *shape, int kind)
{
    domain d = domains[kind];
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t i = 0; i < t->size; i++) {
        float v;
        do
            v = d.lo + (float)uniform() * (d.hi - d.lo);
        while (d.gap > 0 && fabsf(v - d.kink) < d.gap);
        t->data[i] = v;
    }
    return t;
}

static tg_tensor *rand2(int rows, int cols, int kind)
{
    return rand_t(2, (int[]){rows, cols}, kind);
}

/* ---- the graphs under test ---------------------------------------------- */

#define UNARY(name, call)                                                      \
    static tg_tensor *name(tg_tape *tp, tg_tensor **in, void *c)               \
    {                                                                          \
        (void)c;                                                               \
        tg_tensor *x = in[0];                                                  \
        return call;                                                           \
    }

#define BINARY(name, call)                                                     \
    static tg_tensor *name(tg_tape *tp, tg_tensor **in, void *c)               \
    {                                                                          \
        (void)c;                                                               \
        tg_tensor *a = in[0], *b = in[1];                                      \
        return call;                                                           \
    }

BINARY(f_div, tg_div(tp, a, b))
BINARY(f_maximum, tg_maximum(tp, a, b))
BINARY(f_minimum, tg_minimum(tp, a, b))
UNARY(f_neg, tg_neg(tp, x))
UNARY(f_abs, tg_abs(tp, x))
UNARY(f_sqrt, tg_sqrt(tp, x))
UNARY(f_pow_2_5, tg_pow(tp, x, 2.5f))
UNARY(f_pow_3, tg_pow(tp, x, 3.0f))
UNARY(f_pow_neg, tg_pow(tp, x, -1.5f))
UNARY(f_leaky, tg_leaky_relu(tp, x, 0.1f))
UNARY(f_gelu, tg_gelu(tp, x))
UNARY(f_softmax, tg_softmax(tp, x))
UNARY(f_log_softmax, tg_log_softmax(tp, x))
UNARY(f_logsumexp, tg_logsumexp(tp, x))
UNARY(f_sum_axis0, tg_sum_axis0(tp, x))
UNARY(f_mean_axis0, tg_mean_axis0(tp, x))
UNARY(f_transpose, tg_transpose(tp, x))
UNARY(f_permute2, tg_permute(tp, x, (int[]){1, 0}))
UNARY(f_permute3, tg_permute(tp, x, (int[]){2, 0, 1}))
UNARY(f_permute4_heads, tg_permute(tp, x, (int[]){0, 2, 1, 3}))
UNARY(f_permute4, tg_permute(tp, x, (int[]){3, 1, 0, 2}))
/* x has 3 more columns than C: keep columns [1, C + 1) */
UNARY(f_slice_cols, tg_slice_cols(tp, x, 1, tg_tensor_cols(x) - 2))
/* x has 2 more rows than R: keep rows [1, R + 1) */
UNARY(f_slice_rows, tg_slice_rows(tp, x, 1, x->shape[0] - 1))

static tg_tensor *f_layer_norm(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_layer_norm(tp, in[0], in[1], in[2], 1e-5f);
}
static tg_tensor *f_layer_norm_plain(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_layer_norm(tp, in[0], NULL, NULL, 1e-5f);
}
/* group_norm's groups and which of gamma, beta are in[1], in[2]: set per
 * trial by make_gn */
static int gn_groups;
static bool gn_gamma, gn_beta;
static tg_tensor *f_group_norm(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *gamma = gn_gamma ? in[1] : NULL;
    tg_tensor *beta = gn_beta ? in[1 + gn_gamma] : NULL;
    return tg_group_norm(tp, in[0], gn_groups, gamma, beta, 1e-5f);
}
static tg_tensor *f_bce(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_bce(tp, in[0], in[1]);
}
static tg_tensor *f_kl(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_kl_normals(tp, in[0], in[1], in[2], in[3]);
}

/* The index list is built per trial (repeats included) by make_gather. */
static int gather_idx[64], gather_n;
static tg_tensor *f_gather(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_gather_rows(tp, in[0], gather_idx, gather_n);
}

static uint8_t mask_bytes[256];
static tg_tensor *f_mask_scale(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return tg_mask_scale(tp, in[0], mask_bytes, 1.25f);
}

/* ---- input makers: each fills in[] for a trial of size R x C ------------- */

typedef int (*maker)(int R, int C, int dom, tg_tensor **in);

static int make_one(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand2(R, C, dom);
    return 1;
}
static int make_two_classes(int R, int C, int dom, tg_tensor **in)
{
    /* softmax over one column is constant 1: no gradient to check */
    return make_one(R, C < 2 ? 2 : C, dom, in);
}
static int make_rank3(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand_t(3, (int[]){2, R, C}, dom);
    return 1;
}
static int make_rank4(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand_t(4, (int[]){2, R, 3, C}, dom);
    return 1;
}
static int make_wider(int R, int C, int dom, tg_tensor **in)
{
    return make_one(R, C + 3, dom, in);
}
static int make_rank3_two_classes(int R, int C, int dom, tg_tensor **in)
{
    return make_rank3(R, C < 2 ? 2 : C, dom, in);
}
static int make_wider3(int R, int C, int dom, tg_tensor **in)
{
    return make_rank3(R, C + 3, dom, in);
}
static int make_taller(int R, int C, int dom, tg_tensor **in)
{
    return make_one(R + 2, C, dom, in);
}
static int make_taller3(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand_t(3, (int[]){R + 2, 2, C}, dom);
    return 1;
}
static int make_mask(int R, int C, int dom, tg_tensor **in)
{
    make_one(R, C, dom, in);
    for (size_t k = 0; k < in[0]->size; k++)
        mask_bytes[k] = k == 0 || uniform() < 0.6; /* one kept at least */
    return 1;
}
/* table [R + 1, C]; 2R + 1 indices, every one repeated at least once */
static int make_gather(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand2(R + 1, C, dom);
    gather_n = 2 * R + 1;
    for (int i = 0; i < gather_n; i++)
        gather_idx[i] = i < R + 1 ? i : randint(0, R);
    return 1;
}
/* x [R, C] whose rows have a standard deviation of at least 0.5: where a
 * row is nearly constant, xhat = (x - mean) / sqrt(var + eps) turns within
 * a finite-difference step (as at a kink), and no float check is fair. */
static tg_tensor *spread_rows(int R, int C)
{
    tg_tensor *x = rand2(R, C, WIDE);
    for (int i = 0; i < R && C > 1; i++) {
        float *row = &x->data[(size_t)i * C];
        for (;;) {
            double m = 0, v = 0;
            for (int j = 0; j < C; j++)
                m += row[j] / C;
            for (int j = 0; j < C; j++)
                v += (row[j] - m) * (row[j] - m) / C;
            if (v >= 0.25)
                break;
            for (int j = 0; j < C; j++)
                row[j] = (float)(uniform() * 6.0 - 3.0);
        }
    }
    return x;
}

/* Over one column x gets no gradient (xhat = 0); beta still does, so the
 * check is not vacuous. */
static int make_layer_norm(int R, int C, int dom, tg_tensor **in)
{
    (void)dom;
    in[0] = spread_rows(R, C);
    in[1] = rand_t(1, &C, POSITIVE);
    in[2] = rand_t(1, &C, ANY);
    return 3;
}
/* Without gamma and beta, one or two columns normalise to constants. */
static int make_ln_plain(int R, int C, int dom, tg_tensor **in)
{
    (void)dom;
    in[0] = spread_rows(R, C < 3 ? 3 : C);
    return 1;
}
/* group_norm: x [R, 6] or [R, 6, 3, C] (3x1 to 3x7 images), groups 1, 2 or
 * 3, or 6 (= C: InstanceNorm). Each (example, group) block has a
 * standard deviation of at least 0.5, as spread_rows; a group of one
 * element normalises to 0 (only beta gets a gradient there). */
enum { GN_C = 6 };
static int make_gn(int R, int C, bool image, int groups, bool gamma, bool beta,
                   tg_tensor **in)
{
    int shape[4] = {R, GN_C, 3, C}, chan = GN_C;
    in[0] = rand_t(image ? 4 : 2, shape, WIDE);
    size_t n = in[0]->size / ((size_t)R * groups);
    for (size_t o = 0; o < in[0]->size && n > 1; o += n) {
        float *block = &in[0]->data[o];
        for (;;) {
            double m = 0, v = 0;
            for (size_t j = 0; j < n; j++)
                m += block[j] / (double)n;
            for (size_t j = 0; j < n; j++)
                v += (block[j] - m) * (block[j] - m) / (double)n;
            if (v >= 0.25)
                break;
            for (size_t j = 0; j < n; j++)
                block[j] = (float)(uniform() * 6.0 - 3.0);
        }
    }
    gn_groups = groups;
    gn_gamma = gamma;
    gn_beta = beta;
    int k = 1;
    if (gamma)
        in[k++] = rand_t(1, &chan, POSITIVE);
    if (beta)
        in[k++] = rand_t(1, &chan, ANY);
    return k;
}
#define GN_MAKER(name, image, groups, gamma, beta)                             \
    static int name(int R, int C, int dom, tg_tensor **in)                     \
    {                                                                          \
        (void)dom;                                                             \
        return make_gn(R, C, image, groups, gamma, beta, in);                  \
    }
GN_MAKER(make_gn_rows_1, false, 1, true, true)
GN_MAKER(make_gn_rows_2, false, 2, true, true)
GN_MAKER(make_gn_rows_c, false, GN_C, true, true)
GN_MAKER(make_gn_rows_2_plain, false, 2, false, false)
GN_MAKER(make_gn_img_1, true, 1, true, true)
GN_MAKER(make_gn_img_3, true, 3, true, true)
GN_MAKER(make_gn_img_c, true, GN_C, true, true)
GN_MAKER(make_gn_img_1_plain, true, 1, false, false)
GN_MAKER(make_gn_img_3_gamma, true, 3, true, false)
GN_MAKER(make_gn_img_c_beta, true, GN_C, false, true)
GN_MAKER(make_gn_img_c_plain, true, GN_C, false, false)
static int make_bce(int R, int C, int dom, tg_tensor **in)
{
    (void)dom;
    in[0] = rand2(R, C, OPEN_PROB);
    in[1] = rand2(R, C, PROB);
    return 2;
}
static int make_kl_same(int R, int C, int dom, tg_tensor **in)
{
    for (int i = 0; i < 4; i++)
        in[i] = rand2(R, C, dom);
    return 4;
}
static int make_kl_shared(int R, int C, int dom, tg_tensor **in)
{
    in[0] = rand2(R, C, dom);
    in[1] = rand2(R, C, dom);
    in[2] = rand_t(1, &C, dom);
    in[3] = rand_t(1, &C, dom);
    return 4;
}

/* a [R, C] and b of the layout's shape (the broadcast forms of add): b
 * from dom; a from ANY but at least 0.1 away from the b element it meets,
 * so that no finite-difference step crosses a tie of maximum / minimum. */
enum { B_SAME, B_ROW, B_COL, B_ONE };
static int make_binary(int R, int C, int dom, int layout, tg_tensor **in)
{
    tg_tensor *b = layout == B_SAME  ? rand2(R, C, dom)
                   : layout == B_ROW ? rand_t(1, &C, dom)
                   : layout == B_COL ? rand2(R, 1, dom)
                                     : rand_t(1, (int[]){1}, dom);
    tg_tensor *a = tg_tensor_new2(R, C);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            int k = layout == B_SAME  ? i * C + j
                    : layout == B_ROW ? j
                    : layout == B_COL ? i
                                      : 0;
            float v;
            do
                v = (float)(uniform() * 4.0 - 2.0);
            while (fabsf(v - b->data[k]) < 0.1f);
            a->data[i * C + j] = v;
        }
    in[0] = a;
    in[1] = b;
    return 2;
}
static int make_b_same(int R, int C, int dom, tg_tensor **in)
{
    return make_binary(R, C, dom, B_SAME, in);
}
static int make_b_row(int R, int C, int dom, tg_tensor **in)
{
    return make_binary(R, C, dom, B_ROW, in);
}
static int make_b_col(int R, int C, int dom, tg_tensor **in)
{
    return make_binary(R, C, dom, B_COL, in);
}
static int make_b_one(int R, int C, int dom, tg_tensor **in)
{
    return make_binary(R, C, dom, B_ONE, in);
}

typedef struct op_case {
    const char *name;
    tg_graph_fn f;
    maker make;
    int dom;
    double eps; /* finite-difference step; 0: tg_gradcheck's 2^-6 */
} op_case;

static const op_case cases[] = {
    {"div", f_div, make_b_same, NONZERO, 0},
    {"div row", f_div, make_b_row, NONZERO, 0},
    {"div per-row", f_div, make_b_col, NONZERO, 0},
    {"div scalar tensor", f_div, make_b_one, NONZERO, 0},
    {"maximum", f_maximum, make_b_same, ANY, 0},
    {"maximum row", f_maximum, make_b_row, ANY, 0},
    {"maximum per-row", f_maximum, make_b_col, ANY, 0},
    {"minimum", f_minimum, make_b_same, ANY, 0},
    {"minimum row", f_minimum, make_b_row, ANY, 0},
    {"minimum scalar tensor", f_minimum, make_b_one, ANY, 0},
    {"neg", f_neg, make_one, ANY, 0},
    {"abs", f_abs, make_one, AWAY_FROM_0, 0},
    {"sqrt", f_sqrt, make_one, POSITIVE, 0},
    {"pow 2.5", f_pow_2_5, make_one, POSITIVE, 0},
    {"pow 3 (negative x)", f_pow_3, make_one, ANY, 0},
    {"pow -1.5", f_pow_neg, make_one, POSITIVE, 0},
    {"leaky_relu 0.1", f_leaky, make_one, AWAY_FROM_0, 0},
    {"gelu", f_gelu, make_one, WIDE, 0},
    {"softmax", f_softmax, make_two_classes, ANY, 0},
    {"softmax, logits ~100", f_softmax, make_two_classes, LARGE, 0},
    {"softmax rank 3", f_softmax, make_rank3_two_classes, ANY, 0},
    {"log_softmax", f_log_softmax, make_two_classes, ANY, 0},
    {"logsumexp", f_logsumexp, make_one, ANY, 0},
    {"sum_axis0", f_sum_axis0, make_one, ANY, 0},
    {"sum_axis0 rank 3", f_sum_axis0, make_rank3, ANY, 0},
    {"mean_axis0", f_mean_axis0, make_one, ANY, 0},
    {"transpose", f_transpose, make_one, ANY, 0},
    {"permute (1, 0)", f_permute2, make_one, ANY, 0},
    {"permute (2, 0, 1)", f_permute3, make_rank3, ANY, 0},
    {"permute (0, 2, 1, 3)", f_permute4_heads, make_rank4, ANY, 0},
    {"permute (3, 1, 0, 2)", f_permute4, make_rank4, ANY, 0},
    {"slice_cols", f_slice_cols, make_wider, ANY, 0},
    {"slice_cols rank 3", f_slice_cols, make_wider3, ANY, 0},
    {"slice_rows", f_slice_rows, make_taller, ANY, 0},
    {"slice_rows rank 3", f_slice_rows, make_taller3, ANY, 0},
    {"gather_rows (repeats)", f_gather, make_gather, ANY, 0},
    {"layer_norm", f_layer_norm, make_layer_norm, ANY, 0},
    {"layer_norm, no affine", f_layer_norm_plain, make_ln_plain, ANY, 0},
    {"group_norm [B,C] groups 1", f_group_norm, make_gn_rows_1, ANY, 0},
    {"group_norm [B,C] groups 2", f_group_norm, make_gn_rows_2, ANY, 0},
    {"group_norm [B,C] groups C", f_group_norm, make_gn_rows_c, ANY, 0},
    {"group_norm [B,C] g2 no affine", f_group_norm, make_gn_rows_2_plain, ANY,
     0},
    /* an image group sums up to 126 outputs, whose float rounding the
     * default 2^-6 step turned into half the tolerance: 2^-5 halves it */
    {"group_norm [B,C,H,W] groups 1", f_group_norm, make_gn_img_1, ANY, 0x1p-5},
    {"group_norm [B,C,H,W] groups 3", f_group_norm, make_gn_img_3, ANY, 0x1p-5},
    {"group_norm [B,C,H,W] groups C", f_group_norm, make_gn_img_c, ANY, 0x1p-5},
    {"group_norm img g1 no affine", f_group_norm, make_gn_img_1_plain, ANY,
     0x1p-5},
    {"group_norm img g3 gamma only", f_group_norm, make_gn_img_3_gamma, ANY,
     0x1p-5},
    {"group_norm img gC beta only", f_group_norm, make_gn_img_c_beta, ANY,
     0x1p-5},
    {"group_norm img gC no affine", f_group_norm, make_gn_img_c_plain, ANY,
     0x1p-5},
    {"mask_scale", f_mask_scale, make_mask, ANY, 0},
    /* log q has a large 5th derivative near q = 0.1: a smaller step keeps
     * the O(h^4) truncation below the tolerance's atol */
    {"bce (probabilities)", f_bce, make_bce, ANY, 0x1p-8},
    {"kl_normals", f_kl, make_kl_same, ANY, 0},
    {"kl_normals, shared prior", f_kl, make_kl_shared, ANY, 0},
};

/* 1x1, a column, a row, then random non-square shapes. */
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
    tg_tensor *y = fo->c->f(tp, in, NULL);
    tg_tensor *parts[5];
    parts[0] = tg_reshape(tp, y, 2, (int[]){1, (int)y->size});
    for (int i = 0; i < fo->n; i++)
        parts[i + 1] = tg_reshape(tp, in[i], 2, (int[]){1, (int)in[i]->size});
    return tg_concat(tp, fo->n + 1, parts);
}

static void check_every_new_op(bool fan_out)
{
    int failures = 0;
    printf("%-28s %8s %12s %12s\n", "op", "elements", "max abs err",
           "max rel err");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const op_case *c = &cases[k];
        double worst_abs = 0, worst_rel = 0;
        size_t elements = 0;
        for (int trial = 0; trial < TRIALS; trial++) {
            int R, C;
            shape_for_trial(trial, &R, &C);
            tg_tensor *in[4] = {0};
            int n = c->make(R, C, c->dom, in);
            tg_gradcheck_report rep;
            tg_gradcheck_opts opts = {c->eps, 1e-4, 1e-3, 42};
            fan_out_ctx fo = {c, n};
            if (!tg_gradcheck(fan_out ? f_fan_out : c->f, n, in,
                              fan_out ? &fo : NULL, c->eps > 0 ? &opts : NULL,
                              &rep)) {
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
        printf("%-28s %8zu %12.3g %12.3g\n", c->name, elements, worst_abs,
               worst_rel);
    }
    assert_int_equal(failures, 0);
}

static void test_every_new_op(void **state)
{
    (void)state;
    check_every_new_op(false);
}

/* Each op's backward adds into gradients that already hold something. */
static void test_every_new_op_accumulates(void **state)
{
    (void)state;
    check_every_new_op(true);
}

/* ---- composites: the new ops inside a small model -------------------------
 */

/* An embedding, layer_norm, gelu, a slice and log_softmax together:
 * mean of -log_softmax(dense(gelu(ln(gather(E, idx)))))[:, :2] . */
static const int comp_idx[] = {2, 0, 2, 1, 3};
static tg_tensor *f_composite(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *e = tg_gather_rows(tp, in[0], comp_idx, 5);
    tg_tensor *h = tg_gelu(tp, tg_layer_norm(tp, e, in[1], in[2], 1e-5f));
    tg_tensor *logp = tg_log_softmax(tp, tg_dense(tp, h, in[3], NULL));
    return tg_neg(tp, tg_mean(tp, tg_slice_cols(tp, logp, 0, 2)));
}

static void test_composite_model(void **state)
{
    (void)state;
    tg_tensor *in[4] = {rand2(4, 6, WIDE), rand_t(1, (int[]){6}, POSITIVE),
                        rand_t(1, (int[]){6}, ANY), rand2(3, 6, ANY)};
    tg_gradcheck_report rep;
    bool ok = tg_gradcheck(f_composite, 4, in, NULL, NULL, &rep);
    tg_gradcheck_print(&rep, "embedding-layer_norm-gelu-log_softmax");
    assert_true(ok);
    for (int i = 0; i < 4; i++)
        tg_tensor_free(in[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_new_op),
        cmocka_unit_test(test_every_new_op_accumulates),
        cmocka_unit_test(test_composite_model),
    };
    return cmocka_run_group_tests_name("autograd gradcheck, more ops", tests,
                                       NULL, NULL);
}

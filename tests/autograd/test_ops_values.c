/* Forward values (against closed forms and double-precision references) and
 * the documented edge rules (kinks, ties, clamps, repeated indices, detach)
 * of the ops added for issue 13. Their gradient checks are in
 * test_ops_more.c; 0-row batches, threads and misuse in test_ops_edges.c. */
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
#include "float_equal.h"

static tg_tensor *from(int rows, int cols, const float *v)
{
    tg_tensor *t = tg_tensor_new2(rows, cols);
    memcpy(t->data, v, t->size * sizeof(float));
    return t;
}

/* backward of sum(w * y) with every w = 1 */
static void backward_ones(tg_tape *tp, tg_tensor *y)
{
    float *seed = calloc(y->size ? y->size : 1, sizeof *seed);
    for (size_t k = 0; k < y->size; k++)
        seed[k] = 1.0f;
    tg_backward_with(tp, y, seed);
    free(seed);
}

/* ---- softmax family -------------------------------------------------------
 */

static void softmax_rows_sum_to_one_and_large_logits_are_finite(void **state)
{
    (void)state;
    const float v[] = {1, 2, 3, -1, 1000, 1001, 999, 998, -1e4f, 0, 5, 2};
    tg_tensor *x = from(3, 4, v);
    tg_tape *tp = tg_tape_new();
    tg_tensor *p = tg_softmax(tp, x), *lp = tg_log_softmax(tp, x);
    tg_tensor *lse = tg_logsumexp(tp, x);
    assert_int_equal(lse->shape[0], 3);
    assert_int_equal(lse->shape[1], 1);
    for (int i = 0; i < 3; i++) {
        const float *xi = &v[i * 4];
        double m = xi[0], s = 0;
        for (int j = 1; j < 4; j++)
            m = fmax(m, xi[j]);
        for (int j = 0; j < 4; j++)
            s += exp((double)xi[j] - m);
        double ref = m + log(s), sum = 0;
        assert_true(isfinite(lse->data[i]));
        assert_float_equal(lse->data[i], ref, 1e-4 * fmax(1, fabs(ref)));
        for (int j = 0; j < 4; j++) {
            double pr = exp((double)xi[j] - ref);
            assert_float_equal(p->data[i * 4 + j], pr, 1e-6);
            assert_float_equal(lp->data[i * 4 + j], xi[j] - ref,
                               1e-4 * fmax(1, fabs(xi[j] - ref)));
            sum += p->data[i * 4 + j];
        }
        assert_float_equal(sum, 1.0, 1e-6);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* Shifting every logit of a row by 500 (e^500 overflows float and double)
 * changes no softmax, and gradients of logsumexp and log_softmax stay the
 * softmax of the unshifted row. */
static void softmax_family_is_shift_invariant(void **state)
{
    (void)state;
    const float v[] = {0.3f, -1.2f, 2.0f, 0.5f, 1.0f, -0.7f};
    float shifted[6];
    for (int k = 0; k < 6; k++)
        shifted[k] = v[k] + 500.0f;
    tg_tensor *x = from(2, 3, v), *xs = from(2, 3, shifted);
    tg_tensor_require_grad(xs);
    tg_tape *tp = tg_tape_new();
    tg_tensor *p = tg_softmax(tp, x), *ps = tg_softmax(tp, xs);
    float pv[6]; /* p lives on the tape, which is reset below */
    for (int k = 0; k < 6; k++) {
        assert_float_equal(p->data[k], ps->data[k], 2e-4);
        pv[k] = p->data[k];
    }
    backward_ones(tp, tg_logsumexp(tp, xs));
    for (int k = 0; k < 6; k++)
        assert_float_equal(xs->grad[k], pv[k], 2e-4);
    tg_tape_reset(tp);
    tg_tensor_zero_grad(xs);
    /* d/dx_j sum_k w_k log_softmax_k = w_j - p_j sum w: with w = e_0 */
    tg_tensor *lps = tg_log_softmax(tp, xs);
    float seed[6] = {1, 0, 0, 0, 0, 0};
    tg_backward_with(tp, lps, seed);
    for (int j = 0; j < 3; j++)
        assert_float_equal(xs->grad[j], (j == 0) - pv[j], 2e-4);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(xs);
}

static void logsumexp_of_minus_inf_row_is_minus_inf(void **state)
{
    (void)state;
    const float v[] = {-INFINITY, -INFINITY, 0.0f, 0.0f};
    tg_tensor *x = from(2, 2, v);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_logsumexp(tp, x);
    assert_true(isinf(y->data[0]) && y->data[0] < 0);
    assert_float_equal(y->data[1], logf(2.0f), 1e-6);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- binary ops: broadcasting, ties, NaN
 * ------------------------------------- */

static void div_maximum_minimum_values_and_ties(void **state)
{
    (void)state;
    const float av[] = {1, -2, 3, 4, 5, -6}, bv[] = {2, -2, 0.5f};
    tg_tensor *a = from(2, 3, av), *b = tg_tensor_new(1, (int[]){3});
    memcpy(b->data, bv, sizeof bv);
    tg_tensor_require_grad(a);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *q = tg_div(tp, a, b); /* b a row: [2, -2, 0.5] */
    const float eq[] = {0.5f, 1, 6, 2, -2.5f, -12};
    for (int k = 0; k < 6; k++)
        assert_float_equal(q->data[k], eq[k], 0);
    /* maximum(a, b): a[0, 1] == b[1] = -2 is a tie: a gets its gradient */
    tg_tape_reset(tp);
    tg_tensor *mx = tg_maximum(tp, a, b);
    const float emx[] = {2, -2, 3, 4, 5, 0.5f};
    for (int k = 0; k < 6; k++)
        assert_float_equal(mx->data[k], emx[k], 0);
    backward_ones(tp, mx);
    const float ega[] = {0, 1, 1, 1, 1, 0}, egb[] = {1, 0, 1};
    for (int k = 0; k < 6; k++)
        assert_float_equal(a->grad[k], ega[k], 0);
    for (int k = 0; k < 3; k++)
        assert_float_equal(b->grad[k], egb[k], 0);
    /* minimum: the tie again goes to a */
    tg_tape_reset(tp);
    tg_tensor_zero_grad(a);
    tg_tensor_zero_grad(b);
    tg_tensor *mn = tg_minimum(tp, a, b);
    backward_ones(tp, mn);
    const float emn[] = {1, -2, 0.5f, 2, -2, -6};
    const float egan[] = {1, 1, 0, 0, 0, 1}, egbn[] = {1, 1, 1};
    for (int k = 0; k < 6; k++) {
        assert_float_equal(mn->data[k], emn[k], 0);
        assert_float_equal(a->grad[k], egan[k], 0);
    }
    for (int k = 0; k < 3; k++)
        assert_float_equal(b->grad[k], egbn[k], 0);
    /* NaN in either operand comes out */
    tg_tape_reset(tp);
    a->data[0] = NAN;
    b->data[2] = NAN;
    tg_tensor *mnan = tg_maximum(tp, a, b), *nnan = tg_minimum(tp, a, b);
    assert_true(isnan(mnan->data[0]) && isnan(nnan->data[0]));
    assert_true(isnan(mnan->data[2]) && isnan(nnan->data[5]));
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
}

/* ---- unary math: values and the documented kink rules ---------------------
 */

static void unary_values_and_kinks(void **state)
{
    (void)state;
    const float v[] = {-1.0f, 0.0f, 1.0f, 4.0f};
    tg_tensor *x = from(1, 4, v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    /* gelu(x) = x Phi(x): Phi(1) = 0.841344746 */
    tg_tensor *g = tg_gelu(tp, x);
    assert_float_equal(g->data[0], -0.158655254, 1e-6);
    assert_float_equal(g->data[1], 0.0, 0);
    assert_float_equal(g->data[2], 0.841344746, 1e-6);
    backward_ones(tp, g); /* gelu'(0) = 0.5; gelu'(1) = Phi(1) + phi(1) */
    assert_float_equal(x->grad[1], 0.5, 1e-6);
    assert_float_equal(x->grad[2], 0.841344746 + 0.241970725, 1e-6);

    const struct {
        const char *name;
        float grad_at_0, y_at_4;
    } expect[] = {{"abs", 0.0f, 4.0f},   {"leaky_relu", 0.2f, 4.0f},
                  {"pow 0", 0.0f, 1.0f}, {"pow 2", 0.0f, 16.0f},
                  {"pow 1", 1.0f, 4.0f}, {"neg", -1.0f, -4.0f}};
    for (int c = 0; c < 6; c++) {
        tg_tape_reset(tp);
        tg_tensor_zero_grad(x);
        tg_tensor *y = c == 0   ? tg_abs(tp, x)
                       : c == 1 ? tg_leaky_relu(tp, x, 0.2f)
                       : c == 2 ? tg_pow(tp, x, 0.0f)
                       : c == 3 ? tg_pow(tp, x, 2.0f)
                       : c == 4 ? tg_pow(tp, x, 1.0f)
                                : tg_neg(tp, x);
        backward_ones(tp, y);
        printf("%s: y(4) = %g, dy/dx(0) = %g\n", expect[c].name,
               (double)y->data[3], (double)x->grad[1]);
        assert_float_equal(y->data[3], expect[c].y_at_4, 0);
        assert_float_equal(x->grad[1], expect[c].grad_at_0, 0);
    }
    tg_tape_reset(tp);
    tg_tensor *s = tg_sqrt(tp, x);
    assert_true(isnan(s->data[0]));
    assert_float_equal(s->data[3], 2.0, 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- reductions and selection -----------------------------------------------
 */

static void sum_and_mean_axis0_values(void **state)
{
    (void)state;
    const float v[] = {1, 2, 3, 4, 5, 6};
    tg_tensor *x = from(2, 3, v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *s = tg_sum_axis0(tp, x), *m = tg_mean_axis0(tp, x);
    assert_int_equal(s->ndim, 2);
    assert_int_equal(s->shape[0], 1);
    assert_int_equal(s->shape[1], 3);
    for (int j = 0; j < 3; j++) {
        assert_float_equal(s->data[j], v[j] + v[j + 3], 0);
        assert_float_equal(m->data[j], (v[j] + v[j + 3]) / 2, 0);
    }
    backward_ones(tp, m);
    for (int k = 0; k < 6; k++)
        assert_float_equal(x->grad[k], 0.5, 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void transpose_and_slices_values(void **state)
{
    (void)state;
    const float v[] = {1, 2, 3, 4, 5, 6};
    tg_tensor *x = from(2, 3, v);
    tg_tape *tp = tg_tape_new();
    tg_tensor *t = tg_transpose(tp, x);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], 2);
    const float tv[] = {1, 4, 2, 5, 3, 6};
    for (int k = 0; k < 6; k++)
        assert_float_equal(t->data[k], tv[k], 0);
    tg_tensor *c = tg_slice_cols(tp, x, 1, 3);
    const float cv[] = {2, 3, 5, 6};
    for (int k = 0; k < 4; k++)
        assert_float_equal(c->data[k], cv[k], 0);
    tg_tensor *r = tg_slice_rows(tp, x, 1, 2);
    assert_int_equal(r->shape[0], 1);
    assert_ptr_equal(r->data, x->data + 3); /* a view */
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* Index 2 appears three times: its table row collects the sum of the three
 * output rows' gradients; row 1 is never read and gets none. */
static void gather_rows_sums_repeated_indices(void **state)
{
    (void)state;
    tg_tensor *table = tg_tensor_new2(4, 2);
    for (int k = 0; k < 8; k++)
        table->data[k] = (float)k;
    tg_tensor_require_grad(table);
    const int idx[] = {2, 0, 2, 3, 2};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_gather_rows(tp, table, idx, 5);
    assert_int_equal(y->shape[0], 5);
    assert_int_equal(y->shape[1], 2);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 2; j++)
            assert_float_equal(y->data[i * 2 + j], idx[i] * 2 + j, 0);
    float seed[10];
    for (int k = 0; k < 10; k++)
        seed[k] = (float)(k + 1);
    tg_backward_with(tp, y, seed);
    const float expect[] = {3, 4, 0, 0, 1 + 5 + 9, 2 + 6 + 10, 7, 8};
    for (int k = 0; k < 8; k++)
        assert_float_equal(table->grad[k], expect[k], 0);
    tg_tape_free(tp);
    tg_tensor_free(table);
}

/* f = sum(x * detach(x)): df/dx = detach(x) = x, not 2x. */
static void detach_stops_the_gradient(void **state)
{
    (void)state;
    const float v[] = {1.5f, -2.0f, 3.0f};
    tg_tensor *x = from(1, 3, v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *d = tg_detach(tp, x);
    assert_false(d->requires_grad);
    assert_ptr_equal(d->data, x->data);
    size_t records = tg_tape_records(tp);
    backward_ones(tp, tg_sum(tp, tg_mul(tp, x, d)));
    assert_int_equal(records, 0);
    for (int k = 0; k < 3; k++)
        assert_float_equal(x->grad[k], v[k], 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* nll picks -logp at each row's label, its gradient -1 there and 0 elsewhere;
 * of log_softmax it is softmax_xent (to rounding). */
static void nll_values_and_log_softmax_agreement(void **state)
{
    (void)state;
    const float v[] = {-1.0f, -2.0f, -3.0f, -4.0f, -0.5f, -6.0f};
    const int labels[] = {1, 2};
    tg_tensor *x = from(2, 3, v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_nll(tp, x, labels);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 1);
    assert_float_equal(y->data[0], 2.0f, 0);
    assert_float_equal(y->data[1], 6.0f, 0);
    backward_ones(tp, tg_sum(tp, y));
    const float want[] = {0, -1, 0, 0, 0, -1};
    for (int k = 0; k < 6; k++)
        assert_float_equal(x->grad[k], want[k], 0);
    tg_tape_reset(tp);
    tg_tensor *a = tg_nll(tp, tg_log_softmax(tp, x), labels);
    tg_tensor *b = tg_softmax_xent(tp, x, labels);
    for (int i = 0; i < 2; i++)
        assert_float_equal(a->data[i], b->data[i], 1e-6f * (1 + b->data[i]));
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- layer_norm, mask_scale, losses
 * ------------------------------------------ */

static void layer_norm_rows_have_mean_0_var_1(void **state)
{
    (void)state;
    tg_tensor *x = tg_tensor_new2(3, 7);
    for (size_t k = 0; k < x->size; k++)
        x->data[k] = 100.0f + (float)((k * 37) % 11) * 0.25f; /* offset */
    tg_tensor *gamma = tg_tensor_new(1, (int[]){7});
    tg_tensor *beta = tg_tensor_new(1, (int[]){7});
    for (int j = 0; j < 7; j++) {
        gamma->data[j] = 2.0f;
        beta->data[j] = -1.0f;
    }
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_layer_norm(tp, x, NULL, NULL, 0.0f);
    tg_tensor *ya = tg_layer_norm(tp, x, gamma, beta, 0.0f);
    for (int i = 0; i < 3; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < 7; j++)
            m += y->data[i * 7 + j] / 7.0;
        for (int j = 0; j < 7; j++)
            v += (y->data[i * 7 + j] - m) * (y->data[i * 7 + j] - m) / 7.0;
        assert_float_equal(m, 0.0, 1e-5);
        assert_float_equal(v, 1.0, 1e-5);
        for (int j = 0; j < 7; j++)
            assert_float_equal(ya->data[i * 7 + j],
                               2.0f * y->data[i * 7 + j] - 1.0f, 1e-5);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

static void mask_scale_values(void **state)
{
    (void)state;
    const float v[] = {1, 2, 3, 4};
    const uint8_t keep[] = {1, 0, 0, 1};
    tg_tensor *x = from(2, 2, v);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    uint8_t copy[4];
    memcpy(copy, keep, 4);
    tg_tensor *y = tg_mask_scale(tp, x, copy, 2.0f);
    memset(copy, 0, 4); /* the op copied the mask */
    backward_ones(tp, y);
    const float ey[] = {2, 0, 0, 8}, eg[] = {2, 0, 0, 2};
    for (int k = 0; k < 4; k++) {
        assert_float_equal(y->data[k], ey[k], 0);
        assert_float_equal(x->grad[k], eg[k], 0);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* Over several of the op's blocks and a tail: any nonzero byte keeps, and a
 * dropped element is 0 (and gets no gradient) even where x or dy is Inf or
 * NaN: a select, not a multiply by the mask. */
static void mask_scale_blocks_select(void **state)
{
    (void)state;
    enum { N = 3 * 4096 + 5 };
    tg_tensor *x = tg_tensor_new(1, (int[]){N});
    tg_tensor_require_grad(x);
    uint8_t *keep = malloc(N);
    for (int k = 0; k < N; k++) {
        x->data[k] = (float)(k % 97) - 48.5f;
        keep[k] = (uint8_t)(k % 3 == 0 ? 0 : k % 3 == 1 ? 1 : 200);
    }
    x->data[3] = INFINITY; /* dropped (3 % 3 == 0) */
    x->data[6] = NAN;      /* dropped */
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_mask_scale(tp, x, keep, 1.5f);
    tg_tensor *w = tg_tensor_new(1, (int[]){N}); /* dy = w */
    for (int k = 0; k < N; k++)
        w->data[k] = k == 9 ? NAN : 0.25f; /* 9 is dropped */
    tg_backward(tp, tg_sum(tp, tg_mul(tp, y, w)));
    for (int k = 0; k < N; k++) {
        bool kept = k % 3 != 0;
        float ey = kept ? 1.5f * x->data[k] : 0.0f;
        assert_memory_equal(&y->data[k], &ey, sizeof ey);
        float eg = kept ? 1.5f * 0.25f : 0.0f;
        assert_memory_equal(&x->grad[k], &eg, sizeof eg);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(w);
    free(keep);
}

/* p = 0 against z = 1 is a finite loss -log(1e-7) with no gradient (the
 * clamp); inside the clamp the value is the textbook one. */
static void bce_clamps_probabilities(void **state)
{
    (void)state;
    const float p[] = {0.0f, 1.0f, 0.25f}, z[] = {1.0f, 0.0f, 1.0f};
    tg_tensor *pt = from(1, 3, p), *zt = from(1, 3, z);
    tg_tensor_require_grad(pt);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_bce(tp, pt, zt);
    double q1 = 1.0 - (double)(1.0f - TG_BCE_EPS);
    double expect = -log(1e-7) - log(q1) - log(0.25);
    assert_true(isfinite(y->data[0]));
    assert_float_equal(y->data[0], expect, 1e-4 * expect);
    backward_ones(tp, y);
    assert_float_equal(pt->grad[0], 0.0, 0);
    assert_float_equal(pt->grad[1], 0.0, 0);
    assert_float_equal(pt->grad[2], -1.0 / 0.25, 1e-5);
    tg_tape_free(tp);
    tg_tensor_free(pt);
    tg_tensor_free(zt);
}

/* At and beyond both bounds (p = 0, eps, 1 - eps, 1) the gradient to p is
 * 0, and the target's gradient is that of the clamped q, finite:
 * dz = log(1 - q) - log(q). The check above asked neither for z's
 * gradient (q = -eps at p = 0 gave NaN there) nor about p exactly at a
 * bound (p = 1 - eps got (q - z) / (q (1 - q))). */
static void bce_gradients_at_the_bounds(void **state)
{
    (void)state;
    const float lo = TG_BCE_EPS, hi = 1.0f - TG_BCE_EPS;
    const float p[] = {0.0f, lo, hi, 1.0f, 0.25f},
                z[] = {1.0f, 0.5f, 0.0f, 0.5f, 1.0f};
    tg_tensor *pt = from(1, 5, p), *zt = from(1, 5, z);
    tg_tensor_require_grad(pt);
    tg_tensor_require_grad(zt);
    tg_tape *tp = tg_tape_new();
    backward_ones(tp, tg_bce(tp, pt, zt));
    const float q[] = {lo, lo, hi, hi, 0.25f};
    for (int k = 0; k < 5; k++) {
        double dz = log1p(-(double)q[k]) - log((double)q[k]);
        assert_float_equal(zt->grad[k], dz, 1e-4 * fabs(dz));
        if (k < 4)
            assert_float_equal(pt->grad[k], 0.0, 0);
    }
    assert_float_equal(pt->grad[4], -1.0 / 0.25, 1e-5);
    tg_tape_free(tp);
    tg_tensor_free(pt);
    tg_tensor_free(zt);
}

/* KL(N(0, e^d) || N(0, 1)) per element, 0.5 (e^d - 1 - d), for |d| below
 * 0.5, where the series is taken: it keeps the value within 7e-8 relative,
 * where e^d - 1 - d in float loses bits to the cancellation (1.3e-6
 * relative off at d = 0.3 when the direct form reached down to |d| =
 * 0.25; the row sums of kl_normal_matches_double hid that). */
static void kl_normals_near_the_series_bound(void **state)
{
    (void)state;
    const float d[] = {0.25f,  0.27f,  0.3f,   0.33f, 0.37f,  0.4f,   0.45f,
                       0.49f,  -0.25f, -0.27f, -0.3f, -0.33f, -0.37f, -0.4f,
                       -0.45f, -0.49f, 0.1f,   -0.1f, 0.01f,  1e-3f,  -2e-4f};
    enum { N = sizeof d / sizeof d[0] };
    tg_tensor *m = tg_tensor_new2(N, 1), *v = from(N, 1, d);
    tg_tensor *zero = tg_tensor_new2(N, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normals(tp, m, v, zero, zero);
    for (int k = 0; k < N; k++) {
        double ref = 0.5 * (expm1((double)d[k]) - (double)d[k]);
        assert_float_equal(y->data[k], ref, 2e-7 * ref);
    }
    tg_tape_free(tp);
    tg_tensor_free(m);
    tg_tensor_free(v);
    tg_tensor_free(zero);
}

/* Equal means under a prior variance e^vp whose e^(-vp/2) overflows float
 * (vp = -200): the mean terms (mq - mp)^2 e^-vp and their gradients are 0,
 * not 0 * Inf = NaN, and KL(q || q) is 0. With unequal means there they
 * are +-Inf, as the math says. */
static void kl_normals_equal_means_at_a_tiny_prior_variance(void **state)
{
    (void)state;
    const float mq[] = {0.5f, -2.0f, 0.5f}, mp[] = {0.5f, -2.0f, 0.25f},
                vv[] = {-200.0f, -200.0f, -200.0f};
    tg_tensor *a = from(3, 1, mq), *b = from(3, 1, mp);
    tg_tensor *va = from(3, 1, vv), *vb = from(3, 1, vv);
    tg_tensor_require_grad(a);
    tg_tensor_require_grad(b);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normals(tp, a, va, b, vb);
    backward_ones(tp, y);
    for (int k = 0; k < 2; k++) {
        assert_float_equal(y->data[k], 0.0, 0);
        assert_float_equal(a->grad[k], 0.0, 0);
        assert_float_equal(b->grad[k], 0.0, 0);
    }
    assert_true(isinf(y->data[2]) && y->data[2] > 0);
    assert_true(isinf(a->grad[2]) && a->grad[2] > 0);
    assert_true(isinf(b->grad[2]) && b->grad[2] < 0);
    tg_tape_free(tp);
    tg_tensor_free(a);
    tg_tensor_free(b);
    tg_tensor_free(va);
    tg_tensor_free(vb);
}

/* kl_normals against N(0, 1) is kl_normal; KL(q || q) = 0; and a closed
 * form for one element: KL(N(1, e^0.5) || N(-1, e^-0.3)). */
static void kl_normals_values(void **state)
{
    (void)state;
    const float m[] = {0.3f, -1.0f, 2.0f, 0.1f},
                v[] = {0.2f, -0.5f, 1.0f, 0.0f};
    tg_tensor *mq = from(2, 2, m), *vq = from(2, 2, v);
    tg_tensor *zero = tg_tensor_new(1, (int[]){2}); /* shared prior row */
    tg_tape *tp = tg_tape_new();
    tg_tensor *a = tg_kl_normals(tp, mq, vq, zero, zero);
    tg_tensor *b = tg_kl_normal(tp, mq, vq);
    tg_tensor *self = tg_kl_normals(tp, mq, vq, mq, vq);
    for (int i = 0; i < 2; i++) {
        assert_float_equal(a->data[i], b->data[i], 1e-6);
        assert_float_equal(self->data[i], 0.0, 1e-7);
    }
    tg_tensor *m1 = from(1, 1, (float[]){1.0f}),
              *v1 = from(1, 1, (float[]){0.5f});
    tg_tensor *m2 = from(1, 1, (float[]){-1.0f}),
              *v2 = from(1, 1, (float[]){-0.3f});
    tg_tensor *k = tg_kl_normals(tp, m1, v1, m2, v2);
    double s1 = exp(0.5), s2 = exp(-0.3);
    double ref = 0.5 * (log(s2 / s1) + (s1 + 4.0) / s2 - 1.0);
    assert_float_equal(k->data[0], ref, 1e-5);
    tg_tape_free(tp);
    tg_tensor *ts[] = {mq, vq, zero, m1, v1, m2, v2};
    for (int i = 0; i < 7; i++)
        tg_tensor_free(ts[i]);
}

/* kl_normal's rows against double, element by element through the vector
 * body and its tails (rows of 37): log-variances near 0 (the series), at
 * the series' edge +-0.5, and large (the direct form); the gradient
 * dv = (e^v - 1) / 2 too, and a NaN stays in its row. */
static void kl_normal_matches_double(void **state)
{
    (void)state;
    enum { R = 3, C = 37 };
    tg_tensor *m = tg_tensor_new2(R, C), *v = tg_tensor_new2(R, C);
    tg_tensor_require_grad(m);
    tg_tensor_require_grad(v);
    const float edge[] = {1e-7f, -3e-5f,  0.4999f, -0.4999f, 0.5f,
                          -0.5f, 0.5001f, -20.0f,  15.0f,    0.0f};
    for (int k = 0; k < R * C; k++) {
        m->data[k] = 0.05f * (float)(k % 7) - 0.1f;
        v->data[k] = k < 10 ? edge[k] : 0.37f * (float)(k % 23) - 4.0f;
    }
    v->data[2 * C + 5] = NAN;
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normal(tp, m, v);
    backward_ones(tp, y);
    for (int i = 0; i < R; i++) {
        double ref = 0.0;
        for (int j = 0; j < C; j++) {
            double mm = m->data[i * C + j], vv = v->data[i * C + j];
            ref += 0.5 * (mm * mm + (expm1(vv) - vv));
            if (isnan(vv))
                continue;
            double g = 0.5 * expm1(vv);
            assert_float_equal(v->grad[i * C + j], g, 4e-7 * fabs(g) + 1e-30);
            assert_true(m->grad[i * C + j] == m->data[i * C + j]);
        }
        if (i == 2)
            assert_true(isnan(y->data[i]));
        else
            assert_float_equal(y->data[i], ref, 1e-6 * fabs(ref));
    }
    tg_tape_free(tp);
    tg_tensor_free(m);
    tg_tensor_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(softmax_rows_sum_to_one_and_large_logits_are_finite),
        cmocka_unit_test(softmax_family_is_shift_invariant),
        cmocka_unit_test(logsumexp_of_minus_inf_row_is_minus_inf),
        cmocka_unit_test(div_maximum_minimum_values_and_ties),
        cmocka_unit_test(unary_values_and_kinks),
        cmocka_unit_test(sum_and_mean_axis0_values),
        cmocka_unit_test(transpose_and_slices_values),
        cmocka_unit_test(gather_rows_sums_repeated_indices),
        cmocka_unit_test(detach_stops_the_gradient),
        cmocka_unit_test(nll_values_and_log_softmax_agreement),
        cmocka_unit_test(layer_norm_rows_have_mean_0_var_1),
        cmocka_unit_test(mask_scale_values),
        cmocka_unit_test(mask_scale_blocks_select),
        cmocka_unit_test(bce_clamps_probabilities),
        cmocka_unit_test(bce_gradients_at_the_bounds),
        cmocka_unit_test(kl_normals_near_the_series_bound),
        cmocka_unit_test(kl_normals_equal_means_at_a_tiny_prior_variance),
        cmocka_unit_test(kl_normals_values),
        cmocka_unit_test(kl_normal_matches_double),
    };
    return cmocka_run_group_tests_name("autograd more ops: values", tests, NULL,
                                       NULL);
}

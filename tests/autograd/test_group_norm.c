/* group_norm's values and gradients against references computed here: a
 * naive double-precision group norm whose gradients are central
 * differences in double (independent of the op's backward formula), a few
 * numbers from PyTorch's F.group_norm, and layer_norm's bits where the two
 * ops coincide. Then the edges (one position per channel with groups = C,
 * a constant group, no examples), the same bits on 1 and 2 threads, and
 * misuse. The gradient checks are rows of test_ops_more.c's table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

static uint32_t lcg = 7;

static float urand(float lo, float hi)
{
    lcg = lcg * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(lcg >> 8) / 16777216.0f;
}

static tg_tensor *filled(int ndim, const int *shape, float lo, float hi)
{
    tg_tensor *t = tg_tensor_new(ndim, shape);
    for (size_t k = 0; k < t->size; k++)
        t->data[k] = urand(lo, hi);
    return t;
}

/* ---- the naive reference, in double ---------------------------------------
 * L = sum_k w[k] y[k] of y = group_norm(x, G, gamma, beta, eps) written
 * from the definition: per (example, group), the mean and the biased
 * variance of its (C/G)·S elements. */
typedef struct ref_case {
    int ndim, shape[4], G;
    double *x, *gamma, *beta; /* gamma, beta NULL: 1 and 0 */
    const float *w;
    float eps;
} ref_case;

static double ref_forward(const ref_case *rc, double *y)
{
    int B = rc->shape[0], C = rc->shape[1], S = 1;
    for (int d = 2; d < rc->ndim; d++)
        S *= rc->shape[d];
    int cpg = C / rc->G;
    double L = 0;
    for (int b = 0; b < B; b++)
        for (int g = 0; g < rc->G; g++) {
            double mean = 0, var = 0;
            for (int c = g * cpg; c < (g + 1) * cpg; c++)
                for (int s = 0; s < S; s++)
                    mean += rc->x[((size_t)b * C + c) * S + s];
            mean /= (double)cpg * S;
            for (int c = g * cpg; c < (g + 1) * cpg; c++)
                for (int s = 0; s < S; s++) {
                    double d = rc->x[((size_t)b * C + c) * S + s] - mean;
                    var += d * d;
                }
            var /= (double)cpg * S;
            for (int c = g * cpg; c < (g + 1) * cpg; c++)
                for (int s = 0; s < S; s++) {
                    size_t k = ((size_t)b * C + c) * S + s;
                    double v = (rc->x[k] - mean) / sqrt(var + rc->eps);
                    v = v * (rc->gamma ? rc->gamma[c] : 1.0) +
                        (rc->beta ? rc->beta[c] : 0.0);
                    if (y)
                        y[k] = v;
                    L += rc->w[k] * v;
                }
        }
    return L;
}

/* dL/dv[k] by a central difference in double (step 1e-6 * max(1, |v|):
 * truncation and rounding both near 1e-10 here). */
static double ref_grad(const ref_case *rc, double *v, size_t k)
{
    double keep = v[k], h = 1e-6 * fmax(1.0, fabs(keep));
    v[k] = keep + h;
    double up = ref_forward(rc, NULL);
    v[k] = keep - h;
    double down = ref_forward(rc, NULL);
    v[k] = keep;
    return (up - down) / (2 * h);
}

static double *to_double(const tg_tensor *t)
{
    double *d = malloc(t->size * sizeof *d);
    for (size_t k = 0; k < t->size; k++)
        d[k] = t->data[k];
    return d;
}

/* |got - want| <= atol + rtol |want|; returns the error over that bound. */
static double check_near(const char *what, size_t k, double got, double want,
                         double atol, double rtol)
{
    double ratio = fabs(got - want) / (atol + rtol * fabs(want));
    if (!(ratio <= 1.0)) {
        print_error("%s[%zu]: %.9g, want %.9g\n", what, k, got, want);
        fail();
    }
    return ratio;
}

static void matches_a_naive_double_reference(void **state)
{
    (void)state;
    static const struct {
        int ndim, shape[4], G, affine; /* bit 0: gamma, bit 1: beta */
    } cases[] = {
        {2, {3, 6}, 1, 3},       {2, {3, 6}, 2, 3},
        {2, {3, 6}, 6, 3},       {2, {4, 6}, 3, 0},
        {4, {2, 6, 3, 4}, 1, 3}, {4, {2, 6, 3, 4}, 3, 3},
        {4, {2, 6, 3, 4}, 6, 3}, {4, {2, 6, 3, 4}, 2, 0},
        {4, {2, 6, 3, 4}, 3, 1}, {4, {2, 6, 3, 4}, 3, 2},
        {3, {4, 4, 5}, 2, 3},    {4, {1, 8, 2, 2}, 4, 3}, /* one example */
        {4, {5, 4, 1, 1}, 2, 3}, {4, {1, 4, 1, 3}, 4, 3},
        {4, {3, 2, 1, 1}, 1, 3}, /* spatial size 1 */
    };
    double worst = 0;
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int C = cases[t].shape[1], G = cases[t].G;
        tg_tensor *x = filled(cases[t].ndim, cases[t].shape, -2.0f, 3.0f);
        tg_tensor *gamma =
            cases[t].affine & 1 ? filled(1, &C, 0.5f, 1.5f) : NULL;
        tg_tensor *beta =
            cases[t].affine & 2 ? filled(1, &C, -1.0f, 1.0f) : NULL;
        tg_tensor *ts[] = {x, gamma, beta};
        for (int i = 0; i < 3; i++)
            if (ts[i])
                tg_tensor_require_grad(ts[i]);
        float *w = malloc(x->size * sizeof *w);
        for (size_t k = 0; k < x->size; k++)
            w[k] = urand(-1.0f, 1.0f);
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = tg_group_norm(tp, x, G, gamma, beta, 1e-5f);
        tg_backward_with(tp, y, w);

        ref_case rc = {cases[t].ndim, {0},  G, to_double(x),
                       NULL,          NULL, w, 1e-5f};
        memcpy(rc.shape, cases[t].shape, sizeof rc.shape);
        rc.gamma = gamma ? to_double(gamma) : NULL;
        rc.beta = beta ? to_double(beta) : NULL;
        double *yr = malloc(x->size * sizeof *yr);
        ref_forward(&rc, yr);
        for (size_t k = 0; k < x->size; k++) {
            worst =
                fmax(worst, check_near("y", k, y->data[k], yr[k], 2e-6, 2e-6));
            worst = fmax(worst, check_near("dx", k, x->grad[k],
                                           ref_grad(&rc, rc.x, k), 2e-5, 1e-4));
        }
        for (int c = 0; c < C; c++) {
            if (gamma)
                worst = fmax(
                    worst, check_near("dgamma", (size_t)c, gamma->grad[c],
                                      ref_grad(&rc, rc.gamma, c), 2e-5, 1e-5));
            if (beta)
                worst = fmax(worst,
                             check_near("dbeta", (size_t)c, beta->grad[c],
                                        ref_grad(&rc, rc.beta, c), 2e-5, 1e-5));
        }
        free(yr);
        free(rc.x);
        free(rc.gamma);
        free(rc.beta);
        free(w);
        tg_tape_free(tp);
        for (int i = 0; i < 3; i++)
            if (ts[i])
                tg_tensor_free(ts[i]);
    }
    printf("  worst error / tolerance: %.3g\n", worst);
}

/* ---- PyTorch's numbers --------------------------------------------------
 * x[k] = ((7k) mod 11) / 4 - 1, gamma[c] = 0.5 + c / 4, beta[c] =
 * c / 10 - 0.2, upstream gradient dy[k] = ((5k) mod 13) / 8 - 0.75 (all
 * but beta exact in float), eps 1e-5; PyTorch 2.15 in float64 from the
 * same floats:
 *   F.group_norm(x, G, gamma, beta, 1e-5), then (y * dy).sum().backward() */
typedef struct torch_case {
    int ndim, shape[4], G;
    bool affine;
    int n_picked;
    int picked[5];
    double y[5], dx[5];
    double dgamma[6], dbeta[6];
} torch_case;

static const torch_case torch_cases[] = {
    {4,
     {2, 4, 2, 2},
     2,
     true,
     5,
     {0, 5, 13, 22, 31},
     {-1.01250817, -0.85447187, -0.619553532, -1.18085617, 1.10079275},
     {-0.701182159, 0.531364059, -0.906223093, 0.23479662, 0.928688571},
     {1.04848591, -0.0238447524, 1.81743365, 1.63168612},
     {-0.75, 1.375, -1.375, 0.75}},
    {2,
     {3, 6},
     2,
     true,
     3,
     {0, 5, 13},
     {-0.781232541, -1.84328744, -1.05903369},
     {-0.398225547, 0.0638061136, -0.173198397},
     {0.594726513, 0.79919474, 0.562028415, -0.554244589, 0.639355792,
      -0.313967748},
     {-0.75, -0.5, -0.25, 0, 0.25, 0.5}},
    /* InstanceNorm over [B, C, L], no affine */
    {3,
     {2, 3, 5},
     3,
     false,
     4,
     {0, 5, 13, 22},
     {-1.51634048, -0.948675709, -0.524887089, -1.53279775},
     {-0.671482924, 0.82851103, -0.69628003, 0.558046597},
     {0},
     {0}},
};

static void agrees_with_pytorch(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof torch_cases / sizeof torch_cases[0]; t++) {
        const torch_case *tc = &torch_cases[t];
        int C = tc->shape[1];
        tg_tensor *x = tg_tensor_new(tc->ndim, tc->shape);
        tg_tensor *gamma = tg_tensor_new(1, &C), *beta = tg_tensor_new(1, &C);
        float *dy = malloc(x->size * sizeof *dy);
        for (size_t k = 0; k < x->size; k++) {
            x->data[k] = (float)((k * 7) % 11) * 0.25f - 1.0f;
            dy[k] = (float)((k * 5) % 13) * 0.125f - 0.75f;
        }
        for (int c = 0; c < C; c++) {
            gamma->data[c] = 0.5f + 0.25f * (float)c;
            beta->data[c] = (float)(0.1 * c - 0.2);
        }
        tg_tensor_require_grad(x);
        tg_tensor_require_grad(gamma);
        tg_tensor_require_grad(beta);
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = tg_group_norm(tp, x, tc->G, tc->affine ? gamma : NULL,
                                     tc->affine ? beta : NULL, 1e-5f);
        tg_backward_with(tp, y, dy);
        for (int i = 0; i < tc->n_picked; i++) {
            size_t k = (size_t)tc->picked[i];
            check_near("torch y", k, y->data[k], tc->y[i], 1e-6, 1e-6);
            check_near("torch dx", k, x->grad[k], tc->dx[i], 1e-6, 1e-5);
        }
        for (int c = 0; tc->affine && c < C; c++) {
            check_near("torch dgamma", (size_t)c, gamma->grad[c], tc->dgamma[c],
                       1e-6, 1e-5);
            check_near("torch dbeta", (size_t)c, beta->grad[c], tc->dbeta[c],
                       1e-6, 1e-6);
        }
        free(dy);
        tg_tape_free(tp);
        tg_tensor_free(x);
        tg_tensor_free(gamma);
        tg_tensor_free(beta);
    }
}

/* ---- where group_norm is layer_norm -------------------------------------
 * One group over [B, C] is layer_norm (per-channel gamma = per-column);
 * one group over [B, C, H, W] without affine is layer_norm of the
 * [B, C·H·W] reshape. Same sums in the same order: the same bits. */
static void one_group_is_layer_norm_bit_for_bit(void **state)
{
    (void)state;
    for (int img = 0; img < 2; img++) {
        int shape[4] = {5, img ? 3 : 7, 4, 2};
        int ndim = img ? 4 : 2, C = shape[1];
        tg_tensor *x[2], *gamma[2], *beta[2], *y[2];
        tg_tape *tp[2];
        for (int v = 0; v < 2; v++) {
            lcg = 99;
            x[v] = filled(ndim, shape, -1.0f, 4.0f);
            gamma[v] = filled(1, &C, 0.5f, 1.5f);
            beta[v] = filled(1, &C, -1.0f, 1.0f);
            tg_tensor_require_grad(x[v]);
            tg_tensor_require_grad(gamma[v]);
            tg_tensor_require_grad(beta[v]);
            tp[v] = tg_tape_new();
        }
        float *w = malloc(x[0]->size * sizeof *w);
        for (size_t k = 0; k < x[0]->size; k++)
            w[k] = urand(-1.0f, 1.0f);
        tg_tensor *g0 = img ? NULL : gamma[0], *b0 = img ? NULL : beta[0];
        tg_tensor *g1 = img ? NULL : gamma[1], *b1 = img ? NULL : beta[1];
        y[0] = tg_group_norm(tp[0], x[0], 1, g0, b0, 1e-5f);
        tg_tensor *x1 = tg_reshape(
            tp[1], x[1], 2, (int[]){shape[0], (int)(x[1]->size) / shape[0]});
        y[1] = tg_layer_norm(tp[1], x1, g1, b1, 1e-5f);
        tg_backward_with(tp[0], y[0], w);
        tg_backward_with(tp[1], y[1], w);
        assert_memory_equal(y[0]->data, y[1]->data, x[0]->size * sizeof(float));
        assert_memory_equal(x[0]->grad, x[1]->grad, x[0]->size * sizeof(float));
        if (!img) {
            assert_memory_equal(gamma[0]->grad, gamma[1]->grad,
                                (size_t)C * sizeof(float));
            assert_memory_equal(beta[0]->grad, beta[1]->grad,
                                (size_t)C * sizeof(float));
        }
        free(w);
        for (int v = 0; v < 2; v++) {
            tg_tape_free(tp[v]);
            tg_tensor_free(x[v]);
            tg_tensor_free(gamma[v]);
            tg_tensor_free(beta[v]);
        }
    }
}

/* ---- edges ------------------------------------------------------------- */

static bool all_finite(const float *v, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (!isfinite(v[k]))
            return false;
    return true;
}

/* InstanceNorm (groups = C) of 1x1 images: every group is one element,
 * xhat = 0, y = beta (0 without it), dx = 0 and finite. */
static void instance_norm_of_1x1_gives_beta_and_zero_gradient(void **state)
{
    (void)state;
    enum { B = 3, C = 4 };
    int c_ = C;
    tg_tensor *x = filled(4, (int[]){B, C, 1, 1}, -3.0f, 3.0f);
    tg_tensor *gamma = filled(1, &c_, 0.5f, 1.5f);
    tg_tensor *beta = filled(1, &c_, -1.0f, 1.0f);
    tg_tensor_require_grad(x);
    tg_tensor_require_grad(gamma);
    tg_tensor_require_grad(beta);
    float dy[B * C];
    for (int k = 0; k < B * C; k++)
        dy[k] = urand(-1.0f, 1.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_group_norm(tp, x, C, gamma, beta, 1e-5f);
    tg_tensor *y0 = tg_group_norm(tp, x, C, NULL, NULL, 1e-5f);
    tg_backward_with(tp, y, dy);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            assert_true(y->data[b * C + c] == beta->data[c]);
            assert_true(y0->data[b * C + c] == 0.0f);
            assert_true(x->grad[b * C + c] == 0.0f);
        }
    for (int c = 0; c < C; c++) {
        double sum = 0;
        for (int b = 0; b < B; b++)
            sum += dy[b * C + c];
        assert_true(gamma->grad[c] == 0.0f);
        assert_float_equal(beta->grad[c], sum, 1e-6);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

/* A constant group (variance 0; values 0.75 and 1000.1) normalises to 0:
 * y = beta exactly, and the gradient is finite, rstd (g - mean(g)) with
 * rstd = 1 / sqrt(eps). The other groups are unaffected. */
static void constant_group_gives_beta_and_finite_gradient(void **state)
{
    (void)state;
    enum { B = 2, C = 4, L = 3, CPG = 2 };
    int c_ = C;
    const float eps = 1e-3f;
    tg_tensor *x = filled(3, (int[]){B, C, L}, -2.0f, 2.0f);
    for (int k = 0; k < CPG * L; k++) {
        x->data[CPG * L + k] = 0.75f; /* example 0, group 1 */
        x->data[C * L + k] = 1000.1f; /* example 1, group 0 */
    }
    tg_tensor *gamma = filled(1, &c_, 0.5f, 1.5f);
    tg_tensor *beta = filled(1, &c_, -1.0f, 1.0f);
    tg_tensor_require_grad(x);
    tg_tensor_require_grad(gamma);
    tg_tensor_require_grad(beta);
    float dy[B * C * L];
    for (int k = 0; k < B * C * L; k++)
        dy[k] = urand(-1.0f, 1.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_group_norm(tp, x, C / CPG, gamma, beta, eps);
    tg_backward_with(tp, y, dy);
    assert_true(all_finite(y->data, y->size));
    assert_true(all_finite(x->grad, x->size));
    assert_true(all_finite(gamma->grad, C));
    assert_true(all_finite(beta->grad, C));
    const int starts[2] = {CPG * L, C * L}, c0s[2] = {CPG, 0};
    double rstd = 1 / sqrt((double)eps);
    for (int q = 0; q < 2; q++) {
        double mg = 0;
        for (int k = 0; k < CPG * L; k++)
            mg += (double)dy[starts[q] + k] * gamma->data[c0s[q] + k / L] /
                  (CPG * L);
        for (int k = 0; k < CPG * L; k++) {
            int e = starts[q] + k, c = c0s[q] + k / L;
            assert_true(y->data[e] == beta->data[c]);
            double g = (double)dy[e] * gamma->data[c];
            check_near("dx of a constant group", (size_t)e, x->grad[e],
                       rstd * (g - mg), 1e-5, 1e-4);
        }
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

/* No examples ([0, C, H, W], as a rank handed no rows) and no positions
 * ([B, C, 0, W]): empty outputs, zero parameter gradients. */
static void empty_inputs_pass_forward_and_backward(void **state)
{
    (void)state;
    int C = 4;
    tg_tensor *gamma = filled(1, &C, 0.5f, 1.5f), *beta = filled(1, &C, 0, 1);
    tg_tensor_require_grad(gamma);
    tg_tensor_require_grad(beta);
    const int shapes[2][4] = {{0, 4, 2, 2}, {3, 4, 0, 2}};
    for (int v = 0; v < 2; v++) {
        tg_tensor *x = tg_tensor_new(4, shapes[v]);
        tg_tensor_require_grad(x);
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = tg_group_norm(tp, x, 2, gamma, beta, 1e-5f);
        assert_int_equal(y->size, 0);
        assert_int_equal(y->ndim, 4);
        tg_backward(tp, tg_sum(tp, y));
        tg_tape_free(tp);
        tg_tensor_free(x);
    }
    for (int c = 0; c < C; c++) {
        assert_true(gamma->grad[c] == 0.0f);
        assert_true(beta->grad[c] == 0.0f);
    }
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

/* ---- same bits on 1 and 2 threads ----------------------------------------
 * [8, 32, 12, 12]: 36,864 elements, past the size at which the group and
 * channel loops split over threads. */
enum { TB = 8, TC = 32, TH = 12, TW = 12, TG = 8 };

static void run_threads(int threads, float *out)
{
    tg_set_threads(threads);
    lcg = 2026;
    int c_ = TC;
    tg_tensor *x = filled(4, (int[]){TB, TC, TH, TW}, -1.0f, 2.0f);
    tg_tensor *gamma = filled(1, &c_, 0.5f, 1.5f);
    tg_tensor *beta = filled(1, &c_, -1.0f, 1.0f);
    tg_tensor_require_grad(x);
    tg_tensor_require_grad(gamma);
    tg_tensor_require_grad(beta);
    float *w = malloc(x->size * sizeof *w);
    for (size_t k = 0; k < x->size; k++)
        w[k] = urand(-1.0f, 1.0f);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_group_norm(tp, x, TG, gamma, beta, 1e-5f);
    tg_backward_with(tp, y, w);
    size_t n = x->size;
    memcpy(out, y->data, n * sizeof *out);
    memcpy(out + n, x->grad, n * sizeof *out);
    memcpy(out + 2 * n, gamma->grad, TC * sizeof *out);
    memcpy(out + 2 * n + TC, beta->grad, TC * sizeof *out);
    free(w);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

static void same_bits_on_1_and_2_threads(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    size_t n = 2 * (size_t)TB * TC * TH * TW + 2 * TC;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    run_threads(1, a);
    run_threads(2, b);
    tg_set_threads(saved);
    assert_true(all_finite(a, n));
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
}

/* ---- misuse aborts, naming the op and the shapes ------------------------ */

static tg_tape *mtp;
static void groups_not_dividing_c(void)
{
    tg_group_norm(mtp, tg_tensor_new(3, (int[]){2, 6, 3}), 4, NULL, NULL,
                  1e-5f);
}
static void zero_groups(void)
{
    tg_group_norm(mtp, tg_tensor_new2(2, 6), 0, NULL, NULL, 1e-5f);
}
static void one_dim_x(void)
{
    tg_group_norm(mtp, tg_tensor_new(1, (int[]){6}), 1, NULL, NULL, 1e-5f);
}
static void bad_gamma(void)
{
    tg_group_norm(mtp, tg_tensor_new(4, (int[]){2, 6, 2, 2}), 3,
                  tg_tensor_new(1, (int[]){3}), NULL, 1e-5f);
}
static void bad_beta(void)
{
    tg_group_norm(mtp, tg_tensor_new2(2, 6), 3, NULL, tg_tensor_new2(6, 1),
                  1e-5f);
}
static void negative_eps(void)
{
    tg_group_norm(mtp, tg_tensor_new2(2, 6), 3, NULL, NULL, -1e-5f);
}
static void nan_eps(void)
{
    tg_group_norm(mtp, tg_tensor_new2(2, 6), 3, NULL, NULL, NAN);
}
static void null_x(void) { tg_group_norm(mtp, NULL, 1, NULL, NULL, 1e-5f); }

static void misuse_aborts_naming_the_op(void **state)
{
    (void)state;
    mtp = tg_tape_new();
    expect_abort(groups_not_dividing_c, "tapegrad: group_norm: ", "groups 4",
                 "6 channels", "[2, 6, 3]");
    expect_abort(zero_groups, "tapegrad: group_norm: ", "groups 0");
    expect_abort(one_dim_x, "tapegrad: group_norm: ", "[B, C, ...]", "[6]");
    expect_abort(bad_gamma, "tapegrad: group_norm: ", "gamma is [3]",
                 "expected [6]");
    expect_abort(bad_beta, "tapegrad: group_norm: ", "beta is [6, 1]");
    expect_abort(negative_eps, "tapegrad: group_norm: ", "eps");
    expect_abort(nan_eps, "tapegrad: group_norm: ", "eps", "nan");
    expect_abort(null_x, "tapegrad: group_norm: ", "NULL");
    tg_tape_free(mtp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_a_naive_double_reference),
        cmocka_unit_test(agrees_with_pytorch),
        cmocka_unit_test(one_group_is_layer_norm_bit_for_bit),
        cmocka_unit_test(instance_norm_of_1x1_gives_beta_and_zero_gradient),
        cmocka_unit_test(constant_group_gives_beta_and_finite_gradient),
        cmocka_unit_test(empty_inputs_pass_forward_and_backward),
        cmocka_unit_test(same_bits_on_1_and_2_threads),
        cmocka_unit_test(misuse_aborts_naming_the_op),
    };
    return cmocka_run_group_tests_name("autograd: group_norm", tests, NULL,
                                       NULL);
}

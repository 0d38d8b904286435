/* Values and gradients where the cross-check against PyTorch
 * (bench/op_check_dump + bench/op_check_torch.py) found tapegrad off, each
 * against a reference computed here in double: the softmax family and
 * softmax_xent at large logits, the Gaussian KLs near 0, layer_norm of a
 * row with a large offset, relu of NaN, dense's bias gradient over a large
 * batch, a broadcast operand's and layer_norm's beta gradient; and clamp's
 * documented rule at its bounds, where PyTorch agrees. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
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
    tg_tensor_require_grad(t);
    return t;
}

/* |got - want| <= rel * |want| (and report where it is not) */
static void near(const char *what, int k, double got, double want, double rel)
{
    if (!(fabs(got - want) <= rel * fabs(want))) {
        print_error("%s[%d]: %.9g, want %.9g (rel err %.3g > %.3g)\n", what, k,
                    got, want, fabs(got - want) / fabs(want), rel);
        fail();
    }
}

/* n seed gradients in [0.5, 1.5) from a small LCG (same-sign terms, so a
 * float running sum of them drifts). The caller frees. */
static float *ramp(size_t n, uint32_t seed)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = 0.5f + (float)(seed >> 8) / 16777216.0f;
    }
    return v;
}

/* got must be the float nearest exact (within one ulp of it). */
static void nearest(const char *what, int k, float got, double exact)
{
    float want = (float)exact;
    near(what, k, got, want,
         fabsf(nextafterf(want, INFINITY) - want) / fabsf(want));
}

/* ---- clamp: no gradient at the bounds themselves ---------------------------
 * The header's rule, and PyTorch's (torch 2.15: clamp(x, -1, 1) has
 * gradient 0 at x = -1 and x = 1); one ulp inside, it passes. */
static void clamp_gradient_is_zero_at_the_bounds(void **state)
{
    (void)state;
    const float lo = -0.5f, hi = 0.25f;
    const float v[] = {lo, hi, nextafterf(lo, 1), nextafterf(hi, -1), 0.0f, -2};
    const float want[] = {0, 0, 1, 1, 1, 0};
    tg_tensor *x = from(1, 6, v);
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, tg_sum(tp, tg_clamp(tp, x, lo, hi)));
    for (int k = 0; k < 6; k++)
        assert_float_equal(x->grad[k], want[k], 0);
    /* lo == hi: a constant, no gradient anywhere */
    tg_tensor_zero_grad(x);
    tg_tape_reset(tp);
    tg_backward(tp, tg_sum(tp, tg_clamp(tp, x, lo, lo)));
    for (int k = 0; k < 6; k++)
        assert_float_equal(x->grad[k], 0.0f, 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- relu of NaN is NaN
 * ------------------------------------------------------ as PyTorch's (and its
 * gradient passes); relu used to map NaN to 0, hiding a NaN pre-activation from
 * everything downstream. */
static void relu_keeps_nan(void **state)
{
    (void)state;
    tg_tensor *x = from(1, 4, (float[]){NAN, -1.0f, 0.0f, 2.0f});
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_relu(tp, x);
    assert_true(isnan(y->data[0]));
    assert_float_equal(y->data[1], 0.0f, 0);
    assert_float_equal(y->data[2], 0.0f, 0);
    assert_float_equal(y->data[3], 2.0f, 0);
    tg_backward_with(tp, y, (const float[]){0.5f, 0.5f, 0.5f, 0.5f});
    const float want[] = {0.5f, 0, 0, 0.5f};
    for (int k = 0; k < 4; k++)
        assert_float_equal(x->grad[k], want[k], 0);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- maximum / minimum with a NaN: the header's rule ------------------------
 * The NaN comes out and its operand takes the whole gradient (PyTorch gives
 * it to both operands; bench/op_check_torch.py reports the difference). */
static void extremum_nan_operand_takes_the_gradient(void **state)
{
    (void)state;
    for (int m = 0; m < 2; m++) {
        tg_tensor *a = from(1, 3, (float[]){NAN, 1.0f, 0.5f});
        tg_tensor *b = from(1, 3, (float[]){1.0f, NAN, -0.5f});
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = (m ? tg_minimum : tg_maximum)(tp, a, b);
        assert_true(isnan(y->data[0]) && isnan(y->data[1]));
        tg_backward(tp, tg_sum(tp, tg_slice_cols(tp, y, 0, 2)));
        assert_float_equal(a->grad[0], 1.0f, 0);
        assert_float_equal(b->grad[0], 0.0f, 0);
        assert_float_equal(a->grad[1], 0.0f, 0);
        assert_float_equal(b->grad[1], 1.0f, 0);
        tg_tape_free(tp);
        tg_tensor_free(a);
        tg_tensor_free(b);
    }
}

/* ---- the softmax family at large logits -------------------------------------
 * Rows near 1e3 and 1e5 (every value exact in float). log_softmax's values
 * and the gradients of logsumexp and softmax_xent are O(1) numbers that
 * must not inherit the rounding of the logits' magnitude (half an ulp of
 * 1e5 is 0.004). */
static const float big[] = {1000.25f,   1000.5f,   999.75f,   1001.0f,
                            100000.25f, 100000.5f, 99999.75f, 100001.0f};

/* row r: log softmax in double */
static void ref_log_softmax(int r, double *out)
{
    const float *x = &big[4 * r];
    double m = x[0], s = 0;
    for (int j = 1; j < 4; j++)
        m = fmax(m, x[j]);
    for (int j = 0; j < 4; j++)
        s += exp((double)x[j] - m);
    for (int j = 0; j < 4; j++)
        out[j] = (double)x[j] - m - log(s);
}

static void log_softmax_exact_at_large_logits(void **state)
{
    (void)state;
    tg_tensor *x = from(2, 4, big);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_log_softmax(tp, x);
    const float seed[8] = {1, 0, 0, 0, 0, 0, 1, 0};
    tg_backward_with(tp, y, seed);
    for (int r = 0; r < 2; r++) {
        double ref[4];
        ref_log_softmax(r, ref);
        for (int j = 0; j < 4; j++) {
            near("log_softmax", 4 * r + j, y->data[4 * r + j], ref[j], 1e-6);
            double g = (j == (r ? 2 : 0)) - exp(ref[j]);
            near("d log_softmax", 4 * r + j, x->grad[4 * r + j], g, 1e-5);
        }
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void logsumexp_gradient_exact_at_large_logits(void **state)
{
    (void)state;
    tg_tensor *x = from(2, 4, big);
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, tg_sum(tp, tg_logsumexp(tp, x)));
    for (int r = 0; r < 2; r++) {
        double ref[4];
        ref_log_softmax(r, ref);
        for (int j = 0; j < 4; j++)
            near("d logsumexp", 4 * r + j, x->grad[4 * r + j], exp(ref[j]),
                 1e-6);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void softmax_xent_gradient_exact_at_large_logits(void **state)
{
    (void)state;
    tg_tensor *x = from(2, 4, big);
    const int labels[] = {3, 1};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_softmax_xent(tp, x, labels);
    tg_backward(tp, tg_sum(tp, y));
    for (int r = 0; r < 2; r++) {
        double ref[4];
        ref_log_softmax(r, ref);
        near("softmax_xent", r, y->data[r], -ref[labels[r]], 1e-6);
        for (int j = 0; j < 4; j++)
            near("d softmax_xent", 4 * r + j, x->grad[4 * r + j],
                 exp(ref[j]) - (j == labels[r]), 1e-6);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* Rows of equal logits far beyond 2^53 (1e17, FLT_MAX, -FLT_MAX): the loss
 * is log C whatever the magnitude (PyTorch's cross_entropy in float32 gives
 * it), as nll of log_softmax does; m + ls in double rounded it to 0. */
static void softmax_xent_exact_at_huge_logits(void **state)
{
    (void)state;
    const float v[] = {1e17f,    1e17f,    1e17f,    1e17f,
                       FLT_MAX,  FLT_MAX,  FLT_MAX,  FLT_MAX,
                       -FLT_MAX, -FLT_MAX, -FLT_MAX, -FLT_MAX};
    tg_tensor *x = from(3, 4, v);
    const int labels[] = {2, 0, 3};
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_softmax_xent(tp, x, labels);
    tg_tensor *nll = tg_nll(tp, tg_log_softmax(tp, x), labels);
    tg_backward(tp, tg_sum(tp, y));
    for (int r = 0; r < 3; r++) {
        near("softmax_xent", r, y->data[r], log(4.0), 1e-6);
        near("nll of log_softmax", r, nll->data[r], log(4.0), 1e-6);
        for (int j = 0; j < 4; j++)
            near("d softmax_xent", 4 * r + j, x->grad[4 * r + j],
                 0.25 - (j == labels[r]), 1e-6);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- the Gaussian KLs near 0
 * -------------------------------------------------- KL(N(m, e^v) || N(0, 1)) =
 * 0.5 sum m^2 + e^v - 1 - v: with m and v ~1e-3 (a latent unit the posterior
 * leaves at its prior) every term is ~1e-7, which 1 + v - e^v in float cannot
 * resolve, and so is its gradient 0.5 (e^v - 1) for |v| ~1e-4. */
static const float small_m[] = {0.0f, 1e-3f, 0.0f, -2e-4f, 3e-4f, 0.0f};
static const float small_v[] = {1e-3f, -1e-3f, 1e-4f, 0.0f, -3e-4f, 2e-5f};

static void kl_normal_exact_near_zero(void **state)
{
    (void)state;
    tg_tensor *m = from(2, 3, small_m), *v = from(2, 3, small_v);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normal(tp, m, v);
    tg_backward(tp, tg_sum(tp, y));
    for (int r = 0; r < 2; r++) {
        double ref = 0;
        for (int j = 0; j < 3; j++) {
            double mm = small_m[3 * r + j], vv = small_v[3 * r + j];
            ref += 0.5 * (mm * mm + expm1(vv) - vv);
        }
        near("kl_normal", r, y->data[r], ref, 1e-5);
    }
    for (int k = 0; k < 6; k++) {
        assert_float_equal(m->grad[k], small_m[k], 0);
        if (small_v[k] != 0)
            near("d kl_normal / dv", k, v->grad[k],
                 0.5 * expm1((double)small_v[k]), 1e-5);
    }
    tg_tape_free(tp);
    tg_tensor_free(m);
    tg_tensor_free(v);
}

/* KL(N(mq, e^vq) || N(mp, e^vp)) with q a whisker from p */
static void kl_normals_exact_near_zero(void **state)
{
    (void)state;
    const float vp[] = {0.5f, -1.0f, 0.25f, 2.0f, 0.0f, -0.5f};
    float vq[6];
    for (int k = 0; k < 6; k++)
        vq[k] = vp[k] + small_v[k];
    tg_tensor *mq = from(2, 3, small_m), *lq = from(2, 3, vq);
    tg_tensor *mp = from(2, 3, (float[]){0, 0, 0, 0, 0, 0});
    tg_tensor *lp = from(2, 3, vp);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normals(tp, mq, lq, mp, lp);
    tg_backward(tp, tg_sum(tp, y));
    for (int r = 0; r < 2; r++) {
        double ref = 0;
        for (int j = 0; j < 3; j++) {
            int k = 3 * r + j;
            double d = (double)vq[k] - vp[k], mm = small_m[k];
            ref += 0.5 * (expm1(d) - d + mm * mm * exp(-(double)vp[k]));
        }
        near("kl_normals", r, y->data[r], ref, 1e-5);
    }
    for (int k = 0; k < 6; k++) {
        double d = (double)vq[k] - vp[k];
        if (d != 0) {
            near("d kl_normals / dvq", k, lq->grad[k], 0.5 * expm1(d), 1e-5);
            double mm = small_m[k];
            near("d kl_normals / dvp", k, lp->grad[k],
                 -0.5 * (expm1(d) + mm * mm * exp(-(double)vp[k])), 1e-5);
        }
    }
    tg_tape_free(tp);
    tg_tensor *ts[] = {mq, lq, mp, lp};
    for (int i = 0; i < 4; i++)
        tg_tensor_free(ts[i]);
}

/* KL(N(mq, e^vq) || N(mp, e^vp)) at extreme prior log-variances, where
 * (mq - mp)^2 e^-vp written out overflows or makes 0 * Inf though the KL
 * and its gradients are finite: q = p = N(0, e^-100) (KL 0, was NaN), a
 * mean gap of 1e-20 at vp = -100 (was Inf), a gap of 1e20 at vp = 100 (was
 * Inf), a gap of 1e-25 at vp = -80 (its square underflowed: was 0). */
static void kl_normals_finite_at_extreme_prior_logvar(void **state)
{
    (void)state;
    const float mq_v[] = {0.0f, 1e-20f, 1e20f, 1e-25f, 0.5f};
    const float vq_v[] = {-100.0f, -100.0f, 0.0f, -80.0f, 0.3f};
    const float vp_v[] = {-100.0f, -100.0f, 100.0f, -80.0f, -0.7f};
    enum { N = 5 };
    tg_tensor *mq = from(N, 1, mq_v), *lq = from(N, 1, vq_v);
    tg_tensor *mp = from(N, 1, (float[N]){0}), *lp = from(N, 1, vp_v);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_kl_normals(tp, mq, lq, mp, lp);
    tg_backward(tp, tg_sum(tp, y));
    for (int k = 0; k < N; k++) {
        double d = (double)vq_v[k] - vp_v[k], m = mq_v[k];
        double w = m * exp(-0.5 * (double)vp_v[k]);
        double kl = 0.5 * (expm1(d) - d + w * w);
        double dm = w * exp(-0.5 * (double)vp_v[k]);
        if (kl == 0)
            assert_true(y->data[k] == 0.0f);
        else
            near("kl_normals", k, y->data[k], kl, 1e-5);
        if (dm == 0) {
            assert_true(mq->grad[k] == 0.0f && mp->grad[k] == 0.0f);
        } else {
            near("d kl_normals / dmq", k, mq->grad[k], dm, 1e-5);
            near("d kl_normals / dmp", k, mp->grad[k], -dm, 1e-5);
        }
        double dvp = -0.5 * (expm1(d) + w * w);
        if (dvp == 0)
            assert_true(lp->grad[k] == 0.0f && lq->grad[k] == 0.0f);
        else
            near("d kl_normals / dvp", k, lp->grad[k], dvp, 1e-5);
    }
    tg_tape_free(tp);
    tg_tensor_free(mq);
    tg_tensor_free(lq);
    tg_tensor_free(mp);
    tg_tensor_free(lp);
}

/* mean, mean_rows and mean_axis0 divide the double sum by n and round
 * once, as torch.mean's sum / n: the mean of seven 7s is 7 (a float 1/7
 * times the sum made it 7.0000005), and the gradient is dy / n rounded once
 * (3 / 7 was 0.42857146). */
static void mean_is_the_rounded_quotient(void **state)
{
    (void)state;
    const float vals[] = {7.0f, 1.5f, 3.14159f, 1.9999999f};
    const int counts[] = {7, 13, 97, 1000};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) {
            int n = counts[b];
            tg_tensor *x = tg_tensor_new2(1, n);
            for (int k = 0; k < n; k++)
                x->data[k] = vals[a];
            tg_tensor_require_grad(x);
            tg_tape *tp = tg_tape_new();
            tg_tensor *m = tg_mean(tp, x), *mr = tg_mean_rows(tp, x);
            tg_tensor *xt = tg_reshape(tp, x, 2, (int[]){n, 1});
            tg_tensor *m0 = tg_mean_axis0(tp, xt);
            assert_true(m->data[0] == vals[a]);
            assert_true(mr->data[0] == vals[a]);
            assert_true(m0->data[0] == vals[a]);
            tg_backward_with(tp, m, (float[]){3.0f});
            tg_backward_with(tp, mr, (float[]){1.5f});
            tg_backward_with(tp, m0, (float[]){5.0f});
            float want = (float)(3.0 / n) + (float)(1.5 / n);
            want += (float)(5.0 / n);
            for (int k = 0; k < n; k++)
                assert_true(x->grad[k] == want);
            tg_tape_free(tp);
            tg_tensor_free(x);
        }
}

/* bce_with_logits of confident positive logits against targets near 1:
 * (1 - z) x, where max(x, 0) - x z cancelled (x = 20, z = 1 - 2^-24: 1.9e-6
 * for 1.19e-6; x = 1e30: 7.6e22 for 6.0e22), and +Inf for x = +Inf with z
 * in (0, 1) (was NaN, Inf - Inf), as PyTorch. */
static void bce_with_logits_exact_for_targets_near_one(void **state)
{
    (void)state;
    const float zn = 1.0f - 0x1p-24f;
    const float xs[] = {20.0f, 17.0f, 100.0f, 1e30f, 3.0f, -20.0f};
    const float zs[] = {zn, zn, zn, zn, 0.99f, 1e-7f};
    enum { N = 6 };
    tg_tensor *x = from(N, 1, xs), *z = from(N, 1, zs);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_bce_with_logits(tp, x, z);
    for (int k = 0; k < N; k++) {
        double xv = xs[k], zv = zs[k];
        double ref = xv > 0 ? (1.0 - zv) * xv + log1p(exp(-xv))
                            : -zv * xv + log1p(exp(xv));
        near("bce_with_logits", k, y->data[k], ref, 1e-6);
    }
    tg_tensor *xi = from(1, 2, (float[]){INFINITY, INFINITY});
    tg_tensor *zi = from(1, 2, (float[]){0.5f, 0.25f});
    assert_true(tg_bce_with_logits(tp, xi, zi)->data[0] == INFINITY);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(z);
    tg_tensor_free(xi);
    tg_tensor_free(zi);
}

/* gelu below x = -1, where Phi(x) as 0.5 (1 + erf(x / sqrt 2)) cancels:
 * gelu(-5) was 4% off and gelu(-7) -0 for -8.96e-12 (PyTorch in float64
 * agrees with the erfc form). */
static void gelu_exact_for_negative_inputs(void **state)
{
    (void)state;
    const float xs[] = {-1.5f, -3.0f, -5.0f, -7.0f, -10.0f, -0.5f, 2.0f};
    enum { N = 7 };
    tg_tensor *x = from(1, N, xs);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_gelu(tp, x);
    tg_backward(tp, tg_sum(tp, y));
    for (int k = 0; k < N; k++) {
        double v = xs[k], cdf = 0.5 * erfc(-v / sqrt(2.0));
        double pdf = exp(-0.5 * v * v) / sqrt(2.0 * 3.14159265358979323846);
        near("gelu", k, y->data[k], v * cdf, 1e-5);
        near("d gelu / dx", k, x->grad[k], cdf + v * pdf, 1e-5);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- layer_norm of a row far from 0
 * ------------------------------------------- x = 1000 + k / 256 (exact in
 * float), spread ~0.01: the mean, 1000 + 8 / 1792, is not a float, and rounding
 * it (by up to 3e-5) moved every x - mean by up to half a percent of the
 * spread. */
static void layer_norm_exact_for_a_row_with_a_large_offset(void **state)
{
    (void)state;
    const int k[7] = {0, 3, -5, 7, 1, -2, 4};
    const float w[7] = {0.5f, -1, 0.25f, 2, -0.75f, 1, -0.5f};
    float v[7];
    for (int j = 0; j < 7; j++)
        v[j] = 1000.0f + (float)k[j] / 256.0f;
    tg_tensor *x = from(1, 7, v);
    const float eps = 1e-5f;
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_layer_norm(tp, x, NULL, NULL, eps);
    tg_backward_with(tp, y, w);
    double mean = 0, var = 0, xhat[7], mg = 0, mgx = 0;
    for (int j = 0; j < 7; j++)
        mean += (double)v[j] / 7;
    for (int j = 0; j < 7; j++)
        var += ((double)v[j] - mean) * ((double)v[j] - mean) / 7;
    double rstd = 1 / sqrt(var + (double)eps);
    for (int j = 0; j < 7; j++) {
        xhat[j] = ((double)v[j] - mean) * rstd;
        mg += (double)w[j] / 7;
        mgx += (double)w[j] * xhat[j] / 7;
    }
    for (int j = 0; j < 7; j++) {
        near("layer_norm", j, y->data[j], xhat[j], 1e-5);
        near("d layer_norm", j, x->grad[j],
             rstd * ((double)w[j] - mg - xhat[j] * mgx), 1e-4);
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
}

/* ---- dense: the bias gradient ---------------------------------------------
 * db [OUT] sums B rows of dy (a ramp from seed): each column the float
 * nearest its exact sum. */
static void check_dense_bias_grad(int B, int OUT, uint32_t seed)
{
    tg_tensor *x = tg_tensor_new2(B, 1), *W = tg_tensor_new2(OUT, 1);
    tg_tensor *b = tg_tensor_new(1, (int[]){OUT});
    tg_tensor_require_grad(b);
    for (int i = 0; i < B; i++)
        x->data[i] = 1.0f;
    float *dy = ramp((size_t)B * OUT, seed);
    tg_tape *tp = tg_tape_new();
    tg_backward_with(tp, tg_dense(tp, x, W, b), dy);
    for (int j = 0; j < OUT; j++) {
        double exact = 0.0;
        for (int i = 0; i < B; i++)
            exact += dy[i * OUT + j];
        nearest("dense db", j, b->grad[j], exact);
    }
    free(dy);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(W);
    tg_tensor_free(b);
}

/* A float running sum drifted by several ulp at B = 65,536 (rows in
 * [0.5, 1.5]). */
static void dense_bias_grad_is_the_nearest_float(void **state)
{
    (void)state;
    check_dense_bias_grad(65536, 3, 777);
}

/* The columns go in blocks of 64: with 150 outputs (blocks of 64, 64 and
 * 22) every column still gets its own column sum (3 outputs make one
 * block, where j - j0 and j + j0 agree). */
static void dense_bias_grad_over_column_blocks(void **state)
{
    (void)state;
    check_dense_bias_grad(5, 150, 31);
}

/* ---- broadcast operands: their gradient sums over the broadcast axes ------
 * One scale s for a [256, 784] x (200,704 terms in [0.5, 1.5]): the
 * gradient of s in y = x * s, y = x + s, y = x - s, y = x / s and maximum
 * was summed in float, several hundred ulp off. Now the float nearest the
 * exact sum (div: its terms -dy * y / s, each rounded as the op does). */
static void broadcast_grad_is_the_nearest_float(void **state)
{
    (void)state;
    enum { R = 256, C = 784 };
    tg_tensor *x = tg_tensor_new2(R, C), *sc = tg_tensor_new2(1, 1);
    tg_tensor_require_grad(sc);
    sc->data[0] = 2.0f;
    float *dy = ramp((size_t)R * C, 99);
    for (int i = 0; i < R * C; i++)
        x->data[i] = dy[i] - 1.5f; /* below s: maximum picks s */
    const char *names[] = {"mul", "add", "sub", "div", "maximum"};
    for (int op = 0; op < 5; op++) {
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = op == 0   ? tg_mul(tp, x, sc)
                       : op == 1 ? tg_add(tp, x, sc)
                       : op == 2 ? tg_sub(tp, x, sc)
                       : op == 3 ? tg_div(tp, x, sc)
                                 : tg_maximum(tp, x, sc);
        sc->grad[0] = 0.0f;
        tg_backward_with(tp, y, dy);
        double exact = 0.0;
        for (int i = 0; i < R * C; i++)
            exact += op == 0   ? (double)(dy[i] * x->data[i])
                     : op == 2 ? -(double)dy[i]
                     : op == 3 ? -(double)(dy[i] * y->data[i] / 2.0f)
                               : (double)dy[i];
        nearest(names[op], 0, sc->grad[0], exact);
        tg_tape_free(tp);
    }
    free(dy);
    tg_tensor_free(x);
    tg_tensor_free(sc);
}

/* ---- layer_norm: beta's gradient sums every row --------------------------
 * Over 65,536 rows a float running sum was several ulp off; now the float
 * nearest the exact sum. */
static void layer_norm_beta_grad_is_the_nearest_float(void **state)
{
    (void)state;
    enum { R = 65536, C = 3 };
    tg_tensor *x = tg_tensor_new2(R, C);
    tg_tensor *gamma = tg_tensor_new(1, (int[]){C});
    tg_tensor *beta = tg_tensor_new(1, (int[]){C});
    tg_tensor_require_grad(gamma);
    tg_tensor_require_grad(beta);
    float *dy = ramp((size_t)R * C, 5);
    for (int i = 0; i < R * C; i++)
        x->data[i] = (float)(i % 7);
    for (int j = 0; j < C; j++)
        gamma->data[j] = 1.0f;
    tg_tape *tp = tg_tape_new();
    tg_backward_with(tp, tg_layer_norm(tp, x, gamma, beta, 1e-5f), dy);
    for (int j = 0; j < C; j++) {
        double exact = 0.0;
        for (int i = 0; i < R; i++)
            exact += dy[i * C + j];
        nearest("layer_norm dbeta", j, beta->grad[j], exact);
    }
    free(dy);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(gamma);
    tg_tensor_free(beta);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clamp_gradient_is_zero_at_the_bounds),
        cmocka_unit_test(relu_keeps_nan),
        cmocka_unit_test(extremum_nan_operand_takes_the_gradient),
        cmocka_unit_test(log_softmax_exact_at_large_logits),
        cmocka_unit_test(logsumexp_gradient_exact_at_large_logits),
        cmocka_unit_test(softmax_xent_gradient_exact_at_large_logits),
        cmocka_unit_test(softmax_xent_exact_at_huge_logits),
        cmocka_unit_test(kl_normal_exact_near_zero),
        cmocka_unit_test(kl_normals_exact_near_zero),
        cmocka_unit_test(kl_normals_finite_at_extreme_prior_logvar),
        cmocka_unit_test(mean_is_the_rounded_quotient),
        cmocka_unit_test(bce_with_logits_exact_for_targets_near_one),
        cmocka_unit_test(gelu_exact_for_negative_inputs),
        cmocka_unit_test(layer_norm_exact_for_a_row_with_a_large_offset),
        cmocka_unit_test(dense_bias_grad_is_the_nearest_float),
        cmocka_unit_test(dense_bias_grad_over_column_blocks),
        cmocka_unit_test(broadcast_grad_is_the_nearest_float),
        cmocka_unit_test(layer_norm_beta_grad_is_the_nearest_float),
    };
    return cmocka_run_group_tests_name("autograd: agreement with PyTorch",
                                       tests, NULL, NULL);
}

/* Scoring with a VAE: log-mean-exp at large magnitudes, AUROC against
 * hand-computed values and brute force, the importance-weighted estimator
 * against the exact log p(x) of a linear-Gaussian model, IWAE >= ELBO per
 * example and = at k = 1, the k = 1 estimate against the VAE graph with the
 * same noise, results independent of chunking, flat memory, typicality
 * reference statistics, complexity, posterior pixel spread. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "tapegrad.h"
#include "float_equal.h"

#define LOG_2PI 1.8378770664093453

/* ---- log-mean-exp ------------------------------------------------------- */

static void log_mean_exp_is_stable_at_1e4(void **state)
{
    (void)state;
    double same[3] = {1e4, 1e4, 1e4};
    assert_true(tg_log_mean_exp(same, 3) == 1e4);
    double neg[2] = {-1e4, -1e4 + log(2.0)};
    assert_true(fabs(tg_log_mean_exp(neg, 2) - (-1e4 + log(1.5))) < 1e-9);
    double mixed[2] = {1e4, -1e4};
    assert_true(fabs(tg_log_mean_exp(mixed, 2) - (1e4 - log(2.0))) < 1e-9);
    double big[2] = {1e4, 1e4 - 1.0};
    double want = 1e4 + log((1.0 + exp(-1.0)) / 2.0);
    assert_true(fabs(tg_log_mean_exp(big, 2) - want) < 1e-9);
    double all_inf[2] = {-INFINITY, -INFINITY};
    assert_true(tg_log_mean_exp(all_inf, 2) == -INFINITY);
    double one_inf[2] = {-INFINITY, -5e3};
    assert_true(fabs(tg_log_mean_exp(one_inf, 2) - (-5e3 - log(2.0))) < 1e-9);
}

/* ---- AUROC -------------------------------------------------------------- */

static double auroc_pairs(const double *neg, int nn, const double *pos, int np)
{
    double s = 0;
    for (int i = 0; i < nn; i++)
        for (int j = 0; j < np; j++)
            s += pos[j] > neg[i] ? 1.0 : pos[j] == neg[i] ? 0.5 : 0.0;
    return s / ((double)nn * np);
}

static void auroc_matches_hand_built_lists(void **state)
{
    (void)state;
    double lo[3] = {1, 2, 3}, hi[2] = {4, 5};
    assert_true(tg_auroc(lo, 3, hi, 2) == 1.0);
    assert_true(tg_auroc(hi, 2, lo, 3) == 0.0);
    double ones[2] = {1, 1};
    assert_true(tg_auroc(ones, 2, ones, 2) == 0.5);
    /* 2.5 beats 1, 2; 3 beats 1, 2 and ties 3; 0 beats none: 4.5 / 12 */
    double neg[4] = {1, 2, 3, 4}, pos[3] = {2.5, 3, 0};
    assert_true(tg_auroc(neg, 4, pos, 3) == 0.375);
    double nan_pos[1] = {NAN};
    assert_true(isnan(tg_auroc(neg, 4, nan_pos, 1)));

    /* many ties: small integers, against the O(n^2) pair count */
    tg_rng rng;
    tg_rng_seed(&rng, 7, 0);
    for (int trial = 0; trial < 20; trial++) {
        int nn = 1 + (int)tg_rng_below(&rng, 60);
        int np = 1 + (int)tg_rng_below(&rng, 60);
        double a[60], b[60];
        for (int i = 0; i < nn; i++)
            a[i] = tg_rng_below(&rng, 6);
        for (int i = 0; i < np; i++)
            b[i] = tg_rng_below(&rng, 6) + 0.5 * (trial % 2);
        assert_true(fabs(tg_auroc(a, nn, b, np) - auroc_pairs(a, nn, b, np)) <
                    1e-12);
    }
}

/* ---- a linear-Gaussian model with a closed form --------------------------
 * p(z) = N(0, I_2), p(x|z) = N(W z + c, s^2 I_3). Then
 * p(x) = N(c, W W' + s^2 I), and W's columns are orthogonal, so the exact
 * posterior N(P W'(x - c) / s^2, P), P = (I + W'W / s^2)^-1, is diagonal. */
enum { LG_IN = 3, LG_Z = 2 };
static const double lg_W[LG_IN][LG_Z] = {{1, 1}, {1, -1}, {0, 1}};
static const double lg_c[LG_IN] = {0.5, -0.25, 1.0};
static const double lg_s = 0.7;

static void lg_loglik(tg_tape *tp, void *ctx, const float *x, int n, int kc,
                      const tg_tensor *z, double *out)
{
    (void)tp;
    (void)ctx;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < kc; j++) {
            const float *zr = z->data + (size_t)(i * kc + j) * LG_Z;
            double ll = 0;
            for (int p = 0; p < LG_IN; p++) {
                double mu = lg_c[p] + lg_W[p][0] * zr[0] + lg_W[p][1] * zr[1];
                double r = (x[i * LG_IN + p] - mu) / lg_s;
                ll += -0.5 * (r * r + LOG_2PI) - log(lg_s);
            }
            out[i * kc + j] = ll;
        }
}

/* log N(x; c, C), C = W W' + s^2 I (3 x 3), by Cholesky. */
static double lg_exact(const float *x)
{
    double C[3][3], L[3][3] = {{0}}, y[3], quad = 0, logdet = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            C[a][b] = lg_W[a][0] * lg_W[b][0] + lg_W[a][1] * lg_W[b][1] +
                      (a == b ? lg_s * lg_s : 0);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b <= a; b++) {
            double s = C[a][b];
            for (int k = 0; k < b; k++)
                s -= L[a][k] * L[b][k];
            L[a][b] = a == b ? sqrt(s) : s / L[b][b];
        }
    for (int a = 0; a < 3; a++) {
        double s = x[a] - lg_c[a];
        for (int k = 0; k < a; k++)
            s -= L[a][k] * y[k];
        y[a] = s / L[a][a];
        quad += y[a] * y[a];
        logdet += 2 * log(L[a][a]);
    }
    return -0.5 * (quad + logdet + 3 * LOG_2PI);
}

/* The exact posterior, then optionally shifted (dm) and widened (dlv). */
static void lg_posterior(const float *x, double dm, double dlv, float *mean,
                         float *logvar)
{
    for (int d = 0; d < LG_Z; d++) {
        double wtw = 0, wtr = 0;
        for (int p = 0; p < LG_IN; p++) {
            wtw += lg_W[p][d] * lg_W[p][d];
            wtr += lg_W[p][d] * (x[p] - lg_c[p]);
        }
        double var = 1.0 / (1.0 + wtw / (lg_s * lg_s));
        mean[d] = (float)(var * wtr / (lg_s * lg_s) + dm);
        logvar[d] = (float)(log(var) + dlv);
    }
}

static void estimator_is_exact_with_the_true_posterior(void **state)
{
    (void)state;
    float x[2 * LG_IN] = {0.3f, -1.2f, 2.0f, -0.5f, 0.8f, 0.1f};
    float mean[2 * LG_Z], logvar[2 * LG_Z];
    for (int i = 0; i < 2; i++)
        lg_posterior(x + i * LG_IN, 0, 0, mean + i * LG_Z, logvar + i * LG_Z);
    tg_tape *tp = tg_tape_new();
    double lp[2], elbo[2];
    tg_iw_opts o = {.k = 7, .seed = 3};
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 2, LG_Z, mean, logvar, &o, lp,
                   elbo);
    for (int i = 0; i < 2; i++) {
        /* every weight is p(x): q is the posterior (float z: ~1e-6 off) */
        assert_true(fabs(lp[i] - lg_exact(x + i * LG_IN)) < 1e-4);
        assert_true(fabs(elbo[i] - lg_exact(x + i * LG_IN)) < 1e-4);
    }
    /* no examples: nothing scored, as tg_vae_iwae with n = 0 (it aborted,
     * "bad sizes n=0") */
    lp[0] = elbo[0] = 42.0;
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 0, LG_Z, mean, logvar, &o, lp,
                   elbo);
    assert_true(lp[0] == 42.0 && elbo[0] == 42.0);
    tg_tape_free(tp);
}

static void estimator_converges_to_exact_log_px(void **state)
{
    (void)state;
    float x[LG_IN] = {1.5f, -0.4f, 0.9f};
    float mean[LG_Z], logvar[LG_Z];
    lg_posterior(x, 0.6, 0.8, mean, logvar); /* a poor q */
    double exact = lg_exact(x);
    tg_tape *tp = tg_tape_new();
    int ks[4] = {1, 10, 1000, 100000};
    double gap[4];
    for (int t = 0; t < 4; t++) {
        /* averaged over 20 independent runs so the trend is not noise */
        double sum = 0;
        for (int r = 0; r < 20; r++) {
            double lp;
            tg_iw_opts o = {.k = ks[t], .seed = 11, .stream = 100 * r};
            tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 1, LG_Z, mean, logvar,
                           &o, &lp, NULL);
            sum += lp;
        }
        gap[t] = exact - sum / 20;
        printf("linear-Gaussian: k = %6d  exact - estimate = %.5f\n", ks[t],
               gap[t]);
    }
    assert_true(gap[0] > 0.1); /* the ELBO is well below log p(x) */
    assert_true(gap[1] < gap[0] && gap[2] < gap[1]);
    assert_true(fabs(gap[3]) < 0.01);
    tg_tape_free(tp);
}

/* The weights' effective sample size: k when q is the true posterior (all
 * weights equal), within [1, k] and well below k for a poor q, 1 for k = 1,
 * and the same whatever the chunking of the draws. */
static void estimator_reports_ess(void **state)
{
    (void)state;
    float x[LG_IN] = {1.5f, -0.4f, 0.9f};
    float mean[LG_Z], logvar[LG_Z];
    tg_tape *tp = tg_tape_new();
    double lp, ess, ess2;
    lg_posterior(x, 0, 0, mean, logvar);
    tg_iw_opts o = {.k = 50, .seed = 5, .ess = &ess};
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 1, LG_Z, mean, logvar, &o,
                   &lp, NULL);
    assert_true(fabs(ess - 50) < 1e-3);
    lg_posterior(x, 0.6, 0.8, mean, logvar); /* a poor q */
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 1, LG_Z, mean, logvar, &o,
                   &lp, NULL);
    assert_true(ess >= 1 && ess < 25);
    tg_iw_opts oc = {.k = 50, .max_rows = 7, .seed = 5, .ess = &ess2};
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 1, LG_Z, mean, logvar, &oc,
                   &lp, NULL);
    assert_true(fabs(ess2 - ess) < 1e-9 * ess);
    tg_iw_opts o1 = {.k = 1, .seed = 5, .ess = &ess};
    tg_iw_estimate(tp, lg_loglik, NULL, LG_IN, x, 1, LG_Z, mean, logvar, &o1,
                   &lp, NULL);
    assert_true(fabs(ess - 1) < 1e-12);
    tg_tape_free(tp);
}

/* ---- the VAE ------------------------------------------------------------ */

enum { IN = 16, HID = 8, LAT = 3, N = 10 };

static float *random_images(int n, uint64_t seed)
{
    float *x = malloc(sizeof(float) * n * IN);
    tg_rng rng;
    tg_rng_seed(&rng, seed, 5);
    /* mostly near 0 or 1, like digits */
    for (int i = 0; i < n * IN; i++) {
        float u = tg_rng_uniform(&rng);
        x[i] = u < 0.6f ? 0.0f : u < 0.9f ? 1.0f : tg_rng_uniform(&rng);
    }
    return x;
}

static void iwae_is_at_least_elbo_and_equal_at_k1(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 2);
    float *x = random_images(N, 1);
    tg_tape *tp = tg_tape_new();
    double lp[N], elbo[N], lp1[N], elbo1[N];
    tg_iw_opts o = {.k = 64, .seed = 9};
    tg_vae_iwae(tp, vae, x, N, &o, lp, elbo);
    for (int i = 0; i < N; i++) {
        assert_true(isfinite(lp[i]) && isfinite(elbo[i]));
        assert_true(lp[i] >= elbo[i]);
        assert_true(lp[i] - elbo[i] > 1e-6); /* a real gap, not equality */
    }
    o.k = 1;
    tg_vae_iwae(tp, vae, x, N, &o, lp1, elbo1);
    for (int i = 0; i < N; i++)
        assert_true(lp1[i] == elbo1[i]);
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(x);
}

/* k = 1: log w = -rec + log p(z) - log q(z|x) with rec from the training
 * graph (tg_vae_forward_eps) fed the same noise, densities written out. */
static void k1_estimate_matches_the_training_graph(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 4);
    float *x = random_images(N, 2);
    tg_tape *tp = tg_tape_new();
    double lp[N];
    tg_iw_opts o = {.k = 1, .seed = 21, .stream = 40};
    tg_vae_iwae(tp, vae, x, N, &o, lp, NULL);
    for (int i = 0; i < N; i++) {
        tg_tape_reset(tp);
        tg_tensor *xi = tg_tape_tensor2(tp, 1, IN, false);
        memcpy(xi->data, x + i * IN, sizeof(float) * IN);
        tg_tensor *eps = tg_tape_tensor2(tp, 1, LAT, false);
        tg_rng rng;
        tg_rng_seed(&rng, 21, 40 + (uint64_t)i);
        for (int d = 0; d < LAT; d++)
            eps->data[d] = tg_rng_normal(&rng);
        tg_vae_out out = tg_vae_forward_eps(tp, vae, xi, eps);
        double log_pz = 0, log_qz = 0;
        for (int d = 0; d < LAT; d++) {
            double z = out.z->data[d], m = out.mean->data[d];
            double lv = out.logvar->data[d];
            log_pz += -0.5 * (z * z + LOG_2PI);
            log_qz += -0.5 * ((z - m) * (z - m) / exp(lv) + lv + LOG_2PI);
        }
        double want = -out.rec->data[0] + log_pz - log_qz;
        assert_true(fabs(lp[i] - want) < 1e-4 * (1 + fabs(want)));
    }
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(x);
}

static void
results_do_not_depend_on_chunking_and_memory_stays_flat(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 6);
    float *x = random_images(N, 3);
    tg_tape *tp = tg_tape_new();
    double a[N], b[N], one;
    tg_iw_opts o = {.k = 50, .seed = 5, .stream = 7};
    tg_vae_iwae(tp, vae, x, N, &o, a, NULL);
    o.max_rows = 7; /* 7 draws of one example per pass */
    tg_vae_iwae(tp, vae, x, N, &o, b, NULL);
    for (int i = 0; i < N; i++) {
        assert_true(fabs(a[i] - b[i]) < 1e-9 * (1 + fabs(a[i])));
        /* alone, with the stream it had in the batch */
        tg_iw_opts oi = {.k = 50, .seed = 5, .stream = 7 + (uint64_t)i};
        tg_vae_iwae(tp, vae, x + i * IN, 1, &oi, &one, NULL);
        assert_true(fabs(a[i] - one) < 1e-9 * (1 + fabs(a[i])));
    }

    /* a fresh tape: its arena is what k = 200 needs, and k = 5000 adds
     * nothing */
    tg_tape_free(tp);
    tp = tg_tape_new();
    o.max_rows = 64;
    o.k = 200;
    tg_vae_iwae(tp, vae, x, N, &o, a, NULL);
    size_t bytes = tg_tape_arena_bytes(tp), allocs = tg_tape_heap_allocs(tp);
    o.k = 5000;
    tg_vae_iwae(tp, vae, x, N, &o, a, NULL);
    assert_true(tg_tape_arena_bytes(tp) == bytes);
    assert_true(tg_tape_heap_allocs(tp) == allocs);
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(x);
}

/* More examples than one encoding batch (256 rows): every example's log
 * p(x), ELBO and ESS past the first batch are its own, the same as that
 * example scored alone with the stream it had in the batch. */
static void rows_past_the_first_encoding_batch_are_their_own(void **state)
{
    (void)state;
    enum { MANY = 300 };
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 9);
    float *x = random_images(MANY, 5);
    tg_tape *tp = tg_tape_new();
    double *lp = malloc(sizeof(double) * MANY * 3);
    assert_non_null(lp);
    double *elbo = lp + MANY, *ess = lp + 2 * MANY;
    tg_iw_opts o = {.k = 4, .seed = 2, .stream = 3, .ess = ess};
    tg_vae_iwae(tp, vae, x, MANY, &o, lp, elbo);
    for (int i = 0; i < MANY; i += 7) {
        double lp1, elbo1, ess1;
        tg_iw_opts oi = {
            .k = 4, .seed = 2, .stream = 3 + (uint64_t)i, .ess = &ess1};
        tg_vae_iwae(tp, vae, x + i * IN, 1, &oi, &lp1, &elbo1);
        assert_true(fabs(lp[i] - lp1) < 1e-9 * (1 + fabs(lp1)));
        assert_true(fabs(elbo[i] - elbo1) < 1e-9 * (1 + fabs(elbo1)));
        assert_true(fabs(ess[i] - ess1) < 1e-9 * ess1);
    }
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(lp);
    free(x);
}

/* tg_vae_iwae spreads groups of examples over the threads, one tape each:
 * every estimate and ESS must be the same bits on 1 and 2 threads, with
 * many groups (max_rows 100, k 30: three examples per group) and one. */
static void iwae_is_the_same_on_1_and_2_threads(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 8);
    float *x = random_images(N, 4);
    tg_tape *tp = tg_tape_new();
    int old = tg_get_threads();
    for (int rows = 100; rows <= 4096; rows += 3996) {
        double lp[2][N], elbo[2][N], ess[2][N];
        for (int t = 0; t < 2; t++) {
            tg_set_threads(t + 1);
            tg_iw_opts o = {.k = 30,
                            .max_rows = rows,
                            .seed = 3,
                            .stream = 9,
                            .ess = ess[t]};
            tg_vae_iwae(tp, vae, x, N, &o, lp[t], elbo[t]);
        }
        for (int i = 0; i < N; i++) {
            assert_true(isfinite(lp[0][i]) && lp[0][i] < 0);
            assert_memory_equal(&lp[0][i], &lp[1][i], sizeof(double));
            assert_memory_equal(&elbo[0][i], &elbo[1][i], sizeof(double));
            assert_memory_equal(&ess[0][i], &ess[1][i], sizeof(double));
        }
    }
    tg_set_threads(old);
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(x);
}

static void posterior_pixels_spread(void **state)
{
    (void)state;
    tg_vae *vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 8);
    float *x = random_images(2, 4);
    float mean[2 * IN], std[2 * IN];
    tg_tape *tp = tg_tape_new();
    tg_vae_posterior_pixels(tp, vae, x, 2, 1, 1, 0, mean, std);
    for (int q = 0; q < 2 * IN; q++)
        assert_true(std[q] == 0.0f && mean[q] > 0 && mean[q] < 1);
    tg_vae_posterior_pixels(tp, vae, x, 2, 300, 1, 0, mean, std);
    double avg = 0;
    for (int q = 0; q < 2 * IN; q++) {
        assert_true(std[q] >= 0 && std[q] <= 0.5f);
        assert_true(mean[q] > 0 && mean[q] < 1);
        avg += std[q] / (2 * IN);
    }
    assert_true(avg > 1e-4); /* an untrained q is wide: pixels do vary */

    /* against a Monte Carlo of its own (another rng): z = mean + exp(logvar
     * / 2) eps from tg_vae_encode, decoded. A model made sensitive to z:
     * mean 1 and logvar 1 added by the encoder, the decoder's weights
     * times 4. 20000 draws each, so the means and the standard deviations
     * (of values in [0, 1]) agree within 0.02, over 4 standard errors; the
     * seeds are fixed */
    tg_vae_free(vae);
    vae = tg_vae_new(
        (tg_vae_config){IN, HID, LAT, TG_VAE_MLP, TG_VAE_BERNOULLI}, 8);
    for (int d = 0; d < 2 * LAT; d++)
        vae->enc2.b->data[d] += 1.0f;
    const tg_tensor *dw[2] = {vae->dec1.W, vae->dec2.W};
    for (int t = 0; t < 2; t++)
        for (size_t j = 0; j < dw[t]->size; j++)
            dw[t]->data[j] *= 4.0f;
    enum { MC = 20000 };
    tg_vae_posterior_pixels(tp, vae, x, 2, MC, 3, 0, mean, std);
    tg_rng rng;
    tg_rng_seed(&rng, 77, 5);
    for (int i = 0; i < 2; i++) {
        tg_tape_reset(tp);
        tg_tape_set_recording(tp, false);
        tg_tensor *xi = tg_tape_view2(tp, x + i * IN, 1, IN);
        tg_tensor *m, *lv;
        tg_vae_encode(tp, vae, xi, &m, &lv);
        tg_tensor *z = tg_tape_tensor2(tp, MC, LAT, false);
        for (int j = 0; j < MC; j++)
            for (int d = 0; d < LAT; d++)
                z->data[j * LAT + d] =
                    (float)(m->data[d] +
                            exp(0.5 * lv->data[d]) * tg_rng_normal(&rng));
        tg_tensor *p = tg_vae_decode(tp, vae, z);
        for (int q = 0; q < IN; q++) {
            double s1 = 0, s2 = 0;
            for (int j = 0; j < MC; j++) {
                double v = p->data[j * IN + q];
                s1 += v;
                s2 += v * v;
            }
            double mq = s1 / MC, sq = sqrt(fmax(s2 / MC - mq * mq, 0));
            assert_true(fabs(mean[i * IN + q] - mq) < 0.02);
            assert_true(fabs(std[i * IN + q] - sq) < 0.02);
        }
    }
    tg_tape_free(tp);
    tg_vae_free(vae);
    free(x);
}

/* ---- typicality and complexity --------------------------------------------
 */

static void typicality_reference_comes_from_the_fit_data_only(void **state)
{
    (void)state;
    /* mean 3, variance 2.5: the sixth value is past n and not read */
    double one[6] = {1, 2, 3, 4, 5, 1000};
    tg_typical r1;
    assert_int_equal(tg_typical_fit(&r1, one, 5, 1), TG_OK);
    assert_true(fabs(r1.mean[0] - 3.0) < 1e-12);
    double f = 3 + sqrt(2.5), g = 3 - 2 * sqrt(2.5);
    assert_true(fabs(tg_typical_score(&r1, &f) - 1.0) < 1e-12);
    assert_true(fabs(tg_typical_score(&r1, &g) - 2.0) < 1e-12);

    /* 2-D against the explicit inverse of the covariance */
    enum { M = 200 };
    double feat[2 * M];
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    for (int i = 0; i < M; i++) {
        double u = tg_rng_normal(&rng), v = tg_rng_normal(&rng);
        feat[2 * i] = 100 + 5 * u;
        feat[2 * i + 1] = 80 + 4 * u + 0.5 * v; /* strongly correlated */
    }
    tg_typical ref, again;
    assert_int_equal(tg_typical_fit(&ref, feat, M, 2), TG_OK);
    double c00 = ref.cov[0][0], c01 = ref.cov[0][1], c11 = ref.cov[1][1];
    double det = c00 * c11 - c01 * c01;
    double ood[4][2] = {{100, 80}, {110, 88}, {100, 84}, {90, 80}};
    tg_typical before = ref;
    for (int t = 0; t < 4; t++) {
        double dx = ood[t][0] - ref.mean[0], dy = ood[t][1] - ref.mean[1];
        double want =
            sqrt((c11 * dx * dx - 2 * c01 * dx * dy + c00 * dy * dy) / det);
        assert_true(fabs(tg_typical_score(&ref, ood[t]) - want) <
                    1e-9 * (1 + want));
    }
    /* scoring other data leaves the reference as fitted, and a refit on the
     * same in-distribution features gives the same bytes */
    assert_memory_equal(&before, &ref, sizeof ref);
    assert_int_equal(tg_typical_fit(&again, feat, M, 2), TG_OK);
    assert_memory_equal(&again, &ref, sizeof ref);
    /* off the correlation line is far more atypical than along it */
    assert_true(tg_typical_score(&ref, ood[2]) >
                3 * tg_typical_score(&ref, ood[1]));

    double line[6] = {1, 2, 2, 4, 3, 6}; /* collinear */
    assert_int_equal(tg_typical_fit(&ref, line, 3, 2), TG_ERR_ARG);
    double bad[3] = {1, NAN, 2};
    assert_int_equal(tg_typical_fit(&ref, bad, 3, 1), TG_ERR_ARG);
    /* a constant feature (0.1 does not sum to n * 0.1 exactly: its variance
     * came out 1e-32, was taken, and the score of 0 was 8e15) */
    double cst[2 * 11];
    for (int i = 0; i < 11; i++)
        cst[2 * i] = 0.1, cst[2 * i + 1] = i;
    assert_int_equal(tg_typical_fit(&ref, cst, 11, 2), TG_ERR_ARG);
    assert_non_null(
        strstr(tg_errmsg(), "feature 0 of 11 examples is constant"));
    double zeros[5] = {0};
    assert_int_equal(tg_typical_fit(&ref, zeros, 5, 1), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "feature 0 of 5 examples is constant"));
    double one_cst[7] = {1e5, 1e5, 1e5, 1e5, 1e5, 1e5, 1e5};
    assert_int_equal(tg_typical_fit(&ref, one_cst, 7, 1), TG_ERR_ARG);
    /* a constant of 1e6 + 0.1: its mean rounds, the variance comes out
     * about 6e-20, far below 1e-20 of the mean square (1e-8) */
    double big_cst[11];
    for (int i = 0; i < 11; i++)
        big_cst[i] = 1e6 + 0.1;
    assert_int_equal(tg_typical_fit(&ref, big_cst, 11, 1), TG_ERR_ARG);
    /* 1e6 +- 5e-5 (six +, five -): variance 1.2 * (5e-5)^2 = 2.7e-9, below
     * 1e-20 of the mean square 1e12 over all examples (that of one example
     * alone would be 9e-10): constant too */
    for (int i = 0; i < 11; i++)
        big_cst[i] = 1e6 + (i % 2 ? -5e-5 : 5e-5);
    assert_int_equal(tg_typical_fit(&ref, big_cst, 11, 1), TG_ERR_ARG);
}

static void complexity_is_deflate_bits(void **state)
{
    (void)state;
    uint8_t flat[784] = {0}, noise[784];
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    for (int i = 0; i < 784; i++)
        noise[i] = (uint8_t)tg_rng_below(&rng, 256);
    double a, b;
    if (!tg_have_zlib()) {
        assert_int_equal(tg_complexity_bits(flat, 784, &a), TG_ERR_UNSUPPORTED);
        return;
    }
    assert_int_equal(tg_complexity_bits(flat, 784, &a), TG_OK);
    assert_int_equal(tg_complexity_bits(noise, 784, &b), TG_OK);
    assert_true(a > 0 && a < 8 * 40);        /* a run of zeros: tiny */
    assert_true(b > 8 * 784 && b < 8 * 820); /* stored: larger than raw */
    assert_true(fmod(a, 8) == 0);
}

/* n * d past INT_MAX: feat[i * d + a] wrapped (2^29 + 1 examples of 4
 * features: i * d reaches 2^31), reading up to 16 GiB before feat. feat is
 * mapped zeros (the zero page, read only) but for four unit rows at the
 * end, after 16 GiB that may not be read (PROT_NONE): the old index landed
 * there. Half a GiB of page tables at most, no memory. Skipped under ASan
 * and valgrind (every read checked). */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VAE_SCORE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define VAE_SCORE_ASAN 1
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif

static void typicality_fit_past_int_max_features(void **state)
{
    (void)state;
#ifdef VAE_SCORE_ASAN
    skip();
#endif
#ifdef RUNNING_ON_VALGRIND
    if (RUNNING_ON_VALGRIND)
        skip();
#endif
    const char *pre = getenv("LD_PRELOAD");
    if (pre && strstr(pre, "vgpreload"))
        skip();
    const int d = 4, n = (1 << 29) + 1;
    size_t half = ((size_t)n * d * sizeof(double) + 8191) / 4096 * 4096;
    char *base = mmap(NULL, 2 * half, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        skip(); /* no 32 GiB of address space here */
    assert_int_equal(mprotect(base + half, half, PROT_READ), 0);
    double *feat = (double *)(base + half);
    /* the last d examples, e_0 .. e_3, on a writable page of their own */
    char *tail = (char *)(feat + (size_t)(n - d) * d);
    char *page = (char *)((uintptr_t)tail & ~(uintptr_t)4095);
    assert_true(mmap(page, 2 * 4096, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
                     0) == (void *)page);
    for (int a = 0; a < d; a++)
        feat[(size_t)(n - d + a) * d + a] = 1.0;
    tg_typical r;
    assert_int_equal(tg_typical_fit(&r, feat, n, d), TG_OK);
    for (int a = 0; a < d; a++) {
        assert_float_equal(r.mean[a], 1.0 / n, 1e-20);
        assert_float_equal(r.cov[a][a], (1.0 - 1.0 / n) / (n - 1), 1e-20);
    }
    munmap(base, 2 * half);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(log_mean_exp_is_stable_at_1e4),
        cmocka_unit_test(auroc_matches_hand_built_lists),
        cmocka_unit_test(estimator_is_exact_with_the_true_posterior),
        cmocka_unit_test(estimator_converges_to_exact_log_px),
        cmocka_unit_test(estimator_reports_ess),
        cmocka_unit_test(iwae_is_at_least_elbo_and_equal_at_k1),
        cmocka_unit_test(k1_estimate_matches_the_training_graph),
        cmocka_unit_test(
            results_do_not_depend_on_chunking_and_memory_stays_flat),
        cmocka_unit_test(rows_past_the_first_encoding_batch_are_their_own),
        cmocka_unit_test(iwae_is_the_same_on_1_and_2_threads),
        cmocka_unit_test(posterior_pixels_spread),
        cmocka_unit_test(typicality_reference_comes_from_the_fit_data_only),
        cmocka_unit_test(typicality_fit_past_int_max_features),
        cmocka_unit_test(complexity_is_deflate_bits),
    };
    return cmocka_run_group_tests_name("models_vae_score", tests, NULL, NULL);
}

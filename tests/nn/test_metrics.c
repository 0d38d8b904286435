/* The uncertainty metrics against values computed by hand: ECE and its bins,
 * Brier, NLL, accuracy at a coverage, AUROC (ties count half), and the
 * entropy decomposition (mutual information 0 for identical samples, >= 0
 * and equal to total - aleatoric always), and rows that are not
 * distributions refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"

/* Four rows, three classes. Confidences 0.7, 0.5, 0.9, 0.4; predictions
 * 0, 1, 2, 0; labels 0, 0, 2, 1: rows 0 and 2 are right. */
static const float P4[4 * 3] = {0.7f,  0.2f,  0.1f, 0.3f, 0.5f,  0.2f,
                                0.05f, 0.05f, 0.9f, 0.4f, 0.35f, 0.25f};
static const int L4[4] = {0, 0, 2, 1};

static void ece_by_hand(void **state)
{
    (void)state;
    /* Two bins: (0, 0.5] holds rows 1 and 3 (conf 0.45 mean, accuracy 0);
     * (0.5, 1] holds rows 0 and 2 (conf 0.8, accuracy 1).
     * ECE = 2/4 * 0.45 + 2/4 * 0.2 = 0.325. */
    tg_reliability_bin bins[2];
    double ece = tg_metric_ece(P4, L4, 4, 3, 2, bins);
    assert_true(fabs(ece - 0.325) < 1e-7);
    assert_int_equal(bins[0].count, 2);
    assert_int_equal(bins[1].count, 2);
    assert_true(fabs(bins[0].confidence - 0.45) < 1e-7);
    assert_true(bins[0].accuracy == 0.0 && bins[1].accuracy == 1.0);
    assert_true(bins[0].hi == 0.5 && bins[1].lo == 0.5);
    /* 15 bins: each row alone in its bin (0.4f, a little above 0.4, in bin
     * 6 = (0.4, 0.467],
     * 0.5 in bin 7, 0.7 in bin 10, 0.9 in bin 13):
     * ECE = (0.4 + 0.5 + 0.3 + 0.1) / 4 = 0.325 as well. */
    tg_reliability_bin b15[15];
    assert_true(fabs(tg_metric_ece(P4, L4, 4, 3, 15, b15) - 0.325) < 1e-7);
    assert_int_equal(b15[6].count, 1);
    assert_int_equal(b15[7].count, 1);
    assert_int_equal(b15[10].count, 1);
    assert_int_equal(b15[13].count, 1);
    assert_true(isnan(b15[0].confidence));
    /* one bin: |accuracy - mean confidence| = |0.5 - 0.625| */
    assert_true(fabs(tg_metric_ece(P4, L4, 4, 3, 1, NULL) - 0.125) < 1e-7);
}

static void brier_nll_accuracy_by_hand(void **state)
{
    (void)state;
    /* row 0: 0.09 + 0.04 + 0.01 = 0.14; row 1: 0.49 + 0.25 + 0.04 = 0.78;
     * row 2: 0.0025 + 0.0025 + 0.01 = 0.015; row 3: 0.16 + 0.4225 + 0.0625
     * = 0.645; mean 1.58 / 4 = 0.395 */
    assert_true(fabs(tg_metric_brier(P4, L4, 4, 3) - 0.395) < 1e-7);
    double nll = -(log(0.7) + log(0.3) + log(0.9) + log(0.35)) / 4;
    assert_true(fabs(tg_metric_nll(P4, L4, 4, 3) - nll) < 1e-7);
    assert_true(tg_metric_accuracy(P4, L4, 4, 3) == 0.5);
    /* a zero probability on the label counts as TG_PROB_FLOOR */
    const float hard[2] = {1.0f, 0.0f};
    const int one = 1;
    assert_true(fabs(tg_metric_nll(hard, &one, 1, 2) + log(TG_PROB_FLOOR)) <
                1e-9);
    /* perfect predictions: Brier 0, ECE 0 */
    const float sure[4] = {1.0f, 0.0f, 0.0f, 1.0f};
    const int sure_l[2] = {0, 1};
    assert_true(tg_metric_brier(sure, sure_l, 2, 2) == 0.0);
    assert_true(tg_metric_ece(sure, sure_l, 2, 2, 15, NULL) == 0.0);
    assert_true(tg_metric_accuracy(sure, sure_l, 2, 2) == 1.0);
    /* the predicted class of a tie is the first of the largest */
    const float tied[3] = {0.25f, 0.375f, 0.375f};
    const int second = 1, third = 2;
    assert_true(tg_metric_accuracy(tied, &second, 1, 3) == 1.0);
    assert_true(tg_metric_accuracy(tied, &third, 1, 3) == 0.0);
}

static void accuracy_at_coverage_by_hand(void **state)
{
    (void)state;
    /* By confidence: row 2 (0.9, right), 0 (0.7, right), 1 (0.5, wrong),
     * 3 (0.4, wrong). 50%: 2 rows, 1.0; 75%: 3 rows, 2/3; 60%: ceil(2.4) = 3
     * rows; 100%: 0.5; 10%: the single most confident row. */
    assert_true(tg_metric_accuracy_at_coverage(P4, L4, 4, 3, 0.5) == 1.0);
    assert_true(fabs(tg_metric_accuracy_at_coverage(P4, L4, 4, 3, 0.75) -
                     2.0 / 3.0) < 1e-12);
    assert_true(fabs(tg_metric_accuracy_at_coverage(P4, L4, 4, 3, 0.6) -
                     2.0 / 3.0) < 1e-12);
    assert_true(tg_metric_accuracy_at_coverage(P4, L4, 4, 3, 1.0) == 0.5);
    assert_true(tg_metric_accuracy_at_coverage(P4, L4, 4, 3, 0.1) == 1.0);
    /* ties in confidence are taken in row order: row 0 (wrong) first */
    const float tie[4] = {0.6f, 0.4f, 0.6f, 0.4f};
    const int tie_l[2] = {1, 0};
    assert_true(tg_metric_accuracy_at_coverage(tie, tie_l, 2, 2, 0.5) == 0.0);
    /* 0.28 * 25 is 7.000000000000001 in double: the 7 most confident rows
     * (right), not 8 (the 8th is wrong). Row i: confidence 0.99 - 0.01 i
     * on class 0, label 0 for the first 7. */
    float p25[25 * 2];
    int l25[25];
    for (int i = 0; i < 25; i++) {
        p25[2 * i] = 0.99f - 0.01f * (float)i;
        p25[2 * i + 1] = 1.0f - p25[2 * i];
        l25[i] = i < 7 ? 0 : 1;
    }
    assert_true(tg_metric_accuracy_at_coverage(p25, l25, 25, 2, 0.28) == 1.0);
    assert_true(tg_metric_accuracy_at_coverage(p25, l25, 25, 2, 0.32) ==
                7.0 / 8.0);
}

static void auroc_by_hand(void **state)
{
    (void)state;
    const double lo[3] = {0.1, 0.2, 0.3}, hi[2] = {0.8, 0.9};
    assert_true(tg_auroc(lo, 3, hi, 2) == 1.0);
    assert_true(tg_auroc(hi, 2, lo, 3) == 0.0);
    /* ties count half: one tie among 2 x 2 pairs, the rest split evenly */
    const double neg[2] = {0.5, 0.2}, pos[2] = {0.5, 0.1};
    /* pairs (pos, neg): (0.5,0.5) half, (0.5,0.2) win, (0.1,*) lose: 1.5/4 */
    assert_true(tg_auroc(neg, 2, pos, 2) == 0.375);
    const double same[3] = {1, 1, 1};
    assert_true(tg_auroc(same, 3, same, 2) == 0.5);
}

static double entropy(const double *p, int C)
{
    double h = 0;
    for (int k = 0; k < C; k++)
        h -= p[k] > 0 ? p[k] * log(p[k]) : 0.0;
    return h;
}

static void decomposition_by_hand(void **state)
{
    (void)state;
    /* Row 0: samples (1, 0) and (0, 1): mean (0.5, 0.5), total log 2,
     * aleatoric 0, epistemic log 2. Row 1: both (0.5, 0.5): total =
     * aleatoric = log 2, epistemic 0. Layout [S = 2, n = 2, C = 2]. */
    const float s[8] = {1, 0, 0.5f, 0.5f, 0, 1, 0.5f, 0.5f};
    float mean[4];
    tg_uncertainty u[2];
    tg_predictive(s, 2, 2, 2, mean, u);
    for (int i = 0; i < 4; i++)
        assert_true(mean[i] == 0.5f);
    assert_true(fabs(u[0].total - log(2.0)) < 1e-12);
    assert_true(u[0].aleatoric == 0.0);
    assert_true(fabs(u[0].epistemic - log(2.0)) < 1e-12);
    assert_true(fabs(u[1].total - log(2.0)) < 1e-12);
    assert_true(fabs(u[1].aleatoric - log(2.0)) < 1e-12);
    assert_true(u[1].epistemic == 0.0);
}

/* Random softmax-like samples: identical samples give exactly 0; otherwise
 * epistemic >= 0 and equal to total - aleatoric. */
static void mutual_information_zero_and_nonnegative(void **state)
{
    (void)state;
    enum { S = 7, N = 50, C = 10 };
    static float s[S * N * C];
    tg_rng rng;
    tg_rng_seed(&rng, 4, 0);
    for (int trial = 0; trial < 2; trial++) {
        for (int i = 0; i < N; i++) {
            double z[C], sum = 0;
            for (int k = 0; k < C; k++)
                sum += z[k] = exp(3.0 * tg_rng_normal(&rng));
            for (int t = 0; t < S; t++) {
                double zs[C], ss = 0;
                for (int k = 0; k < C; k++)
                    ss += zs[k] = trial ? exp(3.0 * tg_rng_normal(&rng)) : z[k];
                for (int k = 0; k < C; k++)
                    s[(t * N + i) * C + k] = (float)(zs[k] / ss);
            }
            (void)sum;
        }
        tg_uncertainty u[N];
        float mean[N * C];
        tg_predictive(s, S, N, C, mean, u);
        for (int i = 0; i < N; i++) {
            if (trial == 0) {
                assert_true(u[i].epistemic == 0.0);
                assert_true(fabs(u[i].total - u[i].aleatoric) < 1e-12);
            } else {
                assert_true(u[i].epistemic > 0.0);
                assert_true(fabs(u[i].epistemic -
                                 (u[i].total - u[i].aleatoric)) < 1e-9);
            }
            double pbar[C];
            for (int k = 0; k < C; k++)
                pbar[k] = mean[i * C + k];
            assert_true(fabs(entropy(pbar, C) - u[i].total) < 1e-5);
        }
    }
    /* one sample: no epistemic uncertainty */
    tg_uncertainty one;
    tg_predictive(s, 1, 1, C, NULL, &one);
    assert_true(one.epistemic == 0.0);
}

/* neg {1, 2, 3, 4}, pos {2.5, 3.5, 5, 6}: from the top 6+ 5+ 4- 3.5+ 3-
 * 2.5+ 2- 1-. */
static const double NEG4[4] = {1, 2, 3, 4}, POS4[4] = {2.5, 3.5, 5, 6};

static void fpr_at_tpr_by_hand(void **state)
{
    (void)state;
    /* 95% of 4 positives: all 4, threshold 2.5, negatives 3 and 4 above */
    assert_true(tg_fpr_at_tpr(NEG4, 4, POS4, 4, 0.95) == 0.5);
    assert_true(tg_fpr_at_tpr(NEG4, 4, POS4, 4, 0.75) == 0.25); /* t 3.5 */
    assert_true(tg_fpr_at_tpr(NEG4, 4, POS4, 4, 0.5) == 0.0);   /* t 5 */
    /* a tie at the threshold counts as a false positive */
    const double n2[2] = {1, 2}, p2[2] = {2, 3};
    assert_true(tg_fpr_at_tpr(n2, 2, p2, 2, 1.0) == 0.5);
    /* 0.95 * 20 is 19 positives, not 20 (rounding): threshold 2 */
    double p20[20];
    for (int i = 0; i < 20; i++)
        p20[i] = i + 1;
    const double below = 1.5, at = 2.0;
    assert_true(tg_fpr_at_tpr(&below, 1, p20, 20, 0.95) == 0.0);
    assert_true(tg_fpr_at_tpr(&at, 1, p20, 20, 0.95) == 1.0);
    /* 0.28 * 25 is 7.000000000000001 in double: still 7 positives of 25
     * down to 1, threshold 19, so a negative at 18.5 is below it */
    double p25[25];
    for (int i = 0; i < 25; i++)
        p25[i] = i + 1;
    const double n185 = 18.5, n19 = 19.0;
    assert_true(0.28 * 25 > 7.0);
    assert_true(tg_fpr_at_tpr(&n185, 1, p25, 25, 0.28) == 0.0);
    assert_true(tg_fpr_at_tpr(&n19, 1, p25, 25, 0.28) == 1.0);
    const double nan = NAN;
    assert_true(isnan(tg_fpr_at_tpr(&nan, 1, p2, 2, 0.95)));
}

static void aupr_by_hand(void **state)
{
    (void)state;
    /* precision at each positive: 1/1, 2/2, 3/4, 4/6 */
    double want = (1.0 + 1.0 + 0.75 + 4.0 / 6.0) / 4.0;
    assert_true(fabs(tg_aupr(NEG4, 4, POS4, 4) - want) < 1e-12);
    /* perfect separation: 1; all tied: the share of positives */
    const double lo[3] = {0, 1, 2}, hi[2] = {3, 4}, same[3] = {1, 1, 1};
    assert_true(tg_aupr(lo, 3, hi, 2) == 1.0);
    assert_true(fabs(tg_aupr(same, 3, same, 2) - 0.4) < 1e-12);
    /* a tie across the classes is one threshold: 3+ then {2+, 2-}:
     * 1/2 * 1 + 1/2 * 2/3 */
    const double n2[2] = {1, 2}, p2[2] = {2, 3};
    assert_true(fabs(tg_aupr(n2, 2, p2, 2) - (0.5 + 1.0 / 3.0)) < 1e-12);
    /* one positive, below one of two negatives: precision 1/2 there */
    const double half = 1.5;
    assert_true(fabs(tg_aupr(n2, 2, &half, 1) - 0.5) < 1e-12);
    /* one negative, above one of two positives: 1/1, then 2/3 */
    assert_true(fabs(tg_aupr(&half, 1, n2, 2) - (1.0 + 2.0 / 3.0) / 2) < 1e-12);
}

static void auroc_bootstrap_by_hand(void **state)
{
    (void)state;
    double lo, hi;
    /* separated lists: every resample separates them too */
    const double l3[3] = {0, 1, 2}, h2[2] = {3, 4};
    tg_auroc_bootstrap(l3, 3, h2, 2, 1000, 7, 0.95, &lo, &hi);
    assert_true(lo == 1.0 && hi == 1.0);
    /* one of each: every resample is the data; a tie is 0.5 */
    const double z = 0.0;
    tg_auroc_bootstrap(&z, 1, &z, 1, 100, 7, 0.95, &lo, &hi);
    assert_true(lo == 0.5 && hi == 0.5);
    /* neg {0, 2}, pos {1}: a resample of the negatives is {0, 0} (AUROC 1,
     * p 1/4), {2, 2} (0, p 1/4) or mixed (0.5, p 1/2): of 1000 sorted
     * values the 26th is 0 and the 975th is 1 (about 250 of each) */
    const double n2[2] = {0, 2}, one = 1;
    tg_auroc_bootstrap(n2, 2, &one, 1, 1000, 7, 0.95, &lo, &hi);
    assert_true(lo == 0.0 && hi == 1.0);
    /* a 40% interval, the 301st to the 700th value: inside the halves */
    tg_auroc_bootstrap(n2, 2, &one, 1, 1000, 7, 0.4, &lo, &hi);
    assert_true(lo == 0.5 && hi == 0.5);
    /* equal scores in one list: neg {0, 0, 2}, pos {1}. A resample's AUROC
     * is the share of its 3 negatives below 1, Binomial(3, 2/3) / 3: 0 (p
     * 1/27), 1/3 (6/27), 2/3 (12/27) or 1 (8/27). Of 1000 sorted values the
     * 101st is 1/3 (about 37 below, 259 up to it) and the 900th is 1 (about
     * 703 below it). */
    const double n002[3] = {0, 0, 2};
    tg_auroc_bootstrap(n002, 3, &one, 1, 1000, 7, 0.8, &lo, &hi);
    assert_true(fabs(lo - 1.0 / 3.0) < 1e-12 && hi == 1.0);
    /* the same with the equal scores positive: pos {2, 2, 0}, neg {1} */
    const double p220[3] = {2, 2, 0};
    tg_auroc_bootstrap(&one, 1, p220, 3, 1000, 7, 0.8, &lo, &hi);
    assert_true(fabs(lo - 1.0 / 3.0) < 1e-12 && hi == 1.0);
    /* overlapping normals: the interval holds the AUROC, is neither empty
     * nor huge, and is the same for the same seed */
    enum { N = 300 };
    double a[N], b[N];
    tg_rng rng;
    tg_rng_seed(&rng, 3, 0);
    for (int i = 0; i < N; i++) {
        a[i] = tg_rng_normal(&rng);
        b[i] = 1.0 + tg_rng_normal(&rng);
    }
    double auc = tg_auroc(a, N, b, N), lo2, hi2;
    tg_auroc_bootstrap(a, N, b, N, 500, 11, 0.95, &lo, &hi);
    tg_auroc_bootstrap(a, N, b, N, 500, 11, 0.95, &lo2, &hi2);
    assert_true(lo < auc && auc < hi);
    assert_true(hi - lo > 0.02 && hi - lo < 0.15);
    assert_true(lo == lo2 && hi == hi2);
    /* the interval is the floor(a B)-th and the ceil((1 - a) B)-th of B
     * sorted values, a = (1 - level) / 2: symmetric about the middle. The
     * scores negated draw the same resamples (the same seed and list
     * sizes), each with AUROC 1 - its AUROC, so their interval is [1 - hi,
     * 1 - lo]. */
    double na[N], nb[N], nlo, nhi;
    for (int i = 0; i < N; i++)
        na[i] = -a[i], nb[i] = -b[i];
    /* (level 0.1, B 200: (1 - a) B is 110.00000000000001 in double, the
     * ceil still 110) */
    for (int t = 0; t < 4; t++) {
        int resamples = t % 2 ? 1000 : 200;
        double level = t < 2 ? 0.9 : 0.1;
        tg_auroc_bootstrap(a, N, b, N, resamples, 5, level, &lo, &hi);
        tg_auroc_bootstrap(na, N, nb, N, resamples, 5, level, &nlo, &nhi);
        assert_true(fabs(nlo - (1 - hi)) < 1e-12);
        assert_true(fabs(nhi - (1 - lo)) < 1e-12);
    }
}

static void ess_by_hand(void **state)
{
    (void)state;
    const double flat[4] = {3, 3, 3, 3};
    assert_true(fabs(tg_ess_from_logw(flat, 4) - 4.0) < 1e-12);
    const double onehot[3] = {0, -INFINITY, -INFINITY};
    assert_true(tg_ess_from_logw(onehot, 3) == 1.0);
    /* far beyond exp's range: still 2 */
    const double big[2] = {1000, 1000}, tiny[2] = {-1000, -1000};
    assert_true(fabs(tg_ess_from_logw(big, 2) - 2.0) < 1e-12);
    assert_true(fabs(tg_ess_from_logw(tiny, 2) - 2.0) < 1e-12);
    /* weights 1 and 3: 16 / 10 */
    const double w13[2] = {0, log(3.0)};
    assert_true(fabs(tg_ess_from_logw(w13, 2) - 1.6) < 1e-12);
    const double none[2] = {-INFINITY, -INFINITY};
    assert_true(isnan(tg_ess_from_logw(none, 2)));
    /* standard error of the log of the mean: 0 for equal weights; one of
     * four weights: sqrt((4 - 1) / 3) = 1 */
    assert_true(tg_iw_log_se(4.0, 4) == 0.0);
    assert_true(fabs(tg_iw_log_se(1.0, 4) - 1.0) < 1e-12);
    /* weights 1 and 3: mean 2, sample sd sqrt(2), se of the mean 1: 1/2 */
    assert_true(fabs(tg_iw_log_se(1.6, 2) - 0.5) < 1e-12);
    assert_true(isnan(tg_iw_log_se(1.0, 1)));
    /* an ess above k is no k weights' (it gave 0, a perfect estimate);
     * rounding of k equal weights just above k still gives 0 */
    assert_true(isnan(tg_iw_log_se(5.0, 4)));
    assert_true(isnan(tg_iw_log_se(INFINITY, 4)));
    assert_true(tg_iw_log_se(4.0 * (1.0 + 1e-15), 4) == 0.0);
}

/* A NaN, a negative, an Inf or a sum far from 1 in any row is refused,
 * naming the row: a NaN gave a finite ECE, NLL and accuracy, and a finite
 * decomposition whose parts did not add up. */
static float bad_rows[2 * 3] = {0.2f, 0.3f, 0.5f, 0.3f, 0.4f, 0.3f};
static int bad_labels[2] = {2, 1};
static void ece_of_bad(void)
{
    tg_metric_ece(bad_rows, bad_labels, 2, 3, 15, NULL);
}
static void nll_of_bad(void) { tg_metric_nll(bad_rows, bad_labels, 2, 3); }
static void coverage_of_bad(void)
{
    tg_metric_accuracy_at_coverage(bad_rows, bad_labels, 2, 3, 0.5);
}
static void predictive_of_bad(void)
{
    float samples[2 * 2 * 3]; /* S = 2 samples of the two rows */
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 6; k++)
            samples[s * 6 + k] = s == 0 ? 1.0f / 3 : bad_rows[k];
    tg_uncertainty u[2];
    tg_predictive(samples, 2, 2, 3, NULL, u);
}

static void brier_of_label_c(void)
{
    const int three[2] = {0, 3}; /* C = 3: 3 is one past the last class */
    tg_metric_brier(bad_rows, three, 2, 3);
}

static void non_distributions_refused(void **state)
{
    (void)state;
    bad_rows[4] = NAN;
    expect_abort(ece_of_bad, "metric_ece", "row 1", "p[1] = nan");
    expect_abort(nll_of_bad, "metric_nll", "row 1");
    expect_abort(coverage_of_bad, "metric_accuracy_at_coverage", "row 1");
    /* the bad row is in the second sample */
    expect_abort(predictive_of_bad, "predictive", "sample 1, row 1",
                 "p[1] = nan");
    bad_rows[4] = -0.1f;
    expect_abort(ece_of_bad, "metric_ece", "p[1] = -0.1");
    bad_rows[4] = INFINITY;
    expect_abort(nll_of_bad, "metric_nll", "p[1] = inf");
    bad_rows[4] = 0.6f; /* row 1 sums to 1.2 */
    expect_abort(ece_of_bad, "metric_ece", "row 1", "sum to 1.2");
    /* two bad entries: the first is named */
    bad_rows[3] = NAN;
    bad_rows[5] = -1.0f;
    expect_abort(ece_of_bad, "metric_ece", "row 1", "p[0] = nan");
    bad_rows[3] = 0.3f;
    bad_rows[5] = 0.3f;
    bad_rows[4] = 0.4f; /* a distribution again: fine */
    expect_abort(brier_of_label_c, "metric_brier", "label 3 of row 1",
                 "outside 0..2");
    assert_true(tg_metric_nll(bad_rows, bad_labels, 2, 3) > 0.0);
}

/* More than INT_MAX scores in all: the merged list was indexed in int
 * (r[n_neg + i] wrapped to before the list). Refused before a score is
 * read, so a few doubles stand for the lists. */
static const double few_scores[4] = {0.1, 0.2, 0.3, 0.4};
static void auroc_past_int(void)
{
    tg_auroc(few_scores, INT_MAX - 1, few_scores, 2);
}
static void aupr_past_int(void) { tg_aupr(few_scores, 2, few_scores, INT_MAX); }
static void bootstrap_past_int(void)
{
    double lo, hi;
    tg_auroc_bootstrap(few_scores, INT_MAX, few_scores, INT_MAX, 10, 1, 0.9,
                       &lo, &hi);
}

static void score_counts_past_int_refused(void **state)
{
    (void)state;
    expect_abort(auroc_past_int, "auroc:", "2147483646 negatives",
                 "2 positives", "more than 2147483647 scores");
    expect_abort(aupr_past_int, "aupr:", "2147483647 positives",
                 "more than 2147483647 scores");
    expect_abort(bootstrap_past_int,
                 "auroc_bootstrap:", "more than 2147483647 scores");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ece_by_hand),
        cmocka_unit_test(brier_nll_accuracy_by_hand),
        cmocka_unit_test(accuracy_at_coverage_by_hand),
        cmocka_unit_test(auroc_by_hand),
        cmocka_unit_test(decomposition_by_hand),
        cmocka_unit_test(mutual_information_zero_and_nonnegative),
        cmocka_unit_test(fpr_at_tpr_by_hand),
        cmocka_unit_test(aupr_by_hand),
        cmocka_unit_test(auroc_bootstrap_by_hand),
        cmocka_unit_test(score_counts_past_int_refused),
        cmocka_unit_test(ess_by_hand),
        cmocka_unit_test(non_distributions_refused),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}

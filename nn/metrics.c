/* Metrics of a classifier's predictive distribution, usable on any model's
 * outputs: calibration (ECE, reliability bins), Brier score, NLL, AUROC,
 * the entropy decomposition of S sampled predictions, and accuracy at a
 * coverage. Everything is computed in double, serially, in index order:
 * the same inputs give the same bits on any thread count. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"

/* Each of the rows of probs a distribution: every entry finite in [0, 1],
 * the sum within TG_PROB_SUM_TOL of 1 (a NaN entry gave a finite ECE,
 * NLL and accuracy, and a finite, inconsistent entropy decomposition). */
static void check_rows(const char *op, const float *probs, size_t rows, int C,
                       int per_sample)
{
    char where[64];
    for (size_t i = 0; i < rows; i++) {
        const float *p = probs + i * (size_t)C;
        double sum = 0.0;
        int bad = -1;
        for (int k = 0; k < C; k++) {
            if (!(p[k] >= 0.0f && p[k] <= 1.0f) && bad < 0)
                bad = k;
            sum += p[k];
        }
        if (per_sample) /* samples [S, n, C]: sample s, row r */
            snprintf(where, sizeof where, "sample %zu, row %zu",
                     i / (size_t)per_sample, i % (size_t)per_sample);
        else
            snprintf(where, sizeof where, "row %zu", i);
        if (bad >= 0)
            tg_fatal(op,
                     "%s is not a distribution: p[%d] = %g (each "
                     "probability must be finite, in [0, 1])",
                     where, bad, (double)p[bad]);
        if (!(fabs(sum - 1.0) <= TG_PROB_SUM_TOL))
            tg_fatal(op,
                     "%s is not a distribution: its probabilities sum "
                     "to %.9g, not 1",
                     where, sum);
    }
}

/* labels may be NULL only where need_labels is false; S > 0: probs holds
 * S samples of the n rows. */
static void check(const char *op, const float *probs, const int *labels,
                  bool need_labels, int n, int C, int S)
{
    if (!probs || (need_labels && !labels))
        tg_fatal(op, "NULL %s", probs ? "labels" : "probs");
    if (n < 1 || C < 2)
        tg_fatal(op, "need n >= 1 and C >= 2 (n = %d, C = %d)", n, C);
    check_rows(op, probs, (size_t)n * (size_t)(S > 0 ? S : 1), C,
               S > 0 ? n : 0);
    if (labels)
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= C)
                tg_fatal(op, "label %d of row %d outside 0..%d", labels[i], i,
                         C - 1);
}

/* The predicted class: the first of the largest probabilities. */
static int argmax(const float *p, int C)
{
    int best = 0;
    for (int k = 1; k < C; k++)
        if (p[k] > p[best])
            best = k;
    return best;
}

double tg_metric_ece(const float *probs, const int *labels, int n, int C,
                     int bins, tg_reliability_bin *out)
{
    check("metric_ece", probs, labels, true, n, C, 0);
    if (bins < 1 || bins > TG_ECE_MAX_BINS)
        tg_fatal("metric_ece", "bins %d outside 1..%d", bins, TG_ECE_MAX_BINS);
    double conf[TG_ECE_MAX_BINS] = {0}, acc[TG_ECE_MAX_BINS] = {0};
    int count[TG_ECE_MAX_BINS] = {0};
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * C;
        int k = argmax(p, C);
        double c = p[k];
        /* bin b holds (b/bins, (b+1)/bins]; a confidence of 0 goes in bin 0 */
        int b = (int)ceil(c * bins) - 1;
        b = b < 0 ? 0 : b >= bins ? bins - 1 : b;
        conf[b] += c;
        acc[b] += k == labels[i];
        count[b]++;
    }
    double ece = 0.0;
    for (int b = 0; b < bins; b++) {
        if (out)
            out[b] = (tg_reliability_bin){
                .lo = (double)b / bins,
                .hi = (double)(b + 1) / bins,
                .count = count[b],
                .confidence = count[b] ? conf[b] / count[b] : NAN,
                .accuracy = count[b] ? acc[b] / count[b] : NAN};
        if (count[b])
            ece += fabs(acc[b] - conf[b]) / n;
    }
    return ece;
}

double tg_metric_brier(const float *probs, const int *labels, int n, int C)
{
    check("metric_brier", probs, labels, true, n, C, 0);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * C;
        for (int k = 0; k < C; k++) {
            double d = (double)p[k] - (k == labels[i]);
            sum += d * d;
        }
    }
    return sum / n;
}

double tg_metric_nll(const float *probs, const int *labels, int n, int C)
{
    check("metric_nll", probs, labels, true, n, C, 0);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double p = probs[(size_t)i * C + labels[i]];
        sum -= log(p > TG_PROB_FLOOR ? p : TG_PROB_FLOOR);
    }
    return sum / n;
}

double tg_metric_accuracy(const float *probs, const int *labels, int n, int C)
{
    check("metric_accuracy", probs, labels, true, n, C, 0);
    int correct = 0;
    for (int i = 0; i < n; i++)
        correct += argmax(probs + (size_t)i * C, C) == labels[i];
    return (double)correct / n;
}

/* ---- accuracy at coverage ------------------------------------------------ */

typedef struct scored {
    double conf;
    int index;
} scored;

/* Most confident first; equal confidences in index order (deterministic). */
static int by_conf_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->conf != y->conf)
        return x->conf < y->conf ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

double tg_metric_accuracy_at_coverage(const float *probs, const int *labels,
                                      int n, int C, double coverage)
{
    check("metric_accuracy_at_coverage", probs, labels, true, n, C, 0);
    if (!(coverage > 0.0 && coverage <= 1.0))
        tg_fatal("metric_accuracy_at_coverage", "coverage %g outside (0, 1]",
                 coverage);
    scored *s = malloc(sizeof *s * (size_t)n);
    if (!s)
        tg_out_of_memory("metric_accuracy_at_coverage",
                         "out of memory (%d rows)", n);
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * C;
        s[i] = (scored){p[argmax(p, C)], i};
    }
    qsort(s, (size_t)n, sizeof *s, by_conf_desc);
    int keep = (int)ceil(coverage * n - 1e-9);
    keep = keep < 1 ? 1 : keep;
    int correct = 0;
    for (int r = 0; r < keep; r++) {
        int i = s[r].index;
        correct += argmax(probs + (size_t)i * C, C) == labels[i];
    }
    free(s);
    return (double)correct / keep;
}

/* ---- the predictive distribution from S samples -------------------------- */

static double entropy(const double *p, int C)
{
    double h = 0.0;
    for (int k = 0; k < C; k++)
        if (p[k] > 0.0)
            h -= p[k] * log(p[k]);
    return h;
}

void tg_predictive(const float *samples, int S, int n, int C, float *mean,
                   tg_uncertainty *u)
{
    if (S < 1)
        tg_fatal("predictive", "need S >= 1 samples (S = %d)", S);
    check("predictive", samples, NULL, false, n, C, S);
    double *pbar = malloc(sizeof *pbar * (size_t)C);
    double *ps = malloc(sizeof *ps * (size_t)C);
    if (!pbar || !ps)
        tg_out_of_memory("predictive", "out of memory (C = %d)", C);
    size_t plane = (size_t)n * C;
    for (int i = 0; i < n; i++) {
        /* S copies of one float sum exactly in double for S < 2^29 (24 +
         * 29 bits), and S f / S is f: identical samples give pbar equal to
         * each of them and zero information. */
        for (int k = 0; k < C; k++) {
            double sum = 0.0;
            for (int s = 0; s < S; s++)
                sum += samples[s * plane + (size_t)i * C + k];
            pbar[k] = sum / S;
            if (mean)
                mean[(size_t)i * C + k] = (float)pbar[k];
        }
        if (!u)
            continue;
        double aleatoric = 0.0, mi = 0.0;
        for (int s = 0; s < S; s++) {
            for (int k = 0; k < C; k++)
                ps[k] = samples[s * plane + (size_t)i * C + k];
            aleatoric += entropy(ps, C);
            /* MI = mean_s KL(p_s || pbar): the same quantity as
             * H(pbar) - mean_s H(p_s), but exactly 0 when p_s == pbar. */
            for (int k = 0; k < C; k++)
                if (ps[k] > 0.0)
                    mi += ps[k] * (log(ps[k]) - log(pbar[k]));
        }
        u[i].total = entropy(pbar, C);
        u[i].aleatoric = aleatoric / S;
        u[i].epistemic = mi > 0.0 ? mi / S : 0.0;
    }
    free(pbar);
    free(ps);
}

/* ---- AUROC ------------------------------------------------------------- */

typedef struct ranked {
    double v;
    int pos; /* 1 for the positive list */
} ranked;

static int by_value(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return (x > y) - (x < y);
}

/* Both score lists given (their lengths are checked by each caller), and
 * at most INT_MAX scores in all: the merged list is indexed, and a score's
 * place kept, in int (n_neg + i wrapped, writing before the list). */
static void need_lists(const char *op, const double *neg, int n_neg,
                       const double *pos, int n_pos)
{
    if (!neg || !pos)
        tg_fatal(op, "NULL %s", neg ? "pos" : "neg");
    if ((long long)n_neg + n_pos > INT_MAX)
        tg_fatal(op,
                 "%d negatives and %d positives: more than %d scores in all",
                 n_neg, n_pos, INT_MAX);
}

/* neg and pos (need_lists checked) in one list sorted by score, each
 * marked with its list; NULL when a score is NaN. The caller frees it. */
static ranked *merged_sorted(const char *op, const double *neg, int n_neg,
                             const double *pos, int n_pos)
{
    size_t n = (size_t)n_neg + (size_t)n_pos;
    ranked *r = malloc(sizeof *r * n);
    if (!r)
        tg_out_of_memory(op, "out of memory (%zu scores)", n);
    for (int i = 0; i < n_neg; i++)
        r[i] = (ranked){neg[i], 0};
    for (int i = 0; i < n_pos; i++)
        r[n_neg + i] = (ranked){pos[i], 1};
    for (size_t i = 0; i < n; i++)
        if (isnan(r[i].v)) {
            free(r);
            return NULL;
        }
    qsort(r, n, sizeof *r, by_value);
    return r;
}

/* Mann-Whitney: AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
 * R_pos the sum of the positives' ranks (1-based, ties get their mean). */
double tg_auroc(const double *neg, int n_neg, const double *pos, int n_pos)
{
    if (n_neg < 1 || n_pos < 1)
        tg_fatal("auroc", "need two non-empty lists (%d, %d)", n_neg, n_pos);
    need_lists("auroc", neg, n_neg, pos, n_pos);
    size_t n = (size_t)n_neg + (size_t)n_pos;
    ranked *r = merged_sorted("auroc", neg, n_neg, pos, n_pos);
    if (!r)
        return NAN;
    double rank_sum = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && r[j].v == r[i].v)
            j++;
        double mid = 0.5 * (double)(i + 1 + j); /* mean of ranks i+1 .. j */
        for (size_t t = i; t < j; t++)
            if (r[t].pos)
                rank_sum += mid;
        i = j;
    }
    free(r);
    return (rank_sum - 0.5 * n_pos * ((double)n_pos + 1)) /
           ((double)n_pos * n_neg);
}

/* ---- out-of-distribution detection ------------------------------------- */

static int desc_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* A copy of v sorted from the highest; NULL when a value is NaN. */
static double *sorted_desc(const char *op, const double *v, int n)
{
    double *s = malloc(sizeof *s * (size_t)n);
    if (!s)
        tg_out_of_memory(op, "out of memory (%d scores)", n);
    for (int i = 0; i < n; i++) {
        if (isnan(v[i])) {
            free(s);
            return NULL;
        }
        s[i] = v[i];
    }
    qsort(s, (size_t)n, sizeof *s, desc_double);
    return s;
}

double tg_fpr_at_tpr(const double *neg, int n_neg, const double *pos, int n_pos,
                     double tpr)
{
    if (n_neg < 1 || n_pos < 1 || !(tpr > 0.0 && tpr <= 1.0))
        tg_fatal("fpr_at_tpr",
                 "need two non-empty lists and tpr in (0, 1] "
                 "(%d, %d, %g)",
                 n_neg, n_pos, tpr);
    need_lists("fpr_at_tpr", neg, 0, pos, 0); /* each list alone */
    double *p = sorted_desc("fpr_at_tpr", pos, n_pos);
    if (!p)
        return NAN;
    /* the fewest positives at or above the threshold: ceil(tpr n_pos), with
     * a little slack so 0.95 * 20 is 19, not 20 */
    int m = (int)ceil(tpr * n_pos - 1e-9);
    m = m < 1 ? 1 : m > n_pos ? n_pos : m;
    double t = p[m - 1];
    free(p);
    int fp = 0;
    for (int i = 0; i < n_neg; i++) {
        if (isnan(neg[i]))
            return NAN;
        fp += neg[i] >= t;
    }
    return (double)fp / n_neg;
}

double tg_aupr(const double *neg, int n_neg, const double *pos, int n_pos)
{
    if (n_neg < 1 || n_pos < 1)
        tg_fatal("aupr", "need two non-empty lists (%d, %d)", n_neg, n_pos);
    need_lists("aupr", neg, n_neg, pos, n_pos);
    size_t n = (size_t)n_neg + (size_t)n_pos;
    ranked *r = merged_sorted("aupr", neg, n_neg, pos, n_pos);
    if (!r)
        return NAN;
    /* from the highest score down, one threshold per group of equal
     * scores: AP = sum over groups of (positives in it / n_pos) * precision
     * at that threshold */
    double ap = 0.0;
    size_t tp = 0, taken = 0;
    for (size_t j = n; j > 0;) {
        size_t i = j;
        while (i > 0 && r[i - 1].v == r[j - 1].v)
            i--;
        size_t gp = 0;
        for (size_t t = i; t < j; t++)
            gp += (size_t)r[t].pos;
        tp += gp;
        taken += j - i;
        ap += (double)gp / n_pos * ((double)tp / (double)taken);
        j = i;
    }
    free(r);
    return ap;
}

/* One score in the merged list: its value, 1 for a positive, its input. */
typedef struct slot {
    double v;
    int pos, src;
} slot;

static int slot_by_value(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    if (x->v != y->v)
        return (x->v > y->v) - (x->v < y->v);
    return (x->src > y->src) - (x->src < y->src); /* deterministic order */
}

/* AUROC of the merged sorted scores, slot s counted w[s] times. */
static double weighted_auroc(const slot *r, size_t n, const int *w)
{
    double below = 0.0, sum = 0.0, wn = 0.0, wp = 0.0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        double gn = 0.0, gp = 0.0;
        while (j < n && r[j].v == r[i].v) {
            if (r[j].pos)
                gp += w[j];
            else
                gn += w[j];
            j++;
        }
        sum += gp * (below + 0.5 * gn);
        below += gn;
        wn += gn;
        wp += gp;
        i = j;
    }
    return sum / (wn * wp);
}

static int asc_double(const void *a, const void *b)
{
    return desc_double(b, a);
}

void tg_auroc_bootstrap(const double *neg, int n_neg, const double *pos,
                        int n_pos, int resamples, uint64_t seed, double level,
                        double *lo, double *hi)
{
    if (n_neg < 1 || n_pos < 1 || resamples < 2 || !(level > 0 && level < 1))
        tg_fatal("auroc_bootstrap",
                 "need two non-empty lists, resamples >= 2 and level in "
                 "(0, 1) (%d, %d, %d, %g)",
                 n_neg, n_pos, resamples, level);
    need_lists("auroc_bootstrap", neg, n_neg, pos, n_pos);
    if (!lo || !hi)
        tg_fatal("auroc_bootstrap", "NULL %s", !lo ? "lo" : "hi");
    size_t n = (size_t)n_neg + (size_t)n_pos;
    for (size_t i = 0; i < n; i++)
        if (isnan(i < (size_t)n_neg ? neg[i] : pos[i - n_neg])) {
            *lo = *hi = NAN;
            return;
        }
    slot *r = malloc(sizeof *r * n);
    int *w = malloc(sizeof *w * n), *where = malloc(sizeof *where * n);
    double *auc = malloc(sizeof *auc * (size_t)resamples);
    if (!r || !w || !where || !auc)
        tg_out_of_memory("auroc_bootstrap", "out of memory (%zu scores)", n);
    for (int i = 0; i < n_neg; i++)
        r[i] = (slot){neg[i], 0, i};
    for (int i = 0; i < n_pos; i++)
        r[n_neg + i] = (slot){pos[i], 1, n_neg + i};
    /* sort once; a resample is then a multiplicity per sorted slot
     * (stratified: n_neg draws among the negatives, n_pos among the
     * positives, with replacement), O(n) each */
    qsort(r, n, sizeof *r, slot_by_value);
    for (size_t s = 0; s < n; s++)
        where[r[s].src] = (int)s;
    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    for (int b = 0; b < resamples; b++) {
        memset(w, 0, sizeof *w * n);
        for (int i = 0; i < n_neg; i++)
            w[where[tg_rng_below(&rng, (uint32_t)n_neg)]]++;
        for (int i = 0; i < n_pos; i++)
            w[where[n_neg + (int)tg_rng_below(&rng, (uint32_t)n_pos)]]++;
        auc[b] = weighted_auroc(r, n, w);
    }
    qsort(auc, (size_t)resamples, sizeof *auc, asc_double);
    /* percentile interval: the floor(a B)-th and ceil((1 - a) B)-th of the
     * B sorted values (0-based 25 and 974 for B = 1000, level 0.95) */
    double a = 0.5 * (1.0 - level);
    int il = (int)floor(a * resamples + 1e-9);
    int ih = (int)ceil((1.0 - a) * resamples - 1e-9) - 1;
    il = il < 0 ? 0 : il >= resamples ? resamples - 1 : il;
    ih = ih < il ? il : ih >= resamples ? resamples - 1 : ih;
    *lo = auc[il];
    *hi = auc[ih];
    free(r);
    free(w);
    free(where);
    free(auc);
}

/* ---- importance weights ------------------------------------------------ */

double tg_ess_from_logw(const double *logw, int k)
{
    if (k < 1)
        tg_fatal("ess_from_logw", "need k >= 1, got %d", k);
    if (!logw)
        tg_fatal("ess_from_logw", "NULL logw");
    double max = -INFINITY;
    for (int i = 0; i < k; i++) {
        if (isnan(logw[i]) || logw[i] == INFINITY)
            return NAN;
        if (logw[i] > max)
            max = logw[i];
    }
    if (max == -INFINITY)
        return NAN; /* every weight is 0 */
    /* (sum w)^2 / sum w^2 with w scaled by e^-max: the largest is 1 */
    double s1 = 0.0, s2 = 0.0;
    for (int i = 0; i < k; i++) {
        double w = exp(logw[i] - max);
        s1 += w;
        s2 += w * w;
    }
    return s1 * s1 / s2;
}

double tg_iw_log_se(double ess, int k)
{
    /* an ess above k (beyond the rounding of k equal weights) comes from
     * no set of k weights: NaN, not a standard error of 0 */
    if (k < 2 || !(ess >= 1.0) || ess > k * (1.0 + 1e-9))
        return NAN;
    double v = ((double)k / ess - 1.0) / (k - 1);
    return sqrt(v > 0.0 ? v : 0.0);
}

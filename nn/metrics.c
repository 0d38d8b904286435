/* Metrics of a classifier's predictive distribution, usable on any model's
 * outputs: calibration (ECE, reliability bins), Brier score, NLL, AUROC,
 * the entropy decomposition of S sampled predictions, and accuracy at a
 * coverage. Everything is computed in double, serially, in index order:
 * the same inputs give the same bits on any thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tg_nn.h"

/* labels may be NULL only where need_labels is false. */
static void check(const char *op, const float *probs, const int *labels,
                  bool need_labels, int n, int C)
{
    if (!probs || (need_labels && !labels))
        tg_fatal(op, "NULL %s", probs ? "labels" : "probs");
    if (n < 1 || C < 2)
        tg_fatal(op, "need n >= 1 and C >= 2 (n = %d, C = %d)", n, C);
    if (labels)
        for (int i = 0; i < n; i++)
            if (labels[i] < 0 || labels[i] >= C)
                tg_fatal(op, "label %d of row %d outside 0..%d", labels[i], i,
                         C - 1);
}

/* The predicted class (first of the largest) and its probability. */
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
    check("metric_ece", probs, labels, true, n, C);
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
    check("metric_brier", probs, labels, true, n, C);
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
    check("metric_nll", probs, labels, true, n, C);
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        double p = probs[(size_t)i * C + labels[i]];
        sum -= log(p > TG_PROB_FLOOR ? p : TG_PROB_FLOOR);
    }
    return sum / n;
}

double tg_metric_accuracy(const float *probs, const int *labels, int n, int C)
{
    check("metric_accuracy", probs, labels, true, n, C);
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
    check("metric_accuracy_at_coverage", probs, labels, true, n, C);
    if (!(coverage > 0.0 && coverage <= 1.0))
        tg_fatal("metric_accuracy_at_coverage", "coverage %g outside (0, 1]",
                 coverage);
    scored *s = malloc(sizeof *s * (size_t)n);
    if (!s)
        tg_fatal("metric_accuracy_at_coverage", "out of memory (%d rows)", n);
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
    check("predictive", samples, NULL, false, n, C);
    if (S < 1)
        tg_fatal("predictive", "need S >= 1 samples (S = %d)", S);
    double *pbar = malloc(sizeof *pbar * (size_t)C);
    double *ps = malloc(sizeof *ps * (size_t)C);
    if (!pbar || !ps)
        tg_fatal("predictive", "out of memory (C = %d)", C);
    size_t plane = (size_t)n * C;
    for (int i = 0; i < n; i++) {
        /* A sum of S floats in double is exact for S < 2^29, so identical
         * samples give pbar equal to each of them and zero information. */
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

/* Mann-Whitney: AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg),
 * R_pos the sum of the positives' ranks (1-based, ties get their mean). */
double tg_auroc(const double *neg, int n_neg, const double *pos, int n_pos)
{
    if (n_neg < 1 || n_pos < 1)
        tg_fatal("auroc", "need two non-empty lists (%d, %d)", n_neg, n_pos);
    size_t n = (size_t)n_neg + (size_t)n_pos;
    ranked *r = malloc(sizeof *r * n);
    if (!r)
        tg_fatal("auroc", "out of memory (%zu scores)", n);
    for (int i = 0; i < n_neg; i++)
        r[i] = (ranked){neg[i], 0};
    for (int i = 0; i < n_pos; i++)
        r[n_neg + i] = (ranked){pos[i], 1};
    for (size_t i = 0; i < n; i++)
        if (isnan(r[i].v)) {
            free(r);
            return NAN;
        }
    qsort(r, n, sizeof *r, by_value);
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

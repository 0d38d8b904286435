/* Scoring inputs with a trained VAE: importance-weighted log p(x), ELBO,
 * complexity, typicality, posterior pixel spread (AUROC is in nn/metrics.c).
 * See tg_vae_score.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "tg_config.h"
#include "tg_vae_score.h"
#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif
#ifdef TG_HAVE_ZLIB
#include <zlib.h>
#endif

enum { DEFAULT_ROWS = 512, ENCODE_BATCH = 256 };

double tg_log_mean_exp(const double *a, int n)
{
    if (n < 1)
        tg_fatal("log_mean_exp", "need n >= 1, got %d", n);
    double max = a[0];
    for (int i = 1; i < n; i++)
        if (a[i] > max || isnan(a[i]))
            max = a[i];
    if (isnan(max) || isinf(max))
        return max; /* NaN, +inf, or every term -inf */
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp(a[i] - max); /* each term in (0, 1], one of them 1 */
    return max + log(sum / n);
}

/* A log-sum-exp accumulated one value at a time: sum exp(a) = sum * e^max,
 * rescaled when a new maximum arrives so no exp() overflows. */
typedef struct lse {
    double max, sum;
} lse;

static void lse_add(lse *s, double a)
{
    if (a == -INFINITY)
        return;
    if (a > s->max || isnan(a)) {
        s->sum = s->sum * exp(s->max - a) + 1.0;
        s->max = a;
    } else {
        s->sum += exp(a - s->max);
    }
}

static void check_opts(const char *op, const tg_iw_opts *o)
{
    if (!o || o->k < 1 || o->max_rows < 0)
        tg_fatal(op, "need k >= 1 and max_rows >= 0 (k=%d, max_rows=%d)",
                 o ? o->k : 0, o ? o->max_rows : 0);
}

/* Groups of g examples, chunks of kc draws: g * kc <= max_rows rows of z. */
static void chunking(int n, int k, int max_rows, int *g, int *kc)
{
    int rows = max_rows > 0 ? max_rows : DEFAULT_ROWS;
    *kc = k < rows ? k : rows;
    *g = rows / *kc;
    if (*g > n)
        *g = n;
}

/* One estimate: its inputs, and where each group's results go. */
typedef struct iw_job {
    tg_loglik_fn loglik;
    void *ctx;
    int input, latent, n, g, kc;
    const float *x, *mean, *logvar;
    const tg_iw_opts *opts;
    double *log_px, *elbo;
} iw_job;

/* Per-example accumulators of one group of g examples. */
typedef struct iw_acc {
    tg_rng *rng;
    lse *sum, *sum2; /* log-sum-exp of log w and of 2 log w */
    double *sum_logw;
} iw_acc;

static void acc_alloc(iw_acc *a, int g)
{
    a->rng = malloc(sizeof *a->rng * (size_t)g);
    a->sum = malloc(sizeof *a->sum * (size_t)g);
    a->sum2 = malloc(sizeof *a->sum2 * (size_t)g);
    a->sum_logw = malloc(sizeof *a->sum_logw * (size_t)g);
    if (!a->rng || !a->sum || !a->sum2 || !a->sum_logw)
        tg_out_of_memory("iw_estimate", "out of memory (%d examples)", g);
}

static void acc_free(iw_acc *a)
{
    free(a->rng);
    free(a->sum);
    free(a->sum2);
    free(a->sum_logw);
}

/* Examples i0 .. i0 + ng - 1 on the tape tp. Everything an example's
 * result depends on (its rng stream, the group and chunk sizes) is fixed by
 * the job, not by which thread runs the group. */
static void iw_group(tg_tape *tp, const iw_job *jb, int i0, int ng, iw_acc *a)
{
    const tg_iw_opts *opts = jb->opts;
    int latent = jb->latent, kc = jb->kc;
    for (int i = 0; i < ng; i++) {
        tg_rng_seed(&a->rng[i], opts->seed, opts->stream + (uint64_t)(i0 + i));
        a->sum[i] = (lse){-INFINITY, 0.0};
        a->sum2[i] = (lse){-INFINITY, 0.0};
        a->sum_logw[i] = 0.0;
    }
    for (int j0 = 0, nk; j0 < opts->k; j0 += nk) { /* j0 + kc may wrap */
        nk = opts->k - j0 < kc ? opts->k - j0 : kc;
        int rows = ng * nk;
        tg_tape_reset(tp);
        tg_tensor *z = tg_tape_tensor2(tp, rows, latent, false);
        double *logw = tg_tape_alloc(tp, sizeof(double) * (size_t)rows);
        /* z = mean + exp(logvar / 2) * eps, and
         * log p(z) - log q(z|x) = sum_d 0.5 * (eps^2 - z^2 + logvar)
         * (the log 2 pi terms cancel). */
        float *sd = tg_tape_alloc(tp, sizeof(float) * (size_t)latent);
        for (int i = 0; i < ng; i++) {
            const float *m = jb->mean + (size_t)(i0 + i) * latent;
            const float *lv = jb->logvar + (size_t)(i0 + i) * latent;
            for (int d = 0; d < latent; d++) /* once, not once per draw */
                sd[d] = expf(0.5f * lv[d]);
            for (int j = 0; j < nk; j++) {
                float *zr = z->data + (size_t)(i * nk + j) * latent;
                double prior_minus_q = 0.0;
                for (int d = 0; d < latent; d++) {
                    float eps = tg_rng_normal(&a->rng[i]);
                    zr[d] = m[d] + sd[d] * eps;
                    prior_minus_q += 0.5 * ((double)eps * eps -
                                            (double)zr[d] * zr[d] + lv[d]);
                }
                logw[i * nk + j] = prior_minus_q;
            }
        }
        double *ll = tg_tape_alloc(tp, sizeof(double) * (size_t)rows);
        jb->loglik(tp, jb->ctx, jb->x + (size_t)i0 * jb->input, ng, nk, z, ll);
        for (int r = 0; r < rows; r++) {
            double lw = ll[r] + logw[r];
            lse_add(&a->sum[r / nk], lw);
            lse_add(&a->sum2[r / nk], 2.0 * lw);
            a->sum_logw[r / nk] += lw;
        }
    }
    for (int i = 0; i < ng; i++) {
        const lse *s1 = &a->sum[i], *s2 = &a->sum2[i];
        if (jb->log_px)
            jb->log_px[i0 + i] = s1->max + log(s1->sum) - log((double)opts->k);
        if (jb->elbo)
            jb->elbo[i0 + i] = a->sum_logw[i] / opts->k;
        /* ESS = (sum w)^2 / sum w^2 = exp(2 lse(log w) - lse(2 log w)) */
        if (opts->ess)
            opts->ess[i0 + i] =
                exp(2.0 * (s1->max + log(s1->sum)) - (s2->max + log(s2->sum)));
    }
}

static iw_job make_job(tg_loglik_fn loglik, void *ctx, int input,
                       const float *x, int n, int latent, const float *mean,
                       const float *logvar, const tg_iw_opts *opts,
                       double *log_px, double *elbo)
{
    check_opts("iw_estimate", opts);
    if (n < 0 || latent <= 0 || input <= 0)
        tg_fatal("iw_estimate", "bad sizes n=%d latent=%d input=%d", n, latent,
                 input);
    iw_job jb = {loglik, ctx,  input,  latent, n,      0,   0,
                 x,      mean, logvar, opts,   log_px, elbo};
    chunking(n, opts->k, opts->max_rows, &jb.g, &jb.kc);
    return jb;
}

/* The groups of a job one after another on tape tp (a caller's loglik may
 * not be safe to run concurrently: tg_iw_estimate keeps to one tape). */
static void iw_serial(tg_tape *tp, const iw_job *jb)
{
    iw_acc a;
    acc_alloc(&a, jb->g);
    for (int i0 = 0, ng; i0 < jb->n; i0 += ng) { /* i0 + g may wrap */
        ng = jb->n - i0 < jb->g ? jb->n - i0 : jb->g;
        iw_group(tp, jb, i0, ng, &a);
    }
    acc_free(&a);
}

void tg_iw_estimate(tg_tape *tp, tg_loglik_fn loglik, void *ctx, int input,
                    const float *x, int n, int latent, const float *mean,
                    const float *logvar, const tg_iw_opts *opts, double *log_px,
                    double *elbo)
{
    iw_job jb = make_job(loglik, ctx, input, x, n, latent, mean, logvar, opts,
                         log_px, elbo);
    if (n == 0) /* nothing to score, as tg_vae_iwae with n = 0 */
        return;
    bool was = tg_tape_set_recording(tp, false);
    iw_serial(tp, &jb);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
}

/* ---- the VAE ------------------------------------------------------------ */

/* log p(x|z) = -tg_vae_rec (the model's likelihood: for the continuous
 * Bernoulli a density on [0, 1]^input), each example's x repeated for its
 * kc draws so one dense pass decodes the whole chunk. */
static void vae_loglik(tg_tape *tp, void *ctx, const float *x, int n, int kc,
                       const tg_tensor *z, double *out)
{
    const tg_vae *vae = ctx;
    int input = vae->cfg.input;
    tg_tensor *xr = tg_tape_tensor2(tp, n * kc, input, false);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < kc; j++)
            memcpy(xr->data + (size_t)(i * kc + j) * input,
                   x + (size_t)i * input, sizeof(float) * (size_t)input);
    tg_tensor *logits = tg_vae_decode_logits(tp, vae, (tg_tensor *)z);
    tg_tensor *rec = tg_vae_rec(tp, vae, logits, xr);
    for (int r = 0; r < n * kc; r++)
        out[r] = -(double)rec->data[r];
}

/* mean, logvar [n, latent] of q(z|x) into caller memory. */
static void encode_rows(tg_tape *tp, const tg_vae *vae, const float *x, int n,
                        float *mean, float *logvar)
{
    int input = vae->cfg.input, latent = vae->cfg.latent;
    tg_tape_reset(tp);
    tg_tensor *xt = tg_tape_tensor2(tp, n, input, false);
    memcpy(xt->data, x, sizeof(float) * (size_t)n * input);
    tg_tensor *m, *lv;
    tg_vae_encode(tp, vae, xt, &m, &lv);
    memcpy(mean, m->data, sizeof(float) * (size_t)n * latent);
    memcpy(logvar, lv->data, sizeof(float) * (size_t)n * latent);
    tg_tape_reset(tp);
}

/* Each encoder batch's groups of examples are spread over the library's
 * threads, a tape each, so the decoder's GEMMs and the BCE run on one
 * thread with no barrier per op (k = 5000 on 2 cores: libgomp's waiting
 * fell from 7% to 1% of the time). Threads take groups as they finish, so
 * a core another program occupies takes fewer; an example's result does
 * not depend on which thread ran it (its rng stream and chunk sizes are
 * the job's, and the GEMM gives the same bits on any thread count). */
void tg_vae_iwae(tg_tape *tp, const tg_vae *vae, const float *x, int n,
                 const tg_iw_opts *opts, double *log_px, double *elbo)
{
    if (!vae)
        tg_fatal("vae_iwae", "NULL model");
    check_opts("vae_iwae", opts);
    int input = vae->cfg.input, latent = vae->cfg.latent;
    float *mean = malloc(sizeof(float) * ENCODE_BATCH * (size_t)latent);
    float *logvar = malloc(sizeof(float) * ENCODE_BATCH * (size_t)latent);
    int T = 1;
#ifdef TG_HAVE_OPENMP
    if (!omp_in_parallel())
        T = tg_par_threads();
#endif
    tg_tape **tapes = calloc((size_t)T, sizeof *tapes);
    if (!mean || !logvar || !tapes)
        tg_out_of_memory("vae_iwae", "out of memory");
    bool was = tg_tape_set_recording(tp, false);
    tapes[0] = tp;
    for (int t = 1; t < T; t++) {
        tapes[t] = tg_tape_new();
        tg_tape_set_recording(tapes[t], false);
    }
    for (int i0 = 0, nb; i0 < n; i0 += nb) { /* i0 + ENCODE_BATCH may wrap */
        nb = n - i0 < ENCODE_BATCH ? n - i0 : ENCODE_BATCH;
        const float *xb = x + (size_t)i0 * input;
        encode_rows(tp, vae, xb, nb, mean, logvar);
        tg_iw_opts o = *opts;
        o.stream += (uint64_t)i0;
        if (o.ess)
            o.ess += i0;
        iw_job jb = make_job(vae_loglik, (void *)vae, input, xb, nb, latent,
                             mean, logvar, &o, log_px ? log_px + i0 : NULL,
                             elbo ? elbo + i0 : NULL);
        int groups = (nb + jb.g - 1) / jb.g;
        if (T == 1 || groups == 1) {
            iw_serial(tp, &jb);
            continue;
        }
#ifdef TG_HAVE_OPENMP
#pragma omp parallel num_threads(T < groups ? T : groups)
        {
            iw_acc a;
            acc_alloc(&a, jb.g);
            tg_tape *own = tapes[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
            for (int q = 0; q < groups; q++) {
                int g0 = q * jb.g;
                iw_group(own, &jb, g0, nb - g0 < jb.g ? nb - g0 : jb.g, &a);
            }
            acc_free(&a);
            tg_tape_reset(own);
        }
#endif
    }
    for (int t = 1; t < T; t++)
        tg_tape_free(tapes[t]);
    free(tapes);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    free(mean);
    free(logvar);
}

void tg_vae_posterior_pixels(tg_tape *tp, const tg_vae *vae, const float *x,
                             int n, int S, uint64_t seed, uint64_t stream,
                             float *mean, float *std)
{
    if (!vae)
        tg_fatal("vae_posterior_pixels", "NULL model");
    if (S < 1)
        tg_fatal("vae_posterior_pixels", "need S >= 1, got %d", S);
    int input = vae->cfg.input, latent = vae->cfg.latent;
    float *zm = malloc(sizeof(float) * (size_t)latent);
    float *zlv = malloc(sizeof(float) * (size_t)latent);
    double *s1 = malloc(sizeof(double) * (size_t)input);
    double *s2 = malloc(sizeof(double) * (size_t)input);
    if (!zm || !zlv || !s1 || !s2)
        tg_out_of_memory("vae_posterior_pixels", "out of memory");
    int chunk = DEFAULT_ROWS < S ? DEFAULT_ROWS : S;
    bool was = tg_tape_set_recording(tp, false);
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * input;
        encode_rows(tp, vae, xi, 1, zm, zlv);
        tg_rng rng;
        tg_rng_seed(&rng, seed, stream + (uint64_t)i);
        memset(s1, 0, sizeof(double) * (size_t)input);
        memset(s2, 0, sizeof(double) * (size_t)input);
        for (int j0 = 0, nk; j0 < S; j0 += nk) { /* j0 + chunk may wrap */
            nk = S - j0 < chunk ? S - j0 : chunk;
            tg_tape_reset(tp);
            tg_tensor *z = tg_tape_tensor2(tp, nk, latent, false);
            for (int j = 0; j < nk; j++)
                for (int d = 0; d < latent; d++)
                    z->data[j * latent + d] =
                        zm[d] + expf(0.5f * zlv[d]) * tg_rng_normal(&rng);
            tg_tensor *p = tg_vae_decode(tp, vae, z);
            for (int j = 0; j < nk; j++)
                for (int q = 0; q < input; q++) {
                    double v = p->data[(size_t)j * input + q];
                    s1[q] += v;
                    s2[q] += v * v;
                }
        }
        /* var = E[p^2] - E[p]^2 in double; p in [0, 1] so no cancellation
         * worth a second pass. */
        for (int q = 0; q < input; q++) {
            double m = s1[q] / S, var = s2[q] / S - m * m;
            mean[(size_t)i * input + q] = (float)m;
            std[(size_t)i * input + q] = (float)sqrt(var > 0 ? var : 0);
        }
    }
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    free(zm);
    free(zlv);
    free(s1);
    free(s2);
}

/* ---- complexity ---------------------------------------------------------- */

tg_status tg_complexity_bits(const uint8_t *bytes, size_t n, double *bits)
{
#ifdef TG_HAVE_ZLIB
    uLongf cap = compressBound((uLong)n);
    Bytef *buf = malloc(cap);
    if (!buf)
        return tg_error(TG_ERR_NOMEM, "complexity: out of memory (%zu bytes)",
                        n);
    int rc = compress2(buf, &cap, bytes, (uLong)n, 9);
    free(buf);
    if (rc == Z_MEM_ERROR)
        return tg_error(TG_ERR_NOMEM, "complexity: out of memory in zlib");
    if (rc != Z_OK)
        return tg_error(TG_ERR_NOMEM, "complexity: zlib compress2 failed (%d)",
                        rc);
    *bits = 8.0 * (double)cap;
    return TG_OK;
#else
    (void)bytes;
    (void)n;
    *bits = NAN;
    return tg_error(TG_ERR_UNSUPPORTED,
                    "complexity L(x) needs zlib, which this build lacks");
#endif
}

/* ---- typicality -------------------------------------------------------- */

tg_status tg_typical_fit(tg_typical *ref, const double *feat, int n, int d)
{
    if (d < 1 || d > TG_TYPICAL_MAX_DIM || n <= d)
        return tg_error(TG_ERR_ARG,
                        "typicality: need 1 <= d <= %d and n > d "
                        "(d=%d, n=%d)",
                        TG_TYPICAL_MAX_DIM, d, n);
    memset(ref, 0, sizeof *ref);
    ref->d = d;
    ref->n = n;
    double sq[TG_TYPICAL_MAX_DIM] = {0}; /* mean square, for the scale */
    /* rows at (size_t)i * d: i * d wrapped for n * d > INT_MAX */
    for (int i = 0; i < n; i++) {
        const double *f = feat + (size_t)i * d;
        for (int a = 0; a < d; a++) {
            if (!isfinite(f[a]))
                return tg_error(TG_ERR_ARG,
                                "typicality: feature %d of example %d is %g", a,
                                i, f[a]);
            ref->mean[a] += f[a];
            sq[a] += f[a] * f[a] / n;
        }
    }
    for (int a = 0; a < d; a++)
        ref->mean[a] /= n;
    /* cov = sum (f - mean)(f - mean)' / (n - 1), then Cholesky cov = L L'. */
    for (int i = 0; i < n; i++) {
        const double *f = feat + (size_t)i * d;
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++)
                ref->cov[a][b] +=
                    (f[a] - ref->mean[a]) * (f[b] - ref->mean[b]) / (n - 1);
    }
    for (int a = 0; a < d; a++)
        for (int b = 0; b <= a; b++) {
            double s = ref->cov[a][b];
            for (int c = 0; c < b; c++)
                s -= ref->chol[a][c] * ref->chol[b][c];
            if (a == b) {
                /* a feature constant but for rounding (its variance below
                 * 1e-20 of its mean square: a constant's came out 1e-32
                 * and passed), or one the others determine */
                if (!(ref->cov[a][a] > 1e-20 * sq[a] + 1e-300))
                    return tg_error(TG_ERR_ARG,
                                    "typicality: feature %d of %d examples "
                                    "is constant",
                                    a, n);
                if (!(s > 1e-12 * ref->cov[a][a]))
                    return tg_error(TG_ERR_ARG,
                                    "typicality: the %d features "
                                    "of %d examples are collinear",
                                    d, n);
                ref->chol[a][a] = sqrt(s);
            } else {
                ref->chol[a][b] = s / ref->chol[b][b];
            }
        }
    return TG_OK;
}

/* |L^-1 (f - mean)|: forward substitution. */
double tg_typical_score(const tg_typical *ref, const double *f)
{
    double y[TG_TYPICAL_MAX_DIM], ss = 0.0;
    for (int a = 0; a < ref->d; a++) {
        double s = f[a] - ref->mean[a];
        for (int c = 0; c < a; c++)
            s -= ref->chol[a][c] * y[c];
        y[a] = s / ref->chol[a][a];
        ss += y[a] * y[a];
    }
    return sqrt(ss);
}

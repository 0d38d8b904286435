/* Variational Dense layer (Bayes by Backprop, Blundell et al. 2015) with the
 * local reparameterization trick (Kingma, Salimans & Welling 2015).
 *
 * Posterior q(W) = prod N(W_mu, softplus(W_rho)^2), the same for b; prior
 * p(W) = prod N(0, prior_scale^2). For a batch x [B, in] the pre-activations
 * are Gaussian given x, so they are sampled directly (two GEMMs, no sampled
 * weight matrix):
 *
 *   mean = x . W_mu^T + b_mu                          [B, out]
 *   var  = (x * x) . (sigma_W^2)^T + sigma_b^2        [B, out]
 *   y    = mean + sqrt(var) * eps,  eps ~ N(0, I)     [B, out]
 *
 * Each row draws its own weights, which lowers the gradient's variance
 * compared with one weight sample per batch. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bayes_posterior.h"
#include "layer_init.h"
#include "parallel.h"
#include "rng_blocks.h"
#include "tg_nn.h"
#include "vmath.h"

#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif

void tg_bayes_dense_init(tg_bayes_dense *l, tg_params *ps, const char *name,
                         int in, int out, float prior_scale, float rho_init,
                         tg_rng *rng)
{
    layer_init_check("bayes_dense_init", l, ps, name, true, rng);
    if (in <= 0 || out <= 0)
        tg_fatal("bayes_dense_init", "%s: bad size in=%d out=%d", name, in,
                 out);
    if (!(prior_scale > 0.0f) || !isfinite(prior_scale))
        tg_fatal("bayes_dense_init",
                 "%s: prior_scale %g must be finite and > 0", name,
                 (double)prior_scale);
    if (!isfinite(rho_init))
        tg_fatal("bayes_dense_init", "%s: rho_init is not finite", name);
    char key[256];
    snprintf(key, sizeof key, "%s.weight_mu", name);
    l->W_mu = tg_params_add(ps, key, 2, (int[]){out, in});
    snprintf(key, sizeof key, "%s.weight_rho", name);
    l->W_rho = tg_params_add(ps, key, 2, (int[]){out, in});
    snprintf(key, sizeof key, "%s.bias_mu", name);
    l->b_mu = tg_params_add(ps, key, 1, (int[]){out});
    snprintf(key, sizeof key, "%s.bias_rho", name);
    l->b_rho = tg_params_add(ps, key, 1, (int[]){out});
    l->in = in;
    l->out = out;
    l->prior_scale = prior_scale;

    /* The means as PyTorch's Linear (uniform +-1/sqrt(in), W then b); every
     * rho starts at rho_init, a small sigma, so training starts close to a
     * deterministic network. */
    float a = 1.0f / sqrtf((float)in);
    tg_rng_fill_uniform(rng, l->W_mu->data, l->W_mu->size, -a, a);
    tg_rng_fill_uniform(rng, l->b_mu->data, l->b_mu->size, -a, a);
    for (size_t i = 0; i < l->W_rho->size; i++)
        l->W_rho->data[i] = rho_init;
    for (size_t i = 0; i < l->b_rho->size; i++)
        l->b_rho->data[i] = rho_init;
}

/* ---- the posterior's variances and KL: one fused op -------------------
 * For mu, rho of one shape (a weight matrix or a bias), per element
 *   s = softplus(rho),  var = s^2,
 *   kl = sum log p - log s + (s^2 + mu^2) / (2 p^2) - 1/2     [1]
 * Backward, with sig = sigmoid(rho) = ds/drho:
 *   drho += sig * (2 s dvar + s / p^2 dkl) - (sig / s) dkl,  dmu += mu / p^2
 * dkl. Forward saves s and sig, so backward does no transcendental math. The
 * sum runs over fixed blocks combined in order: the same bits on any thread
 * count. Below rho = RHO_TINY, s = log1p(e^rho) = e^rho (1 - e^rho / 2 + ...)
 * is e^rho to float precision: there log s = rho and sig / s = 1 exactly as
 * floats (also where s is denormal or 0, rho < -87 or -104, so the KL and
 * its gradient stay right for any finite rho). var is s^2 floored at
 * FLT_MIN (s^2 is denormal below rho -43.7, 0 below -52): a layer's
 * variance is then >= sigma_b^2 > 0, so sqrt's gradient is finite, where a
 * zero input row (or conv window) and sigma_b^2 = 0 gave 1 / (2 sqrt 0) =
 * inf and NaN in every rho and x gradient; the floor moves sd by at most
 * 1e-19 * |x|. Backward keeps s^2's gradient 2 s sig dvar (below 1e-38
 * dvar there). */
#define RHO_TINY -20.0f
enum { KL_BLOCK = 4096 };

typedef struct posterior_saved {
    float *s, *sig;
    float inv_p2;
    bool kl;
} posterior_saved;

static void posterior_backward(tg_tape *tp, tg_record *r)
{
    const posterior_saved *sv = tg_op_saved(r);
    tg_tensor *mu = tg_op_input(r, 0), *rho = tg_op_input(r, 1);
    const float *dvar = tg_op_grad_out(r, 0);
    const float *dkl_p = sv->kl ? tg_op_grad_out(r, 1) : NULL;
    float dkl = dkl_p ? dkl_p[0] : 0.0f;
    float *drho = tg_grad_of(tp, rho), *dmu = tg_grad_of(tp, mu);
    const float *s = sv->s, *sig = sv->sig, *m = mu->data, *rh = rho->data;
    const float c = sv->inv_p2;
    size_t n = mu->size;
    if (drho) {
        TG_PARALLEL_FOR(n, 1)
        for (size_t i = 0; i < n; i++) {
            float g = dkl * s[i] * c;
            if (dvar)
                g += 2.0f * (s[i] * dvar[i]); /* not (2s): inf * 0 */
            float sig_over_s = rh[i] < RHO_TINY ? 1.0f : sig[i] / s[i];
            drho[i] += sig[i] * g - dkl * sig_over_s;
        }
    }
    if (dmu && dkl != 0.0f) {
        TG_PARALLEL_FOR(n, 1)
        for (size_t i = 0; i < n; i++)
            dmu[i] += dkl * c * m[i];
    }
}

/* One block of the forward: var, the saved s and sig, and the block's sum
 * of -log s + c (s^2 + mu^2), in double by vsum_f64 (8 fixed lanes, so the
 * loops vectorise and the sum is the same on every machine). */
TG_VECTOR_CLONES
static double posterior_block(const float *restrict mu,
                              const float *restrict rho, float *restrict var,
                              float *restrict s_out, float *restrict sig_out,
                              size_t n, float c, bool kl)
{
    float term[KL_BLOCK];
    for (size_t i = 0; i < n; i++) {
        float v = rho[i];
        float e = vexpf(-fabsf(v)); /* e^-|rho| in (0, 1] */
        float s = (v > 0.0f ? v : 0.0f) + vlog1p_unit(e);
        float q = 1.0f / (1.0f + e);
        s_out[i] = s;
        sig_out[i] = v >= 0.0f ? q : e * q;
        var[i] = fmaxf(s * s, FLT_MIN); /* 0 below rho -52: see above */
        /* vlogf_ge1 takes any normal s > 0: s > 2e-9 from RHO_TINY up */
        float log_s = v < RHO_TINY ? v : vlogf_ge1(v < RHO_TINY ? 1.0f : s);
        term[i] = c * (s * s + mu[i] * mu[i]) - log_s;
    }
    if (!kl)
        return 0.0;
    return vsum_f64(term, (int)n); /* n <= KL_BLOCK */
}

/* var (same shape as rho) and, when kl is not NULL, the KL [1]; shared
 * with bayes_conv.c through bayes_posterior.h. */
tg_tensor *bayes_posterior(tg_tape *tp, tg_tensor *mu, tg_tensor *rho,
                           float prior_scale, tg_tensor **kl)
{
    size_t n = rho->size;
    tg_tensor *var = tg_tape_tensor(tp, rho->ndim, rho->shape, false);
    posterior_saved *sv = tg_tape_alloc(tp, sizeof *sv);
    sv->s = tg_tape_alloc(tp, n * sizeof(float));
    sv->sig = tg_tape_alloc(tp, n * sizeof(float));
    sv->inv_p2 = 1.0f / (prior_scale * prior_scale);
    sv->kl = kl != NULL;
    size_t blocks = (n + KL_BLOCK - 1) / KL_BLOCK;
    double *part = tg_tape_alloc(tp, blocks * sizeof(double));
    float c = 0.5f * sv->inv_p2;
    const float *m = mu->data, *r = rho->data;
    TG_PARALLEL_FOR(blocks, KL_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t lo = b * KL_BLOCK, len = n - lo < KL_BLOCK ? n - lo : KL_BLOCK;
        part[b] = posterior_block(m + lo, r + lo, var->data + lo, sv->s + lo,
                                  sv->sig + lo, len, c, sv->kl);
    }
    tg_tensor *outs[2] = {var, NULL};
    if (kl) {
        double sum = (double)n * (log((double)prior_scale) - 0.5);
        for (size_t b = 0; b < blocks; b++)
            sum += part[b];
        *kl = outs[1] = tg_tape_tensor(tp, 1, (int[]){1}, false);
        (*kl)->data[0] = (float)sum;
    }
    tg_tensor *ins[2] = {mu, rho};
    tg_op_record(tp, "bayes_posterior", posterior_backward, 2, ins, kl ? 2 : 1,
                 outs, sv);
    return var;
}

void bayes_layer_posterior(tg_tape *tp, tg_tensor *W_mu, tg_tensor *W_rho,
                           tg_tensor *b_mu, tg_tensor *b_rho, float prior_scale,
                           tg_tensor **var_W, tg_tensor **var_b, tg_tensor **kl)
{
    tg_tensor *kl_W, *kl_b;
    *var_W = bayes_posterior(tp, W_mu, W_rho, prior_scale, kl ? &kl_W : NULL);
    *var_b = bayes_posterior(tp, b_mu, b_rho, prior_scale, kl ? &kl_b : NULL);
    if (kl)
        *kl = tg_add(tp, kl_W, kl_b);
}

/* x's last axis must be the layer's width: checked here so that the
 * message names the layer's call, not the dense op (and W_mu) inside. */
static void check_width(const char *op, const tg_bayes_dense *l,
                        const tg_tensor *x)
{
    if (x->ndim < 1 || x->shape[x->ndim - 1] != l->in) {
        char s[64];
        tg_fatal(op, "x %s must be [B, %d] (the layer's in)",
                 tg_shape_str(x, s), l->in);
    }
}

/* The sample for noise eps (the formula at the top), and the layer's KL
 * from the same softplus pass when kl is not NULL. var >= sigma_b^2 > 0, so
 * sqrt's gradient is finite. */
static tg_tensor *sample(tg_tape *tp, const tg_bayes_dense *l, tg_tensor *x,
                         tg_tensor *eps, tg_tensor **kl)
{
    check_width("bayes_dense", l, x);
    tg_tensor *mean = tg_dense(tp, x, l->W_mu, l->b_mu);
    if (eps->ndim != 2 || eps->shape[0] != mean->shape[0] ||
        eps->shape[1] != l->out) {
        char a[64], b[64];
        tg_fatal("bayes_dense", "eps %s must be the output's shape %s",
                 tg_shape_str(eps, a), tg_shape_str(mean, b));
    }
    tg_tensor *var_W, *var_b;
    bayes_layer_posterior(tp, l->W_mu, l->W_rho, l->b_mu, l->b_rho,
                          l->prior_scale, &var_W, &var_b, kl);
    tg_tensor *var = tg_dense(tp, tg_square(tp, x), var_W, var_b);
    tg_tensor *sd = tg_sqrt(tp, var);
    return tg_add(tp, mean, tg_mul(tp, sd, eps));
}

void tg_bayes_dense_moments(tg_tape *tp, const tg_bayes_dense *l, tg_tensor *x,
                            tg_tensor **mean, tg_tensor **sd)
{
    if (!l)
        tg_fatal("bayes_dense_moments", "NULL layer");
    if (!x || !mean || !sd)
        tg_fatal("bayes_dense_moments", "NULL %s",
                 !x      ? "x"
                 : !mean ? "mean"
                         : "sd");
    check_width("bayes_dense_moments", l, x);
    *mean = tg_dense(tp, x, l->W_mu, l->b_mu);
    tg_tensor *var_W, *var_b;
    bayes_layer_posterior(tp, l->W_mu, l->W_rho, l->b_mu, l->b_rho,
                          l->prior_scale, &var_W, &var_b, NULL);
    *sd = tg_sqrt(tp, tg_dense(tp, tg_square(tp, x), var_W, var_b));
}

tg_tensor *tg_bayes_dense_apply_eps(tg_tape *tp, const tg_bayes_dense *l,
                                    tg_tensor *x, tg_tensor *eps)
{
    if (!l)
        tg_fatal("bayes_dense_apply_eps", "NULL layer");
    if (!x || !eps)
        tg_fatal("bayes_dense", "NULL %s", x ? "eps" : "x");
    return sample(tp, l, x, eps, NULL);
}

tg_tensor *tg_bayes_dense_apply_kl(tg_tape *tp, const tg_bayes_dense *l,
                                   tg_tensor *x, tg_rng *rng, tg_tensor **kl)
{
    if (!l)
        tg_fatal("bayes_dense_apply_kl", "NULL layer");
    if (!x || !rng || !kl)
        tg_fatal("bayes_dense_apply_kl", "NULL %s",
                 !x     ? "x"
                 : !rng ? "rng"
                        : "kl");
    if (x->ndim != 2)
        tg_fatal("bayes_dense_apply_kl", "x must be 2-D [B, %d]", l->in);
    tg_tensor *eps = tg_tape_tensor2(tp, x->shape[0], l->out, false);
    tg_rng_fill_normal_bulk(rng, eps->data, eps->size);
    return sample(tp, l, x, eps, kl);
}

tg_tensor *tg_bayes_dense_apply(tg_tape *tp, const tg_bayes_dense *l,
                                tg_tensor *x, tg_rng *rng)
{
    if (!l)
        tg_fatal("bayes_dense_apply", "NULL layer");
    if (!x)
        tg_fatal("bayes_dense", "NULL x");
    check_width("bayes_dense", l, x);
    if (!rng)
        return tg_dense(tp, x, l->W_mu, l->b_mu);
    if (x->ndim != 2)
        tg_fatal("bayes_dense", "x must be 2-D [B, %d]", l->in);
    /* Fixed blocks with their own streams: the same draws for any thread
     * count. */
    tg_tensor *eps = tg_tape_tensor2(tp, x->shape[0], l->out, false);
    tg_rng_fill_normal_bulk(rng, eps->data, eps->size);
    return sample(tp, l, x, eps, NULL);
}

tg_tensor *tg_bayes_dense_kl(tg_tape *tp, const tg_bayes_dense *l)
{
    if (!l)
        tg_fatal("bayes_dense_kl", "NULL layer");
    tg_tensor *var_W, *var_b, *kl;
    bayes_layer_posterior(tp, l->W_mu, l->W_rho, l->b_mu, l->b_rho,
                          l->prior_scale, &var_W, &var_b, &kl);
    return kl;
}

/* ---- prediction without a tape -------------------------------------------
 * S sampled passes of a trained network need sigma^2 once (not S times) and
 * the sample y = mean + sqrt(var) * eps, then ReLU and y * y for the next
 * layer's variance, in one pass over memory instead of five ops. */

void tg_bayes_dense_variances(const tg_bayes_dense *l, float *var_W,
                              float *var_b)
{
    if (!l || !var_W || !var_b)
        tg_fatal("bayes_dense_variances", "NULL %s",
                 !l       ? "layer"
                 : !var_W ? "var_W"
                          : "var_b");
    float c = 0.5f / (l->prior_scale * l->prior_scale);
    const tg_tensor *mu[2] = {l->W_mu, l->b_mu}, *rho[2] = {l->W_rho, l->b_rho};
    float *var[2] = {var_W, var_b};
    for (int t = 0; t < 2; t++) {
        size_t n = rho[t]->size, blocks = (n + KL_BLOCK - 1) / KL_BLOCK;
        const float *m = mu[t]->data, *r = rho[t]->data;
        float *v = var[t];
        TG_PARALLEL_FOR(blocks, KL_BLOCK)
        for (size_t b = 0; b < blocks; b++) {
            size_t lo = b * KL_BLOCK,
                   len = n - lo < KL_BLOCK ? n - lo : KL_BLOCK;
            float s[KL_BLOCK], sig[KL_BLOCK]; /* not needed here */
            posterior_block(m + lo, r + lo, v + lo, s, sig, len, c, false);
        }
    }
}

/* One block of tg_bayes_draw: the arithmetic of tg_add(mean, tg_mul(
 * tg_sqrt(var), eps)), tg_relu and tg_square, element by element. */
TG_VECTOR_CLONES
static void draw_block(const float *restrict mean, const float *restrict var,
                       const float *restrict eps, size_t n, bool relu,
                       float *restrict y, float *restrict y_sq)
{
    if (relu)
        for (size_t i = 0; i < n; i++) {
            float v = mean[i] + sqrtf(var[i]) * eps[i];
            y[i] = v < 0.0f ? 0.0f : v;
        }
    else
        for (size_t i = 0; i < n; i++)
            y[i] = mean[i] + sqrtf(var[i]) * eps[i];
    if (y_sq)
        for (size_t i = 0; i < n; i++)
            y_sq[i] = y[i] * y[i];
}

/* tg_bayes_draw with its key (one tg_rng_u64 draw) given. */
static void draw(uint64_t key, const float *mean, const float *var, size_t n,
                 bool relu, float *y, float *y_sq)
{
    size_t blocks = (n + NORMAL_BULK_BLOCK - 1) / NORMAL_BULK_BLOCK;
    TG_PARALLEL_FOR(blocks, NORMAL_BULK_BLOCK)
    for (size_t b = 0; b < blocks; b++) {
        size_t lo = b * NORMAL_BULK_BLOCK,
               len = n - lo < NORMAL_BULK_BLOCK ? n - lo : NORMAL_BULK_BLOCK;
        float eps[NORMAL_BULK_BLOCK];
        normal_bulk_block(key, b, eps, len);
        draw_block(mean + lo, var + lo, eps, len, relu, y + lo,
                   y_sq ? y_sq + lo : NULL);
    }
}

void tg_bayes_draw(tg_rng *rng, const float *mean, const float *var, size_t n,
                   bool relu, float *y, float *y_sq)
{
    if (!rng || (n && (!mean || !var || !y)))
        tg_fatal("bayes_draw", "NULL %s",
                 !rng    ? "rng"
                 : !mean ? "mean"
                 : !var  ? "var"
                         : "y");
    draw(tg_rng_u64(rng), mean, var, n, relu, y, y_sq); /* as the bulk fill */
}

/* y [rows, out] = x [rows, in] . W^T + b: tg_dense's arithmetic (C starts
 * as the bias rows, one GEMM adds the product). */
static void dense_into(const float *x, int rows, int in, int out,
                       const float *W, const float *b, float *y)
{
    for (int i = 0; i < rows; i++)
        memcpy(y + (size_t)i * out, b, sizeof(float) * (size_t)out);
    tg_gemm(false, true, rows, out, in, 1.0f, x, in, W, in, 1.0f, y, out);
}

/* One sampled pass of tg_bayes_mlp_sample into y [rows, last layer's out],
 * from layer 1's moments mean1 and var1 (the same for every pass), with
 * one key per layer and the 4 planes of its lane (h, h_sq, the next
 * layer's pre-activation mean and variance; plane floats each). */
static void mlp_pass(const tg_bayes_dense *layers, int n_layers, int rows,
                     const uint64_t *key, float *const *var_W,
                     float *const *var_b, const float *mean1, const float *var1,
                     float *lane, size_t plane, float *y)
{
    size_t first = (size_t)rows * layers[0].out;
    float *h = lane, *h_sq = h + plane, *mean = h_sq + plane,
          *var = mean + plane;
    if (n_layers == 1) {
        draw(key[0], mean1, var1, first, false, y, NULL);
        return;
    }
    draw(key[0], mean1, var1, first, true, h, h_sq);
    for (int l = 1; l < n_layers; l++) {
        const tg_bayes_dense *L = &layers[l];
        size_t n = (size_t)rows * L->out;
        /* the tape's GEMM, W as [out, in]: a GEMM of W transposed (plain
         * copies into the panels) summed differently for some shapes
         * (784-400-10: 4 ulp apart) */
        dense_into(h, rows, L->in, L->out, L->W_mu->data, L->b_mu->data, mean);
        dense_into(h_sq, rows, L->in, L->out, var_W[l], var_b[l], var);
        if (l < n_layers - 1)
            draw(key[l], mean, var, n, true, h, h_sq);
        else
            draw(key[l], mean, var, n, false, y, NULL);
    }
}

void tg_bayes_mlp_sample(const tg_bayes_dense *layers, int n_layers,
                         const float *x, int rows, int S, tg_rng *rng,
                         float *out)
{
    if (!layers || !rng || !out || (rows && !x))
        tg_fatal("bayes_mlp_sample", "NULL %s",
                 !layers ? "layers"
                 : !rng  ? "rng"
                 : !out  ? "out"
                         : "x");
    if (n_layers < 1 || rows < 0 || S < 1)
        tg_fatal("bayes_mlp_sample", "bad sizes: %d layers, %d rows, S = %d",
                 n_layers, rows, S);
    int width = 1; /* the widest layer's output */
    for (int l = 0; l < n_layers; l++) {
        if (l && layers[l].in != layers[l - 1].out)
            tg_fatal("bayes_mlp_sample",
                     "layer %d's input %d is not layer %d's output %d", l,
                     layers[l].in, l - 1, layers[l - 1].out);
        width = layers[l].out > width ? layers[l].out : width;
    }
    /* One key per pass and layer, taken in the order S passes on the tape
     * would take them (pass by pass, layer by layer). */
    uint64_t *keys = malloc(sizeof(uint64_t) * (size_t)S * n_layers);
    /* per layer: sigma^2 of W and b */
    float **var_W = calloc((size_t)n_layers * 2, sizeof(float *));
    float **var_b = var_W ? var_W + n_layers : NULL;
    size_t plane = (size_t)rows * width, first = (size_t)rows * layers[0].out;
    int lanes = tg_par_threads() < S ? tg_par_threads() : S;
    lanes = lanes > 0 ? lanes : 1;
    /* layer 1's mean and variance, x^2, then 4 planes per lane: h, h_sq,
     * the pre-activations' mean and variance */
    size_t n_work =
        2 * first + (size_t)layers[0].in * rows + 4 * plane * (size_t)lanes;
    float *work = malloc(sizeof(float) * (n_work ? n_work : 1));
    if (!keys || !var_W || !work)
        tg_out_of_memory("bayes_mlp_sample", "out of memory");
    for (size_t i = 0; i < (size_t)S * n_layers; i++)
        keys[i] = tg_rng_u64(rng);
    for (int l = 0; l < n_layers; l++) {
        var_W[l] = malloc(sizeof(float) * (size_t)layers[l].out * layers[l].in);
        var_b[l] = malloc(sizeof(float) * (size_t)layers[l].out);
        if (!var_W[l] || !var_b[l])
            tg_out_of_memory("bayes_mlp_sample", "out of memory");
        tg_bayes_dense_variances(&layers[l], var_W[l], var_b[l]);
    }
    /* Layer 1 sees the same x in every pass: its moments once, on all
     * threads (the GEMM's own). */
    const tg_bayes_dense *L0 = &layers[0];
    float *mean1 = work, *var1 = work + first, *x_sq = var1 + first;
    float *lane_work = x_sq + (size_t)L0->in * rows;
    for (size_t i = 0; i < (size_t)L0->in * rows; i++)
        x_sq[i] = x[i] * x[i];
    dense_into(x, rows, L0->in, L0->out, L0->W_mu->data, L0->b_mu->data, mean1);
    dense_into(x_sq, rows, L0->in, L0->out, var_W[0], var_b[0], var1);
    /* The passes, handed to the threads one at a time (a core that other
     * work slows down takes fewer), each pass on one thread with that
     * thread's planes (the GEMMs and draws inside see a parallel region and
     * stay serial): every pass's arithmetic is fixed, so which thread runs
     * it changes no bit. */
    int n_out = layers[n_layers - 1].out;
#ifdef TG_HAVE_OPENMP
    bool par = lanes > 1 && (size_t)S * plane >= TG_PARALLEL_MIN;
#pragma omp parallel for schedule(dynamic, 1) num_threads(lanes) if (par)
#endif
    for (int s = 0; s < S; s++) {
        int t = 0;
#ifdef TG_HAVE_OPENMP
        t = omp_get_thread_num();
#endif
        mlp_pass(layers, n_layers, rows, keys + (size_t)s * n_layers, var_W,
                 var_b, mean1, var1, lane_work + 4 * plane * (size_t)t, plane,
                 out + (size_t)s * rows * n_out);
    }
    for (int l = 0; l < n_layers; l++) {
        free(var_W[l]);
        free(var_b[l]);
    }
    free(var_W);
    free(keys);
    free(work);
}

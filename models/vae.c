/* The VAE as graphs: the ELBO sketched in docs/design.md (models); the API
 * and shapes are in tg_vae.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "tg_vae.h"

const char *tg_vae_arch_name(tg_vae_arch arch)
{
    return arch == TG_VAE_CONV ? "conv" : "mlp";
}

bool tg_vae_arch_parse(const char *name, tg_vae_arch *arch)
{
    if (strcmp(name, "mlp") == 0)
        *arch = TG_VAE_MLP;
    else if (strcmp(name, "conv") == 0)
        *arch = TG_VAE_CONV;
    else
        return false;
    return true;
}

const char *tg_vae_likelihood_name(tg_vae_likelihood lik)
{
    return lik == TG_VAE_CB ? "cb" : "bernoulli";
}

bool tg_vae_likelihood_parse(const char *name, tg_vae_likelihood *lik)
{
    if (strcmp(name, "bernoulli") == 0)
        *lik = TG_VAE_BERNOULLI;
    else if (strcmp(name, "cb") == 0)
        *lik = TG_VAE_CB;
    else
        return false;
    return true;
}

/* E[x] of CB(lambda), lambda = sigmoid(x), as 1/2 + L(x/2)/2 with L the
 * Langevin function coth - 1/identity. With a = |x|, u = e^-a:
 *   x > 0:  1/(1 - u) - 1/a,   x < 0:  1/a - u/(1 - u)
 * (the two are 1 - each other; each avoids subtracting nearly equal
 * numbers, 1 - u is -expm1(-a)). Below a = 0.1, where 1/(1 - u) and 1/a
 * are both near 1/a, the series 1/2 + x/12 - x^3/720 + x^5/30240
 * - x^7/1209600 (next term under 1e-20). +-Inf give 1 and 0. */
static double cb_mean(double x)
{
    double a = fabs(x);
    if (a < 0.1) {
        double s = x * x;
        return 0.5 +
               x * (1.0 / 12 + s * (-1.0 / 720 +
                                    s * (1.0 / 30240 + s * (-1.0 / 1209600))));
    }
    double u = exp(-a), one_minus_u = -expm1(-a);
    return x > 0 ? 1.0 / one_minus_u - 1.0 / a : 1.0 / a - u / one_minus_u;
}

void tg_cb_mean(const float *logits, float *mean, size_t n)
{
    if (n && (!logits || !mean))
        tg_fatal("cb_mean", "NULL %s", logits ? "mean" : "logits");
    for (size_t i = 0; i < n; i++)
        mean[i] = (float)cb_mean(logits[i]);
}

double tg_cb_logit_of_mean(double m)
{
    if (!(m >= 0.0 && m <= 1.0))
        return NAN;
    if (m == 0.0 || m == 1.0)
        return m == 0.0 ? -INFINITY : INFINITY;
    /* E(-a) < 1/a and E(a) > 1 - 1/a: a bracket */
    double lo = -(1.0 / m + 2.0), hi = 1.0 / (1.0 - m) + 2.0;
    for (int i = 0; i < 200 && hi - lo > 1e-15 * fmax(1.0, fabs(lo)); i++) {
        double mid = 0.5 * (lo + hi);
        if (cb_mean(mid) < m)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* log sigmoid(t) without overflow: 0 at +Inf, -Inf at -Inf */
static double log_sigmoid(double t)
{
    return t < 0 ? t - log1p(exp(t)) : -log1p(exp(-t));
}

double tg_vae_pixel_loglik(tg_vae_likelihood lik, double logit, double x)
{
    if (lik == TG_VAE_CB && isinf(logit)) /* C grows as |logit|: the limit */
        return (logit > 0 ? x == 1.0 : x == 0.0) ? INFINITY : -INFINITY;
    /* each term only where its weight is not 0 (0 * -Inf at an infinite
     * logit gave NaN for the pixel it predicts exactly) */
    double ll = 0.0;
    if (x != 0.0)
        ll += x * log_sigmoid(logit);
    if (x != 1.0)
        ll += (1.0 - x) * log_sigmoid(-logit);
    if (lik == TG_VAE_CB) /* log C = log(logit / tanh(logit/2)) */
        ll += logit == 0.0 ? log(2.0) : log(logit / tanh(0.5 * logit));
    return ll;
}

/* The image side of a conv VAE's input, or 0 when input is not the square
 * of a multiple of 4. */
static int conv_side(int input)
{
    int s = (int)lround(sqrt((double)input));
    return s * s == input && s % 4 == 0 ? s : 0;
}

/* The layers of the convolutional architecture (tg_vae.h), created in the
 * order the encoder and decoder apply them. */
static void conv_layers_init(tg_vae *vae, tg_rng *rng)
{
    tg_params *ps = vae->params;
    int q = vae->side / 4, flat = 64 * q * q, z = vae->cfg.latent;
    tg_conv2d_layer_init(&vae->conv1, ps, "encoder.conv1", 1, 32, 4, 2, 1,
                         TG_INIT_TORCH, rng);
    tg_conv2d_layer_init(&vae->conv2, ps, "encoder.conv2", 32, 64, 4, 2, 1,
                         TG_INIT_TORCH, rng);
    tg_dense_layer_init(&vae->enc2, ps, "encoder.fc", flat, 2 * z,
                        TG_INIT_TORCH, rng);
    tg_dense_layer_init(&vae->dec1, ps, "decoder.fc", z, flat, TG_INIT_TORCH,
                        rng);
    tg_conv_transpose2d_layer_init(&vae->deconv1, ps, "decoder.deconv1", 64, 32,
                                   4, 2, 1, 0, TG_INIT_TORCH, rng);
    tg_conv_transpose2d_layer_init(&vae->deconv2, ps, "decoder.deconv2", 32, 1,
                                   4, 2, 1, 0, TG_INIT_TORCH, rng);
    /* the ReLUs after conv1, conv2 and deconv1, inside the ops */
    vae->conv1.args.relu = vae->conv2.args.relu = true;
    vae->deconv1.args.relu = true;
}

uint64_t tg_vae_numel(tg_vae_config cfg)
{
    uint64_t in = (uint64_t)cfg.input, h = (uint64_t)cfg.hidden,
             z = (uint64_t)cfg.latent;
    if (cfg.arch == TG_VAE_CONV) { /* conv_layers_init */
        uint64_t flat = 4 * in;    /* 64 channels of (side / 4)^2 */
        return (32 * 16 + 32) + (64 * 32 * 16 + 64) + (flat * 2 * z + 2 * z) +
               (z * flat + flat) + (64 * 32 * 16 + 32) + (32 * 16 + 1);
    }
    if (h > 0)
        return (in * h + h) + (h * 2 * z + 2 * z) + (z * h + h) + (h * in + in);
    return (in * 2 * z + 2 * z) + (z * in + in);
}

tg_vae *tg_vae_new(tg_vae_config cfg, uint64_t seed)
{
    if (cfg.input <= 0 || cfg.latent <= 0 || cfg.hidden < 0 ||
        cfg.input > TG_VAE_MAX_INPUT || cfg.hidden > TG_VAE_MAX_HIDDEN ||
        cfg.latent > TG_VAE_MAX_LATENT ||
        (cfg.arch != TG_VAE_MLP && cfg.arch != TG_VAE_CONV) ||
        (cfg.likelihood != TG_VAE_BERNOULLI && cfg.likelihood != TG_VAE_CB))
        tg_fatal("vae_new",
                 "bad config input=%d hidden=%d latent=%d arch=%d "
                 "likelihood=%d",
                 cfg.input, cfg.hidden, cfg.latent, (int)cfg.arch,
                 (int)cfg.likelihood);
    if (cfg.arch == TG_VAE_CONV && (conv_side(cfg.input) == 0 || cfg.hidden))
        tg_fatal("vae_new",
                 "the conv VAE needs input = side^2 with side a multiple of "
                 "4, and hidden 0; got input=%d hidden=%d",
                 cfg.input, cfg.hidden);
    if (tg_vae_numel(cfg) > TG_VAE_MAX_PARAMS)
        tg_fatal("vae_new",
                 "input=%d hidden=%d latent=%d makes %llu parameters, more "
                 "than %llu",
                 cfg.input, cfg.hidden, cfg.latent,
                 (unsigned long long)tg_vae_numel(cfg),
                 (unsigned long long)TG_VAE_MAX_PARAMS);
    tg_vae *vae = calloc(1, sizeof *vae);
    if (!vae)
        tg_out_of_memory("vae_new", "out of memory");
    vae->cfg = cfg;
    vae->params = tg_params_new();

    tg_rng rng;
    tg_rng_seed(&rng, seed, 0);
    tg_params *ps = vae->params;
    int in = cfg.input, h = cfg.hidden, z = cfg.latent;
    if (cfg.arch == TG_VAE_CONV) {
        vae->side = conv_side(in);
        conv_layers_init(vae, &rng);
    } else if (h > 0) {
        tg_dense_layer_init(&vae->enc1, ps, "encoder.fc1", in, h, TG_INIT_TORCH,
                            &rng);
        tg_dense_layer_init(&vae->enc2, ps, "encoder.fc2", h, 2 * z,
                            TG_INIT_TORCH, &rng);
        tg_dense_layer_init(&vae->dec1, ps, "decoder.fc1", z, h, TG_INIT_TORCH,
                            &rng);
        tg_dense_layer_init(&vae->dec2, ps, "decoder.fc2", h, in, TG_INIT_TORCH,
                            &rng);
    } else {
        tg_dense_layer_init(&vae->enc2, ps, "encoder.fc2", in, 2 * z,
                            TG_INIT_TORCH, &rng);
        tg_dense_layer_init(&vae->dec2, ps, "decoder.fc2", z, in, TG_INIT_TORCH,
                            &rng);
    }
    tg_params_seal(ps);
    return vae;
}

void tg_vae_free(tg_vae *vae)
{
    if (!vae)
        return;
    tg_params_free(vae->params);
    free(vae);
}

/* A NULL model where one is needed: a message naming the call, not a
 * segfault inside it. */
static void need_model(const tg_vae *vae, const char *op)
{
    if (!vae)
        tg_fatal(op, "NULL model");
}

tg_params *tg_vae_params(tg_vae *vae)
{
    need_model(vae, "vae_params");
    return vae->params;
}

/* conv: h = flatten(relu(conv2(relu(conv1(x as [B, 1, s, s])))))
 * (the ReLUs fused into the convolutions: args.relu) */
static tg_tensor *conv_encoder_features(tg_tape *tp, const tg_vae *vae,
                                        tg_tensor *x)
{
    tg_tensor *img = tg_unflatten(tp, x, 1, vae->side, vae->side);
    tg_tensor *h = tg_conv2d_apply(tp, &vae->conv1, img);
    return tg_flatten(tp, tg_conv2d_apply(tp, &vae->conv2, h));
}

/* h            = relu(dense(enc1, x))          (x itself when hidden = 0;
 *                                               conv: the features above)
 * mean, logvar = split(dense(enc2, h), 2)
 * logvar       = clamp(logvar, -30, 20)        (see TG_VAE_LOGVAR_MIN) */
void tg_vae_encode(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                   tg_tensor **mean, tg_tensor **logvar)
{
    need_model(vae, "vae_encode");
    tg_tensor *h = x;
    if (vae->cfg.arch == TG_VAE_CONV)
        h = conv_encoder_features(tp, vae, x);
    else if (vae->cfg.hidden > 0)
        h = tg_relu(tp, tg_dense_apply(tp, &vae->enc1, h));
    tg_tensor *mean_logvar[2];
    tg_split(tp, tg_dense_apply(tp, &vae->enc2, h), 2, mean_logvar);
    *mean = mean_logvar[0];
    *logvar =
        tg_clamp(tp, mean_logvar[1], TG_VAE_LOGVAR_MIN, TG_VAE_LOGVAR_MAX);
}

/* logits = dense(dec2, relu(dense(dec1, z)))   (dense(dec2, z), hidden = 0) */
tg_tensor *tg_vae_decode_logits(tg_tape *tp, const tg_vae *vae, tg_tensor *z)
{
    need_model(vae, "vae_decode_logits");
    if (vae->cfg.arch == TG_VAE_CONV) {
        /* logits = flatten(deconv2(relu(deconv1(relu(fc(z)) as
         *          [B, 64, s/4, s/4])))) */
        int q = vae->side / 4;
        tg_tensor *h = tg_relu(tp, tg_dense_apply(tp, &vae->dec1, z));
        h = tg_unflatten(tp, h, 64, q, q);
        h = tg_conv_transpose2d_apply(tp, &vae->deconv1, h); /* relu fused */
        return tg_flatten(tp, tg_conv_transpose2d_apply(tp, &vae->deconv2, h));
    }
    tg_tensor *h = z;
    if (vae->cfg.hidden > 0)
        h = tg_relu(tp, tg_dense_apply(tp, &vae->dec1, h));
    return tg_dense_apply(tp, &vae->dec2, h);
}

/* rec = -log p(x|z) = sum over pixels of bce(logits, x)          [B, 1]
 *       (cb: minus sum over pixels of log C(sigmoid(logits)))    */
TG_VECTOR_CLONES
static bool any_outside_unit(const float *x, size_t n)
{
    int out = 0;
    for (size_t i = 0; i < n; i++)
        out |= (x[i] < 0.0f) | (x[i] > 1.0f);
    return out;
}

tg_tensor *tg_vae_rec(tg_tape *tp, const tg_vae *vae, tg_tensor *logits,
                      tg_tensor *x)
{
    need_model(vae, "vae_rec");
    /* both likelihoods are of x in [0, 1]: an image of -1s had log p(x) =
     * +14163 nats, a probability above 1, without a word (NaN passes, to
     * the guards that report it). A branch-free pass that vectorises finds
     * whether any pixel is out (the search with a branch per pixel took 30
     * us of a 1.3 ms training step, on one thread), then the first one. */
    bool out = x && any_outside_unit(x->data, x->size);
    for (size_t i = 0; out && i < x->size; i++)
        if (x->data[i] < 0.0f || x->data[i] > 1.0f) {
            char s[64];
            int cols = tg_tensor_cols(x);
            tg_fatal("vae_rec",
                     "x %s: pixel %d of row %d is %g; the likelihood "
                     "takes pixels in [0, 1] (scale the data, e.g. bytes "
                     "/ 255)",
                     tg_shape_str(x, s), (int)(i % (size_t)cols),
                     (int)(i / (size_t)cols), (double)x->data[i]);
        }
    tg_tensor *rec = tg_bce_with_logits(tp, logits, x);
    if (vae->cfg.likelihood == TG_VAE_CB)
        rec = tg_sub(tp, rec, tg_sum_rows(tp, tg_cb_log_norm(tp, logits)));
    return rec;
}

tg_vae_out tg_vae_forward_eps(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                              tg_tensor *eps)
{
    need_model(vae, "vae_forward_eps");
    tg_vae_out o;
    tg_vae_encode(tp, vae, x, &o.mean, &o.logvar);

    /* z = mean + exp(0.5 * logvar) * eps: the reparameterization trick */
    tg_tensor *std = tg_exp(tp, tg_scale(tp, o.logvar, 0.5f));
    o.z = tg_add(tp, o.mean, tg_mul(tp, std, eps));

    o.logits = tg_vae_decode_logits(tp, vae, o.z);

    /* rec  = -log p(x|z) (tg_vae_rec)                          [B, 1]
     * kl   = -0.5 * sum(1 + logvar - mean^2 - exp(logvar))     [B, 1]
     * loss = mean over the batch of (rec + kl) = -ELBO          [1] */
    o.rec = tg_vae_rec(tp, vae, o.logits, x);
    o.kl = tg_kl_normal(tp, o.mean, o.logvar);
    o.loss = tg_mean(tp, tg_add(tp, o.rec, o.kl));
    return o;
}

/* eps ~ N(0, I), drawn here on one thread in row-major order, so a seed gives
 * the same noise whatever the thread count. */
static tg_tensor *normal_noise(tg_tape *tp, int rows, int cols, tg_rng *rng)
{
    tg_tensor *eps = tg_tape_tensor2(tp, rows, cols, false);
    tg_rng_fill_normal(rng, eps->data, eps->size, 0.0f, 1.0f);
    return eps;
}

tg_vae_out tg_vae_forward(tg_tape *tp, const tg_vae *vae, tg_tensor *x,
                          tg_rng *rng)
{
    need_model(vae, "vae_forward");
    tg_tensor *eps = normal_noise(tp, tg_tensor_rows(x), vae->cfg.latent, rng);
    return tg_vae_forward_eps(tp, vae, x, eps);
}

tg_tensor *tg_vae_decode(tg_tape *tp, const tg_vae *vae, tg_tensor *z)
{
    need_model(vae, "vae_decode");
    tg_tensor *logits = tg_vae_decode_logits(tp, vae, z);
    if (vae->cfg.likelihood != TG_VAE_CB)
        return tg_sigmoid(tp, logits);
    tg_tensor *mean = tg_tape_tensor(tp, logits->ndim, logits->shape, false);
    tg_cb_mean(logits->data, mean->data, logits->size);
    return mean;
}

tg_tensor *tg_vae_reconstruct(tg_tape *tp, const tg_vae *vae, tg_tensor *x)
{
    need_model(vae, "vae_reconstruct");
    tg_tensor *mean, *logvar;
    tg_vae_encode(tp, vae, x, &mean, &logvar);
    return tg_vae_decode(tp, vae, mean);
}

tg_tensor *tg_vae_sample(tg_tape *tp, const tg_vae *vae, int n, tg_rng *rng)
{
    need_model(vae, "vae_sample");
    if (n <= 0)
        tg_fatal("vae_sample", "n must be > 0, got %d", n);
    return tg_vae_decode(tp, vae, normal_noise(tp, n, vae->cfg.latent, rng));
}

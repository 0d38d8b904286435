/* Optimizers over a parameter set's contiguous data and grad buffers.
 * Every update is elementwise, so splitting the loop over threads changes
 * nothing in the result. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "parallel.h"
#include "params_split.h"
#include "tg_nn.h"

static tg_optim *optim_new(const char *op, tg_params *ps, tg_optim_kind kind,
                           float lr)
{
    if (!ps)
        tg_fatal(op, "NULL parameter set");
    /* >= 0 as tg_optim_step takes it: a warm-up schedule starts at 0 */
    if (!(lr >= 0.0f) || !isfinite(lr))
        tg_fatal(op, "learning rate must be finite and >= 0, got %g",
                 (double)lr);
    tg_optim *opt = calloc(1, sizeof *opt);
    if (!opt)
        tg_out_of_memory(op, "out of memory");
    size_t n = tg_params_numel(ps);
    tg_params_seal(ps);
    opt->kind = kind;
    opt->params = ps;
    opt->lr = lr;
    opt->beta1 = 0.9f;
    opt->beta2 = 0.999f;
    opt->eps = 1e-8f;
    opt->alpha = 0.99f;
    bool second_moment = kind != TG_OPTIM_SGD;
    opt->m = calloc(n ? n : 1, sizeof(float));
    if (second_moment)
        opt->v = calloc(n ? n : 1, sizeof(float));
    if (!opt->m || (second_moment && !opt->v))
        tg_out_of_memory(op, "out of memory for %zu elements", n);
    return opt;
}

tg_optim *tg_sgd_new(tg_params *ps, float lr, float momentum)
{
    if (!(momentum >= 0.0f && momentum < 1.0f))
        tg_fatal("sgd_new", "momentum must be in [0, 1), got %g",
                 (double)momentum);
    tg_optim *opt = optim_new("sgd_new", ps, TG_OPTIM_SGD, lr);
    opt->momentum = momentum;
    return opt;
}

tg_optim *tg_adam_new(tg_params *ps, float lr)
{
    return optim_new("adam_new", ps, TG_OPTIM_ADAM, lr);
}

tg_optim *tg_adamw_new(tg_params *ps, float lr, float weight_decay)
{
    if (!(weight_decay >= 0.0f) || !isfinite(weight_decay))
        tg_fatal("adamw_new", "weight decay must be >= 0, got %g",
                 (double)weight_decay);
    tg_optim *opt = optim_new("adamw_new", ps, TG_OPTIM_ADAMW, lr);
    opt->weight_decay = weight_decay;
    return opt;
}

tg_optim *tg_rmsprop_new(tg_params *ps, float lr, float momentum)
{
    if (!(momentum >= 0.0f && momentum < 1.0f))
        tg_fatal("rmsprop_new", "momentum must be in [0, 1), got %g",
                 (double)momentum);
    tg_optim *opt = optim_new("rmsprop_new", ps, TG_OPTIM_RMSPROP, lr);
    opt->momentum = momentum;
    return opt;
}

/* Each update below does elements [begin, begin + len) of the buffers: a
 * thread's share of the set (params_split.h). */
typedef struct update {
    tg_optim *opt;
    float *p;
    const float *grad;
    float step_size, sqrt_bc2; /* Adam's bias corrections */
} update;

/* g = grad + wd * p
 * v = momentum * v + g       (v starts at 0, so the first v is g)
 * p -= lr * v
 * p -= lr * (g + momentum v)  (Nesterov: the step looks ahead along v)
 * Momentum 0 is plain SGD, p -= lr * g, and leaves v alone (PyTorch keeps
 * no buffer then: momentum set later starts from v = g, as there). */
static void sgd_share(void *ctx, int thread, size_t begin, size_t len)
{
    (void)thread;
    const update *u = ctx;
    const float lr = u->opt->lr, mu = u->opt->momentum,
                wd = u->opt->weight_decay;
    float *p = u->p + begin, *v = u->opt->m + begin;
    const float *grad = u->grad + begin;
    if (u->opt->nesterov) {
        for (size_t i = 0; i < len; i++) {
            float g = grad[i] + wd * p[i];
            v[i] = mu * v[i] + g;
            p[i] -= lr * (g + mu * v[i]);
        }
        return;
    }
    if (mu == 0.0f) {
        for (size_t i = 0; i < len; i++)
            p[i] -= lr * (grad[i] + wd * p[i]);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        float g = grad[i] + wd * p[i];
        v[i] = mu * v[i] + g;
        p[i] -= lr * v[i];
    }
}

/* torch.optim.RMSprop (centered=False), g = grad + wd * p:
 * v = alpha v + (1 - alpha) g^2
 * momentum 0:  p -= lr * g / (sqrt(v) + eps)  (m left alone, as for SGD)
 * momentum mu: m = mu m + g / (sqrt(v) + eps);  p -= lr * m */
static void rmsprop_share(void *ctx, int thread, size_t begin, size_t len)
{
    (void)thread;
    const update *u = ctx;
    const float lr = u->opt->lr, mu = u->opt->momentum,
                wd = u->opt->weight_decay;
    const float alpha = u->opt->alpha, eps = u->opt->eps;
    float *p = u->p + begin, *m = u->opt->m + begin, *v = u->opt->v + begin;
    const float *grad = u->grad + begin;
    for (size_t i = 0; i < len; i++) {
        float g = grad[i] + wd * p[i];
        v[i] = alpha * v[i] + (1.0f - alpha) * g * g;
        float step = g / (sqrtf(v[i]) + eps);
        if (mu > 0.0f) {
            m[i] = mu * m[i] + step;
            step = m[i];
        }
        p[i] -= lr * step;
    }
}

/* torch.optim.Adam, t = step after increment:
 * m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 * p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * adam_block does elements [0, n) of the arrays it is given. */
typedef struct adam_coef {
    float b1, b2, eps, wd, step_size, sqrt_bc2;
} adam_coef;

TG_VECTOR_CLONES
static void adam_block(adam_coef c, float *p, const float *grad, float *m,
                       float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] + c.wd * p[i];
        m[i] = c.b1 * m[i] + (1.0f - c.b1) * g;
        v[i] = c.b2 * v[i] + (1.0f - c.b2) * g * g;
        float denom = sqrtf(v[i]) / c.sqrt_bc2 + c.eps;
        p[i] -= c.step_size * (m[i] / denom);
    }
}

/* AdamW decays the parameter before Adam's update and keeps the decay out
 * of the moments: p *= 1 - lr * wd. */
TG_VECTOR_CLONES
static void decay_block(float keep, float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] *= keep;
}

static void adam_share(void *ctx, int thread, size_t begin, size_t len)
{
    (void)thread;
    const update *u = ctx;
    const tg_optim *opt = u->opt;
    const bool decoupled = opt->kind == TG_OPTIM_ADAMW;
    adam_coef c = {opt->beta1,   opt->beta2,
                   opt->eps,     decoupled ? 0.0f : opt->weight_decay,
                   u->step_size, u->sqrt_bc2};
    if (decoupled)
        decay_block(1.0f - opt->lr * opt->weight_decay, u->p + begin, len);
    adam_block(c, u->p + begin, u->grad + begin, opt->m + begin, opt->v + begin,
               len);
}

/* Denormals. Late in training some moments decay into the denormal range
 * and stay there: the VAE's decoder rows for the always-black border
 * pixels get gradients near 1e-20, whose squares feed v, and the moments
 * of weights whose gradient is 0 shrink by beta each step. On Intel cores
 * each vector instruction that reads or makes a denormal takes a microcode
 * assist (AMD's do not): Adam went from 12% to 26% of a step after a few
 * thousand steps on a Xeon, the step 25% slower. So each thread runs its
 * share of an update with x86's flush-to-zero and denormals-are-zero
 * modes (MXCSR bits 15 and 6), restoring its own mode after: a value
 * below FLT_MIN (1.2e-38) counts as 0. That moves a parameter only where
 * it is itself that small or its step is (m / (sqrt(v) + eps) below 1e-30);
 * the modes are the same on every x86 CPU, so are the results. */
typedef struct ftz_job {
    params_share_fn fn;
    void *ctx;
} ftz_job;

static void ftz_share(void *ctx, int thread, size_t begin, size_t len)
{
    const ftz_job *j = ctx;
#if defined(__x86_64__) || defined(__i386__)
    const unsigned mode = _mm_getcsr();
    _mm_setcsr(mode | 0x8040u);
    j->fn(j->ctx, thread, begin, len);
    _mm_setcsr(mode);
#else
    j->fn(j->ctx, thread, begin, len);
#endif
}

static const char *kind_name(tg_optim_kind kind)
{
    return kind == TG_OPTIM_SGD       ? "SGD"
           : kind == TG_OPTIM_ADAM    ? "Adam"
           : kind == TG_OPTIM_ADAMW   ? "AdamW"
           : kind == TG_OPTIM_RMSPROP ? "RMSprop"
                                      : "unknown";
}

/* A setting in [lo, hi) (hi_open) or [lo, hi], else abort naming it. */
static void check_range(const char *name, float x, float lo, float hi,
                        bool hi_open)
{
    if (!(x >= lo) || !(hi_open ? x < hi : x <= hi))
        tg_fatal("optim_step", "%s is %g (must be in [%g, %g%s)", name,
                 (double)x, (double)lo, (double)hi, hi_open ? "" : "]");
}

/* The fields a program may change between steps, each checked before it is
 * used: a beta of 1 or more, a negative decay or momentum, or a kind
 * changed to one whose state was never allocated had given NaN weights or
 * a crash without a word. */
static void check_settings(const tg_optim *opt)
{
    /* set by hand or by a schedule each step: NaN made every weight NaN */
    if (!(opt->lr >= 0.0f) || !isfinite(opt->lr))
        tg_fatal("optim_step", "learning rate is %g (must be finite, >= 0)",
                 (double)opt->lr);
    if (opt->kind != TG_OPTIM_SGD && opt->kind != TG_OPTIM_ADAM &&
        opt->kind != TG_OPTIM_ADAMW && opt->kind != TG_OPTIM_RMSPROP)
        tg_fatal("optim_step", "kind %d is not an optimizer kind",
                 (int)opt->kind);
    if ((opt->kind != TG_OPTIM_SGD) != (opt->v != NULL))
        tg_fatal("optim_step",
                 "kind is %s, but the optimizer was made as %s: make a new "
                 "one with its own tg_..._new",
                 kind_name(opt->kind),
                 opt->v ? "Adam, AdamW or RMSprop (SGD would take the first "
                          "moment as its momentum)"
                        : "SGD (no second moment)");
    if (opt->step < 0 || opt->step > TG_OPTIM_MAX_STEP)
        tg_fatal("optim_step", "step is %lld (must be in [0, %lld])",
                 (long long)opt->step, (long long)TG_OPTIM_MAX_STEP);
    check_range("weight_decay", opt->weight_decay, 0.0f, INFINITY, true);
    if (opt->kind == TG_OPTIM_SGD || opt->kind == TG_OPTIM_RMSPROP)
        check_range("momentum", opt->momentum, 0.0f, 1.0f, true);
    if (opt->kind == TG_OPTIM_ADAM || opt->kind == TG_OPTIM_ADAMW) {
        check_range("beta1", opt->beta1, 0.0f, 1.0f, true);
        check_range("beta2", opt->beta2, 0.0f, 1.0f, true);
    }
    if (opt->kind == TG_OPTIM_RMSPROP)
        check_range("alpha", opt->alpha, 0.0f, 1.0f, false);
    if (opt->kind != TG_OPTIM_SGD) /* a denormal counts as 0: 0/0 = NaN */
        check_range("eps", opt->eps, FLT_MIN, INFINITY, true);
}

void tg_optim_step(tg_optim *opt)
{
    if (!opt)
        tg_fatal("optim_step", "NULL optimizer");
    check_settings(opt);
    update u = {.opt = opt,
                .p = tg_params_data(opt->params),
                .grad = tg_params_grad(opt->params)};
    opt->step++;
    const double t = (double)opt->step;
    u.step_size = (float)(opt->lr / (1.0 - pow(opt->beta1, t)));
    u.sqrt_bc2 = (float)sqrt(1.0 - pow(opt->beta2, t));
    params_share_fn fn = opt->kind == TG_OPTIM_SGD       ? sgd_share
                         : opt->kind == TG_OPTIM_RMSPROP ? rmsprop_share
                                                         : adam_share;
    if (opt->kind == TG_OPTIM_SGD && opt->nesterov && !(opt->momentum > 0.0f))
        tg_fatal("optim_step", "Nesterov SGD needs momentum > 0");
    params_for_shares(opt->params, ftz_share, &(ftz_job){fn, &u});
}

void tg_optim_free(tg_optim *opt)
{
    if (!opt)
        return;
    free(opt->m);
    free(opt->v);
    free(opt);
}

/* bnn_mnist's networks: the 784-H-H-10 ReLU classifier as Dense layers
 * (det, ensemble), with dropout after each hidden ReLU (mcdropout) or as
 * variational layers (bbb); training and S-sample prediction. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnn_mnist.h"
#include "cli.h"

/* ---- the network ------------------------------------------------------- */

void net_init(net *m, int method, const options *o, int input, uint64_t seed)
{
    const int dims[4] = {input, o->hidden, o->hidden, BNN_CLASSES};
    const char *names[3] = {"fc1", "fc2", "fc3"};
    *m = (net){.ps = tg_params_new(),
               .bayes = method == BBB,
               .dropout = method == MCDROPOUT ? o->dropout : 0.0f};
    tg_rng init;
    tg_rng_seed(&init, seed, 0);
    for (int l = 0; l < 3; l++)
        if (m->bayes)
            tg_bayes_dense_init(&m->bfc[l], m->ps, names[l], dims[l],
                                dims[l + 1], o->prior_scale, o->rho_init,
                                &init);
        else
            tg_dense_layer_init(&m->fc[l], m->ps, names[l], dims[l],
                                dims[l + 1], TG_INIT_TORCH, &init);
    tg_params_seal(m->ps);
}

/* Layers first..2 on h (layer first's input). */
static tg_tensor *net_from(tg_tape *tp, const net *m, int first, tg_tensor *h,
                           tg_rng *rng, tg_tensor **kl)
{
    for (int l = first; l < 3; l++) {
        if (m->bayes && kl) {
            tg_tensor *layer_kl;
            h = tg_bayes_dense_apply_kl(tp, &m->bfc[l], h, rng, &layer_kl);
            *kl = l ? tg_add(tp, *kl, layer_kl) : layer_kl;
        } else if (m->bayes)
            h = tg_bayes_dense_apply(tp, &m->bfc[l], h, rng);
        else
            h = tg_dense_apply(tp, &m->fc[l], h);
        if (l < 2) {
            h = tg_relu(tp, h);
            if (m->dropout > 0.0f && rng)
                h = tg_dropout(tp, h, m->dropout, rng, TG_DROPOUT_TRAIN);
        }
    }
    return h;
}

tg_tensor *net_logits(tg_tape *tp, const net *m, tg_tensor *x, tg_rng *rng,
                      tg_tensor **kl)
{
    return net_from(tp, m, 0, x, rng, kl);
}

double train(net *m, const options *o, const tg_dataset *train_set,
             uint64_t seed, const char *what, long *seen)
{
    int input = train_set->rows * train_set->cols;
    tg_optim *opt = tg_adam_new(m->ps, o->lr);
    tg_tape *tp = tg_tape_new();
    tg_batcher batcher;
    tg_batcher_init(&batcher, train_set, o->batch, seed);
    float *xbuf = malloc(sizeof(float) * (size_t)o->batch * input);
    int *labels = malloc(sizeof(int) * (size_t)o->batch);
    if (!xbuf || !labels)
        tg_out_of_memory("training batch", "out of memory");
    tg_rng noise;
    tg_rng_seed(&noise, seed, 1);
    int n_batches = tg_batcher_count(&batcher);
    if (o->max_batches && o->max_batches < n_batches)
        n_batches = o->max_batches;
    /* KL warm-up: the KL's weight rises linearly from 1/(W N) at the first
     * step to 1/N at step W = kl_warmup epochs' batches, then stays there. */
    long step = 0, warm = (long)o->kl_warmup * n_batches;
    double t0 = cli_now();
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        tg_batcher_start(&batcher, epoch, 0);
        int n;
        for (int i = 0;
             i < n_batches && (n = tg_batcher_next(&batcher, xbuf, labels)) > 0;
             i++) {
            tg_params_zero_grad(m->ps);
            tg_tape_reset(tp);
            tg_tensor *x = tg_tape_view2(tp, xbuf, n, input);
            bool noisy = m->bayes || m->dropout > 0.0f;
            tg_tensor *kl = NULL, *loss = NULL;
            /* bbb: the NLL averaged over K posterior samples (each row
             * its own weights in each), the KL from the first pass */
            int K = m->bayes ? o->train_samples : 1;
            for (int k = 0; k < K; k++) {
                tg_tensor *nll = tg_loss_softmax_xent(
                    tp,
                    net_logits(tp, m, x, noisy ? &noise : NULL,
                               m->bayes && k == 0 ? &kl : NULL),
                    labels);
                loss = k ? tg_add(tp, loss, nll) : nll;
            }
            if (K > 1)
                loss = tg_scale(tp, loss, 1.0f / (float)K);
            step++;
            if (kl) { /* the negative ELBO per example: NLL + KL / N */
                float beta = warm > step ? (float)step / (float)warm : 1.0f;
                loss = tg_add(tp, loss,
                              tg_scale(tp, kl, beta / (float)train_set->n));
            }
            if (!isfinite(loss->data[0])) {
                /* the KL alone not finite: the prior, not the rate (a
                 * --prior-scale of 1e-30 was told to lower --lr) */
                bool prior = kl && !isfinite(kl->data[0]);
                cli_error(
                    "%s: epoch %d, batch %d: %s is %g; "
                    "stopped (try %s)",
                    what, epoch, i + 1, prior ? "the KL to the prior" : "loss",
                    (double)(prior ? kl->data[0] : loss->data[0]),
                    prior ? "a --prior-scale nearer 1" : "a smaller --lr");
                exit(3);
            }
            tg_backward(tp, loss);
            tg_optim_step(opt);
            *seen += n;
        }
    }
    double dt = cli_now() - t0;
    free(xbuf);
    free(labels);
    tg_batcher_free(&batcher);
    tg_tape_free(tp);
    tg_optim_free(opt);
    return dt;
}

/* ---- prediction -------------------------------------------------------- */

/* Row-wise softmax of logits [n, 10] into out, in double. */
static void softmax_rows(const float *logits, int n, float *out)
{
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * BNN_CLASSES;
        float *p = out + (size_t)i * BNN_CLASSES;
        float mx = z[0];
        for (int k = 1; k < BNN_CLASSES; k++)
            mx = z[k] > mx ? z[k] : mx;
        double e[BNN_CLASSES], sum = 0.0;
        for (int k = 0; k < BNN_CLASSES; k++)
            sum += e[k] = exp((double)z[k] - mx);
        for (int k = 0; k < BNN_CLASSES; k++)
            p[k] = (float)(e[k] / sum);
    }
}

/* bbb's S passes: chunk by chunk, tg_bayes_mlp_sample's logits, then
 * their softmax. */
static void bbb_predict(const net *m, int S, tg_rng *rng, const float *images,
                        int n, int input, float *samples)
{
    float *logits = malloc(sizeof(float) * (size_t)S * EVAL_ROWS * BNN_CLASSES);
    if (!logits)
        tg_out_of_memory("predictions", "out of memory");
    for (int first = 0; first < n; first += EVAL_ROWS) {
        int rows = n - first < EVAL_ROWS ? n - first : EVAL_ROWS;
        tg_bayes_mlp_sample(m->bfc, 3, images + (size_t)first * input, rows, S,
                            rng, logits);
        for (int s = 0; s < S; s++)
            softmax_rows(logits + (size_t)s * rows * BNN_CLASSES, rows,
                         samples + ((size_t)s * n + first) * BNN_CLASSES);
    }
    free(logits);
}

/* samples [S, n, 10]: sample s of row i from net s (ensemble, S = members),
 * or pass s of nets[0] with noise from rng (S passes), or the deterministic
 * pass (S = 1, rng NULL). Rows go in chunks; the noise is drawn chunk by
 * chunk, pass by pass, in order.
 *
 * With S noisy passes of one net the first layer's input is the same image
 * every pass, so what precedes its noise is computed once per chunk: bbb's
 * pre-activation mean and variance (in tg_bayes_mlp_sample, which also runs
 * the passes in parallel without a tape), mcdropout's ReLU output before
 * dropout (kept in shared). Each pass then draws the noise and runs layers
 * 2 and 3 only: the same draws in the same order and the same arithmetic as
 * S full passes, so the same samples, with a third of the GEMM work (the
 * 784-wide layer is two thirds of it). */
void predict(tg_tape *tp, const net *nets, int n_nets, int S, tg_rng *rng,
             const float *images, int n, int input, float *samples)
{
    bool share = n_nets == 1 && rng && (nets[0].bayes || nets[0].dropout > 0);
    if (share && nets[0].bayes) {
        bbb_predict(&nets[0], S, rng, images, n, input, samples);
        return;
    }
    bool was = tg_tape_set_recording(tp, false);
    int width = nets[0].bayes ? nets[0].bfc[0].out : nets[0].fc[0].W->shape[0];
    size_t plane = (size_t)EVAL_ROWS * width;
    float *shared = share ? malloc(sizeof(float) * plane) : NULL;
    if (share && !shared)
        tg_out_of_memory("predictions", "out of memory");
    for (int first = 0; first < n; first += EVAL_ROWS) {
        int rows = n - first < EVAL_ROWS ? n - first : EVAL_ROWS;
        size_t count = (size_t)rows * width;
        const float *chunk = images + (size_t)first * input;
        if (share) {
            tg_tape_reset(tp);
            tg_tensor *x = tg_tape_view2(tp, (float *)chunk, rows, input);
            tg_tensor *a = tg_relu(tp, tg_dense_apply(tp, &nets[0].fc[0], x));
            memcpy(shared, a->data, sizeof(float) * count);
        }
        for (int s = 0; s < S; s++) {
            tg_tape_reset(tp);
            const net *m = n_nets > 1 ? &nets[s] : &nets[0];
            tg_tensor *logits;
            if (share) {
                tg_tensor *h = tg_tape_view2(tp, shared, rows, width);
                h = tg_dropout(tp, h, m->dropout, rng, TG_DROPOUT_TRAIN);
                logits = net_from(tp, m, 1, h, rng, NULL);
            } else {
                tg_tensor *x = tg_tape_view2(tp, (float *)chunk, rows, input);
                logits = net_logits(tp, m, x, rng, NULL);
            }
            softmax_rows(logits->data, rows,
                         samples + ((size_t)s * n + first) * BNN_CLASSES);
        }
    }
    free(shared);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
}

/* mlp_mnist: a digit classifier, Dense(784, hidden) - ReLU - Dense(10) with
 * softmax cross-entropy and Adam, written with the same nn API as the VAE.
 * Prints train loss and test accuracy per epoch. */
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tapegrad.h"

typedef struct options {
    const char *data;
    int epochs, batch, hidden, threads, max_batches;
    int shards;       /* 0: the rank count */
    int rank_timeout; /* seconds; 0: wait for other ranks forever */
    float lr;
    uint64_t seed;
} options;

enum { CLASSES = 10, EVAL_BATCH = 1000, RANK_TIMEOUT = 300 };

static options parse_options(int argc, char **argv)
{
    options o = {0};
    const cli_flag flags[] = {
        CLI_FLAG_DATA(&o.data),
        {"epochs", CLI_INT, &o.epochs, 1, 100000, "N", "5", "epochs"},
        CLI_FLAG_BATCH(&o.batch, "128"),
        {"hidden", CLI_INT, &o.hidden, 1, 65536, "N", "256", "hidden units"},
        {"lr", CLI_FLOAT, &o.lr, 0, 1e6, "X", "1e-3", "Adam learning rate"},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        CLI_FLAG_MAX_BATCHES(&o.max_batches),
        {"shards", CLI_INT, &o.shards, 1, TG_DIST_MAX_SHARDS, "N", NULL,
         "cut each batch into N shards whose gradients are summed in a "
         "fixed order: the model depends on N, never on the number of "
         "ranks (default: the rank count, 1 without mpirun)"},
        {"rank-timeout", CLI_INT, &o.rank_timeout, 0, 86400, "S", "300",
         "under mpirun: stop the job, naming the rank, when a rank is "
         "silent for S seconds, 0 = wait forever"},
    };
    CLI_PARSE(argc, argv, flags,
              "usage: mlp_mnist [options]\n"
              "Trains a one-hidden-layer classifier on MNIST-format IDX "
              "files.\n",
              "Under mpirun, --threads 0 means the machine's cores divided "
              "among its ranks.\n"
              "Exit status: 0 done; 1 standard output could not be written "
              "(a pipe whose reader ended, as with | head, or a full disk: "
              "training stops); 2 bad flags or input data; 3 the loss or "
              "a gradient became NaN/Inf (training stops); 4 under mpirun, a "
              "rank was silent for --rank-timeout seconds. mlp_mnist writes "
              "no files and keeps no checkpoint: Ctrl-C simply stops it.\n");
    return o;
}

typedef struct mlp {
    tg_params *params;
    tg_dense_layer fc1, fc2;
} mlp;

/* logits [B, 10] = dense(fc2, relu(dense(fc1, x))) */
static tg_tensor *mlp_logits(tg_tape *tp, const mlp *m, tg_tensor *x)
{
    return tg_dense_apply(tp, &m->fc2,
                          tg_relu(tp, tg_dense_apply(tp, &m->fc1, x)));
}

/* Fraction of test images whose largest logit is their label. Under MPI each
 * rank counts its share of the test set and the counts are summed. */
static double accuracy(tg_tape *tp, const mlp *m, const tg_dataset *test)
{
    bool was = tg_tape_set_recording(tp, false);
    int input = test->rows * test->cols, correct = 0, first;
    int mine = tg_dist_share(test->n, &first), end = first + mine;
    for (int i = first; i < end; i += EVAL_BATCH) {
        int n = end - i < EVAL_BATCH ? end - i : EVAL_BATCH;
        tg_tape_reset(tp);
        tg_tensor *x =
            tg_tape_view2(tp, test->images + (size_t)i * input, n, input);
        tg_tensor *logits = mlp_logits(tp, m, x);
        for (int r = 0; r < n; r++) {
            const float *row = logits->data + (size_t)r * CLASSES;
            int best = 0;
            for (int k = 1; k < CLASSES; k++)
                if (row[k] > row[best])
                    best = k;
            correct += best == test->labels[i + r];
        }
    }
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    double sum = correct;
    tg_dist_sum(&sum, 1);
    return sum / test->n;
}

/* TG_OK, or an error naming dir's labels file and its first label
 * outside 0..9. */
static tg_status labels_ok(const tg_dataset *ds, const char *dir, bool train)
{
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] >= CLASSES)
            return tg_error(TG_ERR_FORMAT,
                            "%s: label %d of image %d is not 0..9",
                            cli_labels_file(dir, train), ds->labels[i], i);
    return TG_OK;
}

/* The training and test sets of dir; false after saying why not. A rank
 * whose data is unusable stops every rank (none is left waiting in a
 * collective); the lowest such rank says why. */
static bool load_data(const char *dir, tg_dataset *train, tg_dataset *test)
{
    tg_status st = tg_mnist_load(dir, true, train);
    if (st == TG_OK)
        st = tg_mnist_load(dir, false, test);
    if (st == TG_ERR_NOMEM) /* not bad data: this rank stops, as on any */
        cli_out_of_memory(tg_errmsg());
    bool loaded =
        st == TG_OK &&
        ((test->rows == train->rows && test->cols == train->cols) ||
         tg_error(TG_ERR_MISMATCH, "%s: train images are %dx%d, test %dx%d",
                  dir, train->rows, train->cols, test->rows,
                  test->cols) == TG_OK) &&
        labels_ok(train, dir, true) == TG_OK &&
        labels_ok(test, dir, false) == TG_OK;
    if (!tg_dist_all_ok(loaded)) {
        /* named: rank 0's machine may well hold the data */
        if (tg_dist_first_failed() == tg_dist_rank())
            cli_error("%s%s", cli_rank(), tg_errmsg());
        return false;
    }
    return true;
}

/* Under mpirun the ranks must train the same model on the same data: a
 * rank with another --epochs or --batch left the others waiting in a
 * collective for ever, another --lr or --seed trained silently another
 * model. The first differing rank names itself and the flag; all stop. */
static void check_same_job(const options *o, const tg_dataset *train,
                           const tg_dataset *test)
{
    char v[8][32], tr[TG_FINGERPRINT_MAX], te[TG_FINGERPRINT_MAX];
    char data[2 * TG_FINGERPRINT_MAX + 16];
    snprintf(v[0], sizeof v[0], "%d", o->epochs);
    snprintf(v[1], sizeof v[1], "%d", o->batch);
    snprintf(v[2], sizeof v[2], "%d", o->hidden);
    snprintf(v[3], sizeof v[3], "%.9g", (double)o->lr);
    snprintf(v[4], sizeof v[4], "%llu", (unsigned long long)o->seed);
    snprintf(v[5], sizeof v[5], "%d", o->max_batches);
    snprintf(v[6], sizeof v[6], "%d", o->shards);
    snprintf(v[7], sizeof v[7], "%d", o->rank_timeout);
    tg_dataset_fingerprint(train, tr);
    tg_dataset_fingerprint(test, te);
    snprintf(data, sizeof data, "train %s; test %s", tr, te);
    const char *names[] = {"--epochs",
                           "--batch",
                           "--hidden",
                           "--lr",
                           "--seed",
                           "--max-batches",
                           "--shards",
                           "--rank-timeout",
                           "the GEMM (TG_GEMM_KERNEL, TG_GEMM_BLOCKS)",
                           "data (--data)"};
    const char *values[] = {
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], tg_gemm_numerics(),
        data};
    cli_same_job(names, values, 10);
}

/* What training needs: the model, its optimizer and step guard (the same
 * on every rank), a tape, and the batches of the training set. */
typedef struct trainer {
    mlp m;
    tg_optim *opt;
    tg_step_guard guard;
    tg_tape *tp;
    tg_batcher batcher;
    float *xbuf;
    int *labels;
    int input, n_batches;
} trainer;

static void trainer_init(trainer *t, const tg_dataset *train, const options *o)
{
    t->input = train->rows * train->cols;
    t->m.params = tg_params_new();
    tg_rng init;
    tg_rng_seed(&init, o->seed, 0);
    tg_dense_layer_init(&t->m.fc1, t->m.params, "fc1", t->input, o->hidden,
                        TG_INIT_HE, &init);
    tg_dense_layer_init(&t->m.fc2, t->m.params, "fc2", o->hidden, CLASSES,
                        TG_INIT_GLOROT, &init);
    t->opt = tg_adam_new(t->m.params, o->lr);
    tg_step_guard_init(&t->guard, t->m.params, t->opt, NULL);
    tg_dist_broadcast(t->m.params, t->opt);
    t->tp = tg_tape_new();
    tg_batcher_init(&t->batcher, train, o->batch, o->seed);
    t->xbuf = malloc(sizeof(float) * (size_t)o->batch * t->input);
    t->labels = malloc(sizeof(int) * (size_t)o->batch);
    if (!t->xbuf || !t->labels) /* was written through NULL: SIGSEGV */
        tg_out_of_memory("training batch", "out of memory for --batch %d",
                         o->batch);
    t->n_batches = tg_batcher_count(&t->batcher);
    if (o->max_batches && o->max_batches < t->n_batches)
        t->n_batches = o->max_batches;
}

static void trainer_free(trainer *t)
{
    free(t->xbuf);
    free(t->labels);
    tg_batcher_free(&t->batcher);
    tg_tape_free(t->tp);
    tg_optim_free(t->opt);
    tg_params_free(t->m.params);
}

/* One step on the global batch of n rows in t->xbuf; returns its summed
 * loss. A step not taken (a non-finite loss or gradient) stops every rank
 * with exit status 3, naming batch i of epoch. */
static double train_step(trainer *t, int n, int epoch, int i, cli_progress *bar)
{
    /* Each of this rank's shards of the global batch; backward of its
     * summed loss / n. tg_step_finish sums the shards' gradients in shard
     * order: the gradient of the global batch's mean, the same bits for
     * any rank count. */
    int k0, mine = tg_dist_my_shards(&k0), k1 = k0 + mine;
    tg_step s = {0};
    for (int k = k0; k < k1; k++) {
        int first, rows = tg_dist_shard_rows(n, k, &first);
        /* gradients zero here: tg_step_shard and tg_step_finish zero them */
        if (rows > 0) {
            tg_tape_reset(t->tp);
            tg_tensor *x = tg_tape_view2(
                t->tp, t->xbuf + (size_t)first * t->input, rows, t->input);
            tg_tensor *loss = tg_loss_softmax_xent(
                t->tp, mlp_logits(t->tp, &t->m, x), t->labels + first);
            s.loss = (double)loss->data[0] * rows;
            if (isfinite(s.loss))
                tg_backward(t->tp, tg_scale(t->tp, loss, (float)rows / n));
        }
        tg_step_shard(&t->guard, &s);
    }
    tg_step_finish(&t->guard, &s, n);
    if (s.verdict != TG_STEP_TAKEN) {
        cli_progress_end(bar);
        if (tg_dist_rank() == 0)
            cli_error("step %lld (epoch %d, batch %d): %s: %s; "
                      "stopped (try a smaller --lr)",
                      (long long)t->opt->step + 1, epoch, i + 1,
                      s.bad ? s.bad : "loss", s.bad ? s.why : "diverged");
        tg_dist_finalize();
        exit(3); /* main's frame stays live: no leak report */
    }
    return s.loss_sum;
}

/* One epoch, then its line: mean training loss, test accuracy, speed. */
static void train_epoch(trainer *t, int epoch, const tg_dataset *test)
{
    tg_batcher_start(&t->batcher, epoch, 0);
    cli_progress bar;
    cli_progress_start(&bar, t->n_batches);
    double total = 0.0, t0 = cli_now();
    int seen = 0, n;
    for (int i = 0; i < t->n_batches &&
                    (n = tg_batcher_next(&t->batcher, t->xbuf, t->labels)) > 0;
         i++) {
        total += train_step(t, n, epoch, i, &bar);
        seen += n;
        cli_progress_update(&bar, i + 1, seen, total / seen);
    }
    double dt = cli_now() - t0;
    cli_progress_end(&bar);
    printf("epoch %d  train loss %.4f  test accuracy %.2f%%  %.0f "
           "samples/s\n",
           epoch, total / seen, 100.0 * accuracy(t->tp, &t->m, test),
           seen / dt);
    cli_flush_stdout(true);
}

int main(int argc, char **argv)
{
    cli_prog = "mlp_mnist";
    /* The rank timeout covers every collective, from the first (in
     * cli_dist_ready, or a rank's failed flags' agreement) to the barrier
     * before MPI_Finalize: the default until the flags are read, then
     * --rank-timeout, which check_same_job compares. */
    tg_dist_set_timeout(RANK_TIMEOUT);
    cli_dist_start(&argc, &argv);
    options o = parse_options(argc, argv);
    tg_dist_set_timeout(o.rank_timeout);
    cli_dist_ready(o.threads);
    tg_dataset train = {0}, test = {0};
    if (!load_data(o.data, &train, &test)) {
        tg_dataset_free(&train);
        tg_dataset_free(&test);
        tg_dist_finalize();
        return 2;
    }
    check_same_job(&o, &train, &test);
    /* a model past a tg_params' reservation aborted in tg_params_add */
    uint64_t input = (uint64_t)train.rows * (uint64_t)train.cols;
    char what[96];
    snprintf(what, sizeof what, "--hidden %d on %dx%d images", o.hidden,
             train.rows, train.cols);
    cli_check_model_size((input + 1) * (uint64_t)o.hidden +
                             ((uint64_t)o.hidden + 1) * CLASSES,
                         what);
    cli_check_batch_size(o.batch, train.rows, train.cols);
    tg_dist_set_shards(o.shards ? o.shards : tg_dist_size());
    if (tg_dist_rank() == 0 && tg_dist_shards() < tg_dist_size())
        cli_error("note: %d ranks but %d shard%s (--shards): ranks "
                  "%d..%d have no rows to compute",
                  tg_dist_size(), tg_dist_shards(),
                  tg_dist_shards() == 1 ? "" : "s", tg_dist_shards(),
                  tg_dist_size() - 1);
    trainer t;
    trainer_init(&t, &train, &o);
    printf("mlp_mnist: %d train / %d test images, model %d-%d-%d, %zu "
           "parameters, batch %d, Adam lr %g\n",
           train.n, test.n, t.input, o.hidden, CLASSES,
           tg_params_numel(t.m.params), o.batch, (double)o.lr);
    cli_flush_stdout(true);
    for (int epoch = 1; epoch <= o.epochs; epoch++)
        train_epoch(&t, epoch, &test);
    trainer_free(&t);
    tg_dataset_free(&train);
    tg_dataset_free(&test);
    tg_dist_finalize();
    return 0;
}

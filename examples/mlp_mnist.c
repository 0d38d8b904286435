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
    float lr;
    uint64_t seed;
} options;

enum { CLASSES = 10, EVAL_BATCH = 1000 };

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
    };
    CLI_PARSE(argc, argv, flags,
              "usage: mlp_mnist [options]\n"
              "Trains a one-hidden-layer classifier on MNIST-format IDX "
              "files.\n",
              "Under mpirun, --threads 0 means the machine's cores divided "
              "among its ranks.\n"
              "Exit status: 0 done; 2 bad flags or input data; 3 the loss or "
              "a gradient became NaN/Inf (training stops). mlp_mnist writes "
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

static bool labels_ok(const tg_dataset *ds, const char *dir)
{
    for (int i = 0; i < ds->n; i++)
        if (ds->labels[i] >= CLASSES) {
            fprintf(stderr, "mlp_mnist: %s: label %d of image %d is not 0..9\n",
                    dir, ds->labels[i], i);
            return false;
        }
    return true;
}

int main(int argc, char **argv)
{
    cli_prog = "mlp_mnist";
    cli_dist_start(&argc, &argv);
    options o = parse_options(argc, argv);
    cli_dist_ready(o.threads);

    /* A rank that cannot read its data stops every rank; the lowest such
     * rank says why. */
    tg_dataset train = {0}, test = {0};
    bool loaded = tg_mnist_load(o.data, true, &train) == TG_OK &&
                  tg_mnist_load(o.data, false, &test) == TG_OK;
    if (!tg_dist_all_ok(loaded)) {
        if (tg_dist_first_failed() == tg_dist_rank())
            fprintf(stderr, "mlp_mnist: %s\n", tg_errmsg());
        tg_dataset_free(&train);
        tg_dataset_free(&test);
        tg_dist_finalize();
        return 2;
    }
    int input = train.rows * train.cols;
    if (test.rows * test.cols != input || !labels_ok(&train, o.data) ||
        !labels_ok(&test, o.data)) {
        if (test.rows * test.cols != input)
            fprintf(stderr,
                    "mlp_mnist: %s: train and test image sizes differ\n",
                    o.data);
        tg_dataset_free(&train);
        tg_dataset_free(&test);
        tg_dist_finalize();
        return 2;
    }

    mlp m = {.params = tg_params_new()};
    tg_rng init;
    tg_rng_seed(&init, o.seed, 0);
    tg_dense_layer_init(&m.fc1, m.params, "fc1", input, o.hidden, TG_INIT_HE,
                        &init);
    tg_dense_layer_init(&m.fc2, m.params, "fc2", o.hidden, CLASSES,
                        TG_INIT_GLOROT, &init);
    tg_optim *opt = tg_adam_new(m.params, o.lr);
    tg_step_guard guard;
    tg_step_guard_init(&guard, m.params, opt, NULL);
    tg_dist_broadcast(m.params, opt);
    printf("mlp_mnist: %d train / %d test images, model %d-%d-%d, %zu "
           "parameters, batch %d, Adam lr %g\n",
           train.n, test.n, input, o.hidden, CLASSES, tg_params_numel(m.params),
           o.batch, (double)o.lr);

    tg_tape *tp = tg_tape_new();
    tg_batcher batcher;
    tg_batcher_init(&batcher, &train, o.batch, o.seed);
    float *xbuf = malloc(sizeof(float) * (size_t)o.batch * input);
    int *labels = malloc(sizeof(int) * (size_t)o.batch);
    int n_batches = tg_batcher_count(&batcher);
    if (o.max_batches && o.max_batches < n_batches)
        n_batches = o.max_batches;

    for (int epoch = 1; epoch <= o.epochs; epoch++) {
        tg_batcher_start(&batcher, epoch, 0);
        cli_progress bar;
        cli_progress_start(&bar, n_batches);
        double total = 0.0, t0 = cli_now();
        int seen = 0, n;
        for (int i = 0;
             i < n_batches && (n = tg_batcher_next(&batcher, xbuf, labels)) > 0;
             i++) {
            /* This rank's rows [first, first + mine) of the global batch;
             * backward of their summed loss / n, summed over ranks by the
             * all-reduce, is the gradient of the global batch's mean. */
            int first, mine = tg_dist_share(n, &first);
            tg_params_zero_grad(m.params);
            tg_step s = {0};
            if (mine > 0) {
                tg_tape_reset(tp);
                tg_tensor *x = tg_tape_view2(tp, xbuf + (size_t)first * input,
                                             mine, input);
                tg_tensor *loss = tg_loss_softmax_xent(
                    tp, mlp_logits(tp, &m, x), labels + first);
                s.loss = (double)loss->data[0] * mine;
                if (isfinite(s.loss))
                    tg_backward(tp, tg_scale(tp, loss, (float)mine / n));
            }
            tg_step_finish(&guard, &s, n);
            if (s.verdict != TG_STEP_TAKEN) {
                cli_progress_end(&bar);
                if (tg_dist_rank() == 0)
                    fprintf(stderr,
                            "mlp_mnist: step %lld (epoch %d, batch %d): %s: "
                            "%s; stopped (try a smaller --lr)\n",
                            (long long)opt->step + 1, epoch, i + 1,
                            s.bad ? s.bad : "loss", s.bad ? s.why : "diverged");
                tg_dist_finalize();
                exit(3); /* main's frame stays live: no leak report */
            }
            total += s.loss_sum;
            seen += n;
            cli_progress_update(&bar, i + 1, seen, total / seen);
        }
        double dt = cli_now() - t0;
        cli_progress_end(&bar);
        printf("epoch %d  train loss %.4f  test accuracy %.2f%%  %.0f "
               "samples/s\n",
               epoch, total / seen, 100.0 * accuracy(tp, &m, &test), seen / dt);
        fflush(stdout);
    }

    free(xbuf);
    free(labels);
    tg_batcher_free(&batcher);
    tg_tape_free(tp);
    tg_optim_free(opt);
    tg_params_free(m.params);
    tg_dataset_free(&train);
    tg_dataset_free(&test);
    tg_dist_finalize();
    return 0;
}

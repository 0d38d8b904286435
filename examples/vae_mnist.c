/* vae_mnist: trains the VAE of models/vae.c on MNIST-format IDX data.
 *
 * Per epoch it prints train and test -ELBO in nats per sample (the summed
 * per-example loss divided by the number of examples, as
 * /work/shared/bench/torch_vae.py does) with its rec and KL terms, and writes
 * metrics.csv, loss.svg, reconstructions.png, samples.png, manifold.png
 * (latent = 2) and checkpoint.safetensors to --out.
 *
 * Random streams (all from --seed): 0 weights, 1 picture noise, 2 manifold,
 * 1000 + epoch training noise, 2000 + epoch test noise; the batch order
 * depends on (seed, epoch). A checkpoint (each epoch's end, and every
 * --checkpoint-every batches) stores the position in the epoch, the training
 * noise stream's state and the epoch's running sums, so a run resumed from
 * it continues exactly (bit for bit) as if it had not stopped.
 *
 * Exit status: 0 done, 1 an output file could not be written, 2 bad flags
 * or input (data, checkpoint), 3 a non-finite loss or gradient, 130
 * interrupted by SIGINT (after saving a checkpoint). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vae_mnist.h"

#ifndef TG_DEFAULT_DATA_DIR
#define TG_DEFAULT_DATA_DIR "data/mnist"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vae_mnist [options]\n"
            "Trains a variational autoencoder on MNIST-format IDX files.\n\n"
            "  --data DIR        folder with the 4 IDX files, raw or .gz\n"
            "                    (default %s)\n"
            "  --epochs N        epochs in total (default 10)\n"
            "  --batch N         batch size (default 128)\n"
            "  --arch A          mlp (784-400-20 dense layers, default) or\n"
            "                    conv (convolutional encoder and decoder)\n"
            "  --hidden N        hidden units, 0 = no hidden layer (400;\n"
            "                    mlp only)\n"
            "  --latent N        latent dimension (default 20)\n"
            "  --lr X            Adam learning rate (default 1e-3)\n"
            "  --seed N          seed of every random stream (default 1)\n"
            "  --threads N       threads, 0 = all cores (default 0)\n"
            "  --out DIR         output folder (default out/vae_mnist)\n"
            "  --resume FILE     continue from a checkpoint (this run saves\n"
            "                    into --out: over FILE if it is there)\n"
            "  --max-batches N   stop each epoch after N batches\n"
            "  --checkpoint-every N  also save a checkpoint every N batches\n"
            "                    (default: only at the end of each epoch)\n"
            "  --skip-nonfinite  skip steps whose loss or gradient is NaN/Inf\n"
            "                    (default: stop with exit status 3)\n"
            "  --help, --version\n\n"
            "Exit status: 0 done; 1 an output file could not be written;\n"
            "2 bad flags or input (data files, checkpoint); 3 the loss or a\n"
            "gradient became NaN/Inf (nothing non-finite is saved); 130\n"
            "interrupted (Ctrl-C): the step finishes, a checkpoint is saved\n"
            "and the command to resume is printed.\n",
            TG_DEFAULT_DATA_DIR);
}

static options parse_options(int argc, char **argv)
{
    options o = {.data = TG_DEFAULT_DATA_DIR,
                 .out = "out/vae_mnist",
                 .epochs = 10,
                 .batch = 128,
                 .hidden = 400,
                 .latent = 20,
                 .lr = 1e-3f,
                 .seed = 1};
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},
        {"arch", required_argument, NULL, 'A'},
        {"hidden", required_argument, NULL, 'H'},
        {"latent", required_argument, NULL, 'z'},
        {"lr", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {"threads", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},
        {"resume", required_argument, NULL, 'r'},
        {"max-batches", required_argument, NULL, 'm'},
        {"checkpoint-every", required_argument, NULL, 'c'},
        {"skip-nonfinite", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    opterr = 0;
    bool hidden_set = false;
    int c;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o.data = optarg;
            break;
        case 'e':
            o.epochs = cli_int("--epochs", optarg, 1, MAX_EPOCHS);
            break;
        case 'b':
            o.batch = cli_int("--batch", optarg, 1, 65536);
            break;
        case 'A':
            if (!tg_vae_arch_parse(optarg, &o.arch))
                cli_usage_error("--arch is mlp or conv, not '%s'", optarg);
            break;
        case 'H':
            o.hidden = cli_int("--hidden", optarg, 0, TG_VAE_MAX_HIDDEN);
            hidden_set = true;
            break;
        case 'z':
            o.latent = cli_int("--latent", optarg, 1, TG_VAE_MAX_LATENT);
            break;
        case 'l':
            o.lr = cli_float_pos("--lr", optarg, 1e6);
            break;
        case 's':
            o.seed = cli_u64("--seed", optarg);
            break;
        case 't':
            o.threads = cli_int("--threads", optarg, 0, 1024);
            break;
        case 'o':
            o.out = optarg;
            break;
        case 'r':
            o.resume = optarg;
            break;
        case 'm':
            o.max_batches = cli_int("--max-batches", optarg, 1, 1 << 30);
            break;
        case 'c':
            o.checkpoint_every =
                cli_int("--checkpoint-every", optarg, 1, 1 << 30);
            break;
        case 'n':
            o.skip_nonfinite = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("vae_mnist (tapegrad %s)\n", TG_VERSION);
            exit(0);
        default:
            cli_getopt_error(c, argv);
        }
    }
    if (optind < argc)
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    if (!o.data[0] || !o.out[0])
        cli_usage_error("--data and --out need a folder name");
    if (o.arch == TG_VAE_CONV) {
        if (hidden_set && o.hidden != 0)
            cli_usage_error("--hidden is for --arch mlp");
        o.hidden = 0;
    }
    return o;
}

void fail_data(void)
{
    fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
    exit(2);
}

/* errno says why, when the failing call set it. */
void fail_write(const char *path)
{
    fprintf(stderr, "vae_mnist: cannot write %s: %s\n", path,
            errno ? strerror(errno) : "write failed");
    exit(1);
}

/* Rows [first, first + n) of ds as a tape tensor [n, pixels] (a view). */
tg_tensor *rows_on_tape(tg_tape *tp, const tg_dataset *ds, int first, int n)
{
    int pixels = ds->rows * ds->cols;
    return tg_tape_view2(tp, ds->images + (size_t)first * pixels, n, pixels);
}

static double sum_rows(const tg_tensor *t)
{
    double s = 0.0;
    for (size_t i = 0; i < t->size; i++)
        s += t->data[i];
    return s;
}

/* Noise [mine, latent] for rows [first, first + mine) of a batch of n: the
 * whole batch's eps ~ N(0, I) is drawn from rng (n * latent numbers, row by
 * row, as tg_vae_forward draws them) on every rank, and this rank keeps its
 * rows, so under MPI each row gets the noise one process gives it. NULL
 * when mine is 0 (the noise is drawn all the same). */
static tg_tensor *noise_rows(tg_tape *tp, tg_rng *rng, float *buf, int n,
                             int latent, int first, int mine)
{
    tg_rng_fill_normal(rng, buf, (size_t)n * latent, 0.0f, 1.0f);
    if (mine == 0)
        return NULL;
    return tg_tape_view2(tp, buf + (size_t)first * latent, mine, latent);
}

/* Forward and backward of this rank's rows [first, first + mine) of a
 * global batch xbuf [n, input] (all of it in one process), with the noise
 * one process draws for them. Backward runs on
 *     (sum over the rows of rec + kl) / n
 * so the all-reduce (a sum over ranks) gives the gradient of the global
 * batch's mean -ELBO; alone it is exactly the gradient of tg_mean.
 * sums = {1 if the loss is not finite else 0, sum of rec, sum of kl,
 *         1 if this rank was interrupted (SIGINT/SIGTERM) else 0}. */
static void share_step(tg_tape *tp, const tg_vae *vae, float *xbuf,
                       float *epsbuf, int n, tg_rng *noise, double sums[4])
{
    int input = vae->cfg.input, first, mine = tg_dist_share(n, &first);
    tg_tape_reset(tp);
    tg_tensor *eps =
        noise_rows(tp, noise, epsbuf, n, vae->cfg.latent, first, mine);
    sums[0] = sums[1] = sums[2] = 0.0;
    sums[3] = cli_interrupted ? 1.0 : 0.0;
    if (!eps)
        return;
    tg_tensor *x = tg_tape_view2(tp, xbuf + (size_t)first * input, mine, input);
    tg_vae_out out = tg_vae_forward_eps(tp, vae, x, eps);
    if (!isfinite(out.loss->data[0])) {
        sums[0] = 1.0;
        return;
    }
    tg_tensor *rows_sum = tg_sum(tp, tg_add(tp, out.rec, out.kl));
    tg_backward(tp, tg_scale(tp, rows_sum, (float)(1.0 / n)));
    sums[1] = sum_rows(out.rec);
    sums[2] = sum_rows(out.kl);
}

/* Test -ELBO, rec and KL in nats per sample: recording off, batches of
 * EVAL_BATCH, the tape rewound after each. Under MPI each rank takes its
 * share of every batch and the sums are reduced. */
static void evaluate(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                     const options *o, int epoch, epoch_stats *st)
{
    bool was = tg_tape_set_recording(tp, false);
    tg_rng noise;
    tg_rng_seed(&noise, o->seed, 2000 + (uint64_t)epoch);
    float *buf = malloc(sizeof(float) * EVAL_BATCH * (size_t)o->latent);
    if (!buf)
        fail_write(o->out);
    double sums[2] = {0.0, 0.0}; /* rec, kl */
    for (int i = 0; i < test->n; i += EVAL_BATCH) {
        int n = test->n - i < EVAL_BATCH ? test->n - i : EVAL_BATCH;
        int first, mine = tg_dist_share(n, &first);
        tg_tape_reset(tp);
        tg_tensor *eps = noise_rows(tp, &noise, buf, n, o->latent, first, mine);
        if (!eps)
            continue;
        tg_vae_out out = tg_vae_forward_eps(
            tp, vae, rows_on_tape(tp, test, i + first, mine), eps);
        sums[0] += sum_rows(out.rec);
        sums[1] += sum_rows(out.kl);
    }
    free(buf);
    tg_dist_sum(sums, 2);
    double rec = sums[0], kl = sums[1];
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    st->test_rec = rec / test->n;
    st->test_kl = kl / test->n;
    st->test = st->test_rec + st->test_kl;
}

int main(int argc, char **argv)
{
    cli_prog = "vae_mnist";
    tg_dist_init(&argc, &argv);
    if (tg_dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
        return 1; /* only rank 0 prints progress and results */
    cli_parse_begin();
    options o = parse_options(argc, argv);
    cli_parse_end();
    tg_set_threads(o.threads ? o.threads : tg_dist_default_threads());
    cli_catch_sigint();

    /* A rank that cannot read its data stops every rank; the lowest such
     * rank says why. */
    tg_dataset train = {0}, test = {0};
    bool loaded = tg_mnist_load(o.data, true, &train) == TG_OK &&
                  tg_mnist_load(o.data, false, &test) == TG_OK;
    if (!tg_dist_all_ok(loaded)) {
        if (tg_dist_first_failed() == tg_dist_rank())
            fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
        tg_dist_finalize();
        exit(2);
    }
    if (tg_dist_rank() == 0) {
        const char *use = "vae_mnist does not use labels";
        cli_note_labels(&train, o.data, 10, use);
        cli_note_labels(&test, o.data, 10, use);
    }
    int input = train.rows * train.cols;
    if (test.rows * test.cols != input) {
        fprintf(stderr, "vae_mnist: %s: train images are %dx%d, test %dx%d\n",
                o.data, train.rows, train.cols, test.rows, test.cols);
        exit(2);
    }

    if (o.arch == TG_VAE_CONV &&
        (train.rows != train.cols || train.rows % 4 != 0)) {
        fprintf(stderr,
                "vae_mnist: %s: --arch conv needs square images with a side "
                "that is a multiple of 4, not %dx%d\n",
                o.data, train.rows, train.cols);
        exit(2);
    }
    tg_vae *vae = tg_vae_new((tg_vae_config){.input = input,
                                             .hidden = o.hidden,
                                             .latent = o.latent,
                                             .arch = o.arch},
                             o.seed);
    tg_params *ps = tg_vae_params(vae);
    tg_optim *opt = tg_adam_new(ps, o.lr);
    tg_batcher batcher;
    tg_batcher_init(&batcher, &train, o.batch, o.seed);
    int n_batches = tg_batcher_count(&batcher);
    if (o.max_batches && o.max_batches < n_batches)
        n_batches = o.max_batches;
    /* Rank 0 reads the checkpoint (and stops the job if it cannot) and
     * sends weights, Adam state and position to the others. */
    tg_vae_position pos = {0};
    if (o.resume && tg_dist_rank() == 0)
        pos = resume(&o, vae, opt, n_batches);
    tg_dist_broadcast(ps, opt);
    if (o.resume)
        broadcast_pos(&pos);
    if (pos.epoch >= o.epochs) {
        printf("vae_mnist: %s has trained %lld epoch%s%s, --epochs is %d: "
               "nothing to train, nothing written (pass a larger --epochs "
               "to go on)\n",
               o.resume, (long long)pos.epoch, pos.epoch == 1 ? "" : "s",
               pos.batch ? " and part of the next" : "", o.epochs);
        tg_dist_finalize();
        exit(0);
    }
    /* Only now, with the data and checkpoint accepted: bad input leaves no
     * output behind. */
    if (!tg_dist_all_ok(tg_dist_rank() != 0 || cli_prepare_out_dir(o.out))) {
        tg_dist_finalize();
        exit(1);
    }
    epoch_stats *hist = calloc(2 * (size_t)o.epochs + 1, sizeof *hist);
    int n_hist = read_metrics(&o, hist, (int)pos.epoch + 1, o.epochs);

    printf("vae_mnist: %d train / %d test images of %dx%d from %s\n", train.n,
           test.n, train.rows, train.cols, o.data);
    printf("model %s %d-%d-%d, %zu parameters, batch %d, Adam lr %g, seed "
           "%llu, %d threads, gemm %s\n",
           tg_vae_arch_name(o.arch), input, o.hidden, o.latent,
           tg_params_numel(ps), o.batch, (double)o.lr,
           (unsigned long long)o.seed, tg_get_threads(), tg_gemm_kernel());
    if (o.resume)
        printf("resumed from %s after epoch %lld, batch %lld (step %lld)\n",
               o.resume, (long long)pos.epoch, (long long)pos.batch,
               (long long)opt->step);
    fflush(stdout);

    tg_tape *tp = tg_tape_new();
    float *xbuf = malloc(sizeof(float) * (size_t)o.batch * input);
    float *epsbuf = malloc(sizeof(float) * (size_t)o.batch * o.latent);

    for (int epoch = (int)pos.epoch + 1; epoch <= o.epochs; epoch++) {
        if (pos.batch == 0) {
            pos = (tg_vae_position){.epoch = epoch - 1};
            tg_rng_seed(&pos.noise, o.seed, 1000 + (uint64_t)epoch);
        }
        tg_batcher_start(&batcher, epoch, (int)pos.batch);
        cli_progress bar;
        cli_progress_start(&bar, n_batches);
        double t0 = cli_now(), allreduce0 = tg_dist_allreduce_seconds();
        int64_t seen_before = pos.seen, batch_before = pos.batch;
        int n;
        for (int i = (int)pos.batch;
             i < n_batches && (n = tg_batcher_next(&batcher, xbuf, NULL)) > 0;
             i++) {
            tg_params_zero_grad(ps);
            /* loss not finite, rec, kl of this rank's rows, interrupted */
            double sums[4];
            share_step(tp, vae, xbuf, epsbuf, n, &pos.noise, sums);
            /* Under MPI one small all-reduce tells every rank whether any
             * loss was not finite, and gives the global batch's sums; the
             * guard then sees the same all-reduced gradients everywhere,
             * so every rank takes the same decision. */
            tg_dist_sum(sums, 4);
            /* NaN/Inf guard: the loss, then every value and gradient */
            const char *bad = "loss", *why = "is not finite";
            if (sums[0] == 0.0) {
                tg_dist_allreduce_grads(ps);
                bad = tg_params_nonfinite(ps, &why);
            }
            if (bad && !o.skip_nonfinite) {
                cli_progress_end(&bar);
                if (tg_dist_rank() == 0)
                    fprintf(stderr,
                            "vae_mnist: step %lld (epoch %d, batch %d): %s: "
                            "%s; stopped, no checkpoint of it written (try a "
                            "smaller --lr, or --skip-nonfinite)\n",
                            (long long)opt->step + 1, epoch, i + 1, bad, why);
                tg_dist_finalize();
                exit(3);
            }
            if (bad) {
                pos.skipped++;
            } else {
                tg_optim_step(opt);
                pos.rec += sums[1];
                pos.kl += sums[2];
                pos.seen += n;
            }
            pos.batch = i + 1;
            cli_progress_update(&bar, i + 1, (int)pos.seen,
                                (pos.rec + pos.kl) / pos.seen);
            int64_t done = (int64_t)(epoch - 1) * n_batches + pos.batch;
            if (o.checkpoint_every && done % o.checkpoint_every == 0 &&
                pos.batch < n_batches)
                save_checkpoint(&o, vae, opt, &pos);
            /* every rank saw the same sums[3]: all stop after this step */
            if (sums[3] > 0.0 && pos.batch < n_batches) {
                cli_progress_end(&bar);
                stop_interrupted(&o, argv[0], vae, opt, &pos);
            }
        }
        double dt = cli_now() - t0;
        double allreduce_dt = tg_dist_allreduce_seconds() - allreduce0;
        int steps = (int)(pos.batch - batch_before);
        cli_progress_end(&bar);
        double rec = pos.rec, kl = pos.kl;
        int64_t seen = pos.seen;
        int64_t skipped = pos.skipped;
        pos = (tg_vae_position){.epoch = epoch, .noise = pos.noise};

        epoch_stats *st = &hist[n_hist++];
        st->epoch = epoch;
        st->step = opt->step;
        st->train_rec = rec / seen;
        st->train_kl = kl / seen;
        st->train = st->train_rec + st->train_kl;
        st->samples_per_s = (seen - seen_before) / dt;
        evaluate(tp, vae, &test, &o, epoch, st);
        printf("epoch %d  train -ELBO %.2f (rec %.2f, KL %.2f)  test -ELBO "
               "%.2f (rec %.2f, KL %.2f)  %.0f samples/s\n",
               epoch, st->train, st->train_rec, st->train_kl, st->test,
               st->test_rec, st->test_kl, st->samples_per_s);
        if (tg_dist_size() > 1 && steps > 0)
            printf("epoch %d  %d ranks: %.2f ms per step, of which all-reduce "
                   "%.2f ms (rank 0)\n",
                   epoch, tg_dist_size(), 1e3 * dt / steps,
                   1e3 * allreduce_dt / steps);
        if (skipped)
            printf("epoch %d  skipped %lld non-finite step%s\n", epoch,
                   (long long)skipped, skipped == 1 ? "" : "s");
        fflush(stdout);

        /* the checkpoint first: if it cannot be saved, the files that
         * describe it are not replaced either */
        save_checkpoint(&o, vae, opt, &pos);
        if (tg_dist_rank() == 0) {
            write_metrics(&o, hist, n_hist);
            write_pictures(tp, vae, &test, &o);
        }
        if (cli_interrupted && epoch < o.epochs)
            stop_interrupted(&o, argv[0], vae, opt, &pos);
    }
    printf("wrote %s/{metrics.csv, loss.svg, reconstructions.png, "
           "samples.png%s, checkpoint.safetensors}\n",
           o.out, o.latent == 2 ? ", manifold.png" : "");

    free(xbuf);
    free(epsbuf);
    free(hist);
    tg_batcher_free(&batcher);
    tg_tape_free(tp);
    tg_optim_free(opt);
    tg_vae_free(vae);
    tg_dataset_free(&train);
    tg_dataset_free(&test);
    tg_dist_finalize();
    return 0;
}

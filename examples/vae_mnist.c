/* vae_mnist: trains the VAE of models/vae.c on MNIST-format IDX data.
 *
 * Per epoch it prints train and test -ELBO in nats per sample (the summed
 * per-example loss divided by the number of examples, as
 * /work/shared/bench/torch_vae.py does) with its rec and KL terms, and writes
 * metrics.csv, loss.svg, reconstructions.png, samples.png, manifold.png
 * (latent = 2) and checkpoint.safetensors to --out.
 *
 * Random streams (all from --seed): 0 weights, 1 picture noise, 1000 +
 * epoch training noise, 2000 + epoch test noise (the manifold is a fixed
 * grid of normal quantiles); the batch order
 * depends on (seed, epoch). A checkpoint (each epoch's end, and every
 * --checkpoint-every batches) stores the position in the epoch, the training
 * noise stream's state and the epoch's running sums, so a run resumed from
 * it continues exactly (bit for bit) as if it had not stopped.
 *
 * Exit status: 0 done, 1 an output file could not be written, 2 bad flags
 * or input (data, checkpoint), 3 a non-finite loss or gradient, 130
 * interrupted by SIGINT, SIGTERM or SIGHUP (after saving a checkpoint).
 * A closed stdout (| head) only costs the progress lines (a note on
 * stderr); the files and the exit status are the run's. */
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

static options parse_options(int argc, char **argv)
{
    options o = {.hidden = -1}; /* --hidden not given: 400 for mlp */
    const char *arch = NULL, *likelihood = NULL;
    const cli_flag flags[] = {
        CLI_FLAG_DATA_IMAGES(&o.data),
        {"epochs", CLI_INT, &o.epochs, 1, MAX_EPOCHS, "N", "10",
         "epochs in total"},
        CLI_FLAG_BATCH(&o.batch, "128"),
        {"arch", CLI_STR, &arch, 0, 0, "A", "mlp",
         "mlp, 784-400-20 dense layers, or conv, a convolutional encoder "
         "and decoder"},
        {"hidden", CLI_INT, &o.hidden, 0, TG_VAE_MAX_HIDDEN, "N", NULL,
         "hidden units, 0 = no hidden layer (400; mlp only)"},
        {"latent", CLI_INT, &o.latent, 1, TG_VAE_MAX_LATENT, "N", "20",
         "latent dimension"},
        {"likelihood", CLI_STR, &likelihood, 0, 0, "L", "bernoulli",
         "the decoder's p(x|z): bernoulli or cb, the continuous Bernoulli, "
         "a density on [0, 1]: its -ELBO is not comparable with the "
         "Bernoulli's, pictures show its mean"},
        {"holdout", CLI_INT, &o.holdout, 0, MAX_HOLDOUT, "N", "0",
         "keep the last N training images out of training, for vae_score "
         "to fit its reference statistics on"},
        {"lr", CLI_FLOAT, &o.lr, 0, 1e6, "X", "1e-3", "Adam learning rate"},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        CLI_FLAG_OUT(&o.out, "out/vae_mnist"),
        {"resume", CLI_STR, &o.resume, 0, 0, "FILE", NULL,
         "continue from a checkpoint; this run saves into --out, over FILE "
         "if it is there"},
        CLI_FLAG_MAX_BATCHES(&o.max_batches),
        {"checkpoint-every", CLI_INT, &o.checkpoint_every, 1, 1 << 30, "N",
         NULL,
         "also save a checkpoint every N batches (default: only at the end "
         "of each epoch)"},
        {"shards", CLI_INT, &o.shards, 1, TG_DIST_MAX_SHARDS, "N", NULL,
         "cut each batch into N shards whose gradients are summed in a "
         "fixed order: the model depends on N, never on the number of "
         "ranks (default: the checkpoint's, else the rank count, 1 without "
         "mpirun)"},
        {"rank-timeout", CLI_INT, &o.rank_timeout, 0, 86400, "S", "300",
         "under mpirun: stop the job, naming the rank, when a rank is "
         "silent for S seconds, 0 = wait forever"},
        {"allow-data-change", CLI_BOOL, &o.allow_data_change, 0, 0, NULL, NULL,
         "resume on data other than the checkpoint's (its fingerprint "
         "differs)"},
        {"skip-nonfinite", CLI_BOOL, &o.skip_nonfinite, 0, 0, NULL, NULL,
         "skip steps whose loss or gradient is NaN/Inf (default: stop with "
         "exit status 3)"},
    };
    CLI_PARSE(argc, argv, flags,
              "usage: vae_mnist [options]\n"
              "Trains a variational autoencoder on MNIST-format IDX files.\n",
              "Under mpirun, --threads 0 means the machine's cores divided "
              "among its ranks.\n"
              "Exit status: 0 done; 1 an output file could not be written; "
              "2 bad flags or input (data files, checkpoint); 3 the loss or "
              "a gradient became NaN/Inf, or the run diverged (no such "
              "weights are saved); 4 under mpirun, a rank was silent for "
              "--rank-timeout seconds; 130 interrupted (Ctrl-C, SIGTERM, or "
              "SIGHUP when the terminal closes): the step "
              "finishes, a checkpoint is "
              "saved and the command to resume is printed.\n"
              "A closed standard output (a pipe whose reader ended, as with "
              "| head) does not stop training: a note on stderr, every file "
              "is written to --out, and the exit status is the run's (0 "
              "when it finished).\n");
    if (!tg_vae_arch_parse(arch, &o.arch))
        cli_usage_error("--arch is mlp or conv, not '%s'", arch);
    if (!tg_vae_likelihood_parse(likelihood, &o.likelihood))
        cli_usage_error("--likelihood is bernoulli or cb, not '%s'",
                        likelihood);
    bool hidden_set = o.hidden >= 0;
    if (!hidden_set)
        o.hidden = 400;
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
    cli_error("%s", tg_errmsg());
    exit(2);
}

void fail_read(tg_status st)
{
    if (st == TG_ERR_NOMEM) /* not bad input */
        cli_out_of_memory(tg_errmsg());
    if (st != TG_OK)
        fail_data();
}

/* errno says why, when the failing call set it. */
void fail_write(const char *path)
{
    cli_error("cannot write %s: %s", path,
              errno ? strerror(errno) : "write failed");
    exit(1);
}

int main(int argc, char **argv)
{
    cli_prog = "vae_mnist";
    cli_catch_sigint(); /* a stop signal while starting: stop after step 1 */
    /* the rank timeout covers every collective, from the first (in
     * cli_dist_ready, or a rank's failed flags' agreement) to the barrier
     * before MPI_Finalize: the default until the flags are read, then
     * --rank-timeout, which check_same_job compares */
    tg_dist_set_timeout(300);
    cli_dist_start(&argc, &argv);
    options o = parse_options(argc, argv);
    tg_dist_set_timeout(o.rank_timeout);
    cli_dist_ready(o.threads);
    cli_catch_sigint();

    run r;
    run_setup(&r, &o, argv[0]);
    for (int epoch = (int)r.pos.epoch + 1; epoch <= o.epochs; epoch++) {
        train_epoch(&r, epoch);
        end_epoch(&r, epoch);
    }
    printf("wrote %s/{metrics.csv, loss.svg, reconstructions.png, "
           "samples.png%s, checkpoint.safetensors}\n",
           o.out, o.latent == 2 ? ", manifold.png" : "");
    cli_flush_stdout(false);
    run_free(&r);
    tg_dist_finalize();
    return 0;
}

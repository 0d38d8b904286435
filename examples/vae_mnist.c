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
            "  --likelihood L    the decoder's p(x|z): bernoulli (default)\n"
            "                    or cb, the continuous Bernoulli, a density\n"
            "                    on [0, 1] (its -ELBO is not comparable\n"
            "                    with the Bernoulli's; pictures show its\n"
            "                    mean)\n"
            "  --holdout N       keep the last N training images out of\n"
            "                    training (vae_score fits its reference\n"
            "                    statistics on them; default 0)\n"
            "  --lr X            Adam learning rate (default 1e-3)\n"
            "  --seed N          seed of every random stream (default 1)\n"
            "  --threads N       threads, 0 = all cores (default 0)\n"
            "  --out DIR         output folder (default out/vae_mnist)\n"
            "  --resume FILE     continue from a checkpoint (this run saves\n"
            "                    into --out: over FILE if it is there)\n"
            "  --max-batches N   stop each epoch after N batches\n"
            "  --checkpoint-every N  also save a checkpoint every N batches\n"
            "                    (default: only at the end of each epoch)\n"
            "  --rank-timeout S  under mpirun: stop the job, naming the rank,\n"
            "                    when a rank is silent for S seconds (300;\n"
            "                    0 = wait forever)\n"
            "  --allow-data-change  resume on data other than the\n"
            "                    checkpoint's (its fingerprint differs)\n"
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
                 .seed = 1,
                 .rank_timeout = 300};
    const char *arch = "mlp", *likelihood = "bernoulli";
    o.hidden = -1; /* not given: 400 for mlp */
    const cli_flag flags[] = {
        {"data", CLI_STR, &o.data, 0, 0},
        {"epochs", CLI_INT, &o.epochs, 1, MAX_EPOCHS},
        CLI_FLAG_BATCH(&o.batch),
        {"arch", CLI_STR, &arch, 0, 0},
        {"hidden", CLI_INT, &o.hidden, 0, TG_VAE_MAX_HIDDEN},
        {"latent", CLI_INT, &o.latent, 1, TG_VAE_MAX_LATENT},
        {"likelihood", CLI_STR, &likelihood, 0, 0},
        {"lr", CLI_FLOAT, &o.lr, 0, 1e6},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        {"out", CLI_STR, &o.out, 0, 0},
        {"resume", CLI_STR, &o.resume, 0, 0},
        CLI_FLAG_MAX_BATCHES(&o.max_batches),
        {"checkpoint-every", CLI_INT, &o.checkpoint_every, 1, 1 << 30},
        {"holdout", CLI_INT, &o.holdout, 0, 1 << 30},
        {"skip-nonfinite", CLI_BOOL, &o.skip_nonfinite, 0, 0},
        {"allow-data-change", CLI_BOOL, &o.allow_data_change, 0, 0},
        {"rank-timeout", CLI_INT, &o.rank_timeout, 0, 86400},
    };
    CLI_PARSE(argc, argv, flags, usage);
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

int main(int argc, char **argv)
{
    cli_prog = "vae_mnist";
    cli_catch_sigint(); /* a stop signal while starting: stop after step 1 */
    tg_dist_init(&argc, &argv);
    if (tg_dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
        return 1; /* only rank 0 prints progress and results */
    cli_parse_begin();
    options o = parse_options(argc, argv);
    cli_parse_end();
    tg_set_threads(o.threads ? o.threads : tg_dist_default_threads());
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
    run_free(&r);
    tg_dist_finalize();
    return 0;
}

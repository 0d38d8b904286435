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
                 .seed = 1};
    static const struct option longopts[] = {
        {"data", required_argument, NULL, 'd'},
        {"epochs", required_argument, NULL, 'e'},
        {"batch", required_argument, NULL, 'b'},
        {"arch", required_argument, NULL, 'a'},
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
        {"allow-data-change", no_argument, NULL, 'D'},
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
        case 'a':
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
        case 'D':
            o.allow_data_change = true;
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

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
#include "png.h"
#include "svg.h"
#include "tapegrad.h"

#ifndef TG_DEFAULT_DATA_DIR
#define TG_DEFAULT_DATA_DIR "data/mnist"
#endif

typedef struct options {
    const char *data, *out, *resume;
    int epochs, batch, hidden, latent, threads, max_batches;
    int checkpoint_every; /* batches; 0: only at each epoch's end */
    bool skip_nonfinite;
    float lr;
    uint64_t seed;
} options;

/* Where training stands: epoch epochs finished and batch batches of the
 * next one, with that epoch's noise stream and running sums. */
typedef struct train_pos {
    int epoch, batch, seen;
    tg_rng noise;
    double rec, kl;
    int64_t skipped;
} train_pos;

/* One row of metrics.csv. */
typedef struct epoch_stats {
    int epoch;
    int64_t step;
    double train, train_rec, train_kl, test, test_rec, test_kl;
    double samples_per_s;
} epoch_stats;

enum { MAX_EPOCHS = 100000, EVAL_BATCH = 1000 };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vae_mnist [options]\n"
            "Trains a variational autoencoder on MNIST-format IDX files.\n\n"
            "  --data DIR        folder with the 4 IDX files, raw or .gz\n"
            "                    (default %s)\n"
            "  --epochs N        epochs in total (default 10)\n"
            "  --batch N         batch size (default 128)\n"
            "  --hidden N        hidden units, 0 = no hidden layer (400)\n"
            "  --latent N        latent dimension (default 20)\n"
            "  --lr X            Adam learning rate (default 1e-3)\n"
            "  --seed N          seed of every random stream (default 1)\n"
            "  --threads N       threads, 0 = all cores (default 0)\n"
            "  --out DIR         output folder (default out/vae_mnist)\n"
            "  --resume FILE     continue from a checkpoint\n"
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
        case 'H':
            o.hidden = cli_int("--hidden", optarg, 0, 65536);
            break;
        case 'z':
            o.latent = cli_int("--latent", optarg, 1, 4096);
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
    return o;
}

static void fail_data(void)
{
    fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
    exit(2);
}

/* errno says why, when the failing call set it. */
static void fail_write(const char *path)
{
    fprintf(stderr, "vae_mnist: cannot write %s: %s\n", path,
            errno ? strerror(errno) : "write failed");
    exit(1);
}

/* Copies rows [first, first + n) of ds into a new tape tensor [n, pixels]. */
static tg_tensor *rows_on_tape(tg_tape *tp, const tg_dataset *ds, int first,
                               int n)
{
    size_t pixels = (size_t)ds->rows * ds->cols;
    tg_tensor *x = tg_tape_tensor2(tp, n, (int)pixels, false);
    memcpy(x->data, ds->images + (size_t)first * pixels,
           (size_t)n * pixels * sizeof(float));
    return x;
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
    tg_tensor *eps = tg_tape_tensor2(tp, mine, latent, false);
    memcpy(eps->data, buf + (size_t)first * latent,
           sizeof(float) * (size_t)mine * latent);
    return eps;
}

/* Forward and backward of this rank's rows [first, first + mine) of a
 * global batch xbuf [n, input] (all of it in one process), with the noise
 * one process draws for them. Backward runs on
 *     (sum over the rows of rec + kl) / n
 * so the all-reduce (a sum over ranks) gives the gradient of the global
 * batch's mean -ELBO; alone it is exactly the gradient of tg_mean.
 * sums = {1 if the loss is not finite else 0, sum of rec, sum of kl}. */
static void share_step(tg_tape *tp, const tg_vae *vae, const float *xbuf,
                       float *epsbuf, int n, tg_rng *noise, double sums[3])
{
    int input = vae->cfg.input, first, mine = tg_dist_share(n, &first);
    tg_tape_reset(tp);
    tg_tensor *eps =
        noise_rows(tp, noise, epsbuf, n, vae->cfg.latent, first, mine);
    sums[0] = sums[1] = sums[2] = 0.0;
    if (!eps)
        return;
    tg_tensor *x = tg_tape_tensor2(tp, mine, input, false);
    memcpy(x->data, xbuf + (size_t)first * input,
           sizeof(float) * (size_t)mine * input);
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

/* Standard normal quantile by bisection on Phi(x) = erfc(-x / sqrt 2) / 2. */
static double normal_quantile(double p)
{
    double lo = -10.0, hi = 10.0;
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void write_grid(const char *path, const float *tiles, int n, int side,
                       int cols, int scale)
{
    int w, h;
    uint8_t *img = png_tile_grid(tiles, n, side, side, cols, scale, &w, &h);
    const char *tmp = cli_tmp(path);
    errno = 0;
    if (!img || !cli_commit(tmp, path, png_write_gray(tmp, w, h, img)))
        fail_write(path);
    free(img);
}

/* reconstructions.png: rows of 16 test inputs, each above its
 * reconstruction (decoded at the posterior mean); samples.png: 64 decoded
 * prior draws (the same z every epoch); manifold.png (latent = 2): decoded
 * 20 x 20 grid of z at normal quantiles 0.05 .. 0.95. */
static void write_pictures(tg_tape *tp, const tg_vae *vae,
                           const tg_dataset *test, const options *o)
{
    enum { COLS = 16, PAIRS = 2, SIDE_N = 20 };
    int side = test->rows, pixels = test->rows * test->cols;
    if (test->rows != test->cols)
        return; /* pictures assume square images */
    bool was = tg_tape_set_recording(tp, false);
    float *tiles = malloc(sizeof(float) * (size_t)pixels * SIDE_N * SIDE_N);
    if (!tiles)
        fail_write(o->out);

    int n = COLS * PAIRS <= test->n ? COLS * PAIRS : test->n;
    tg_tape_reset(tp);
    tg_tensor *x = rows_on_tape(tp, test, 0, n);
    tg_tensor *rec = tg_vae_reconstruct(tp, vae, x);
    int t = 0;
    for (int r = 0; r * COLS < n; r++) {
        int m = n - r * COLS < COLS ? n - r * COLS : COLS;
        size_t off = (size_t)r * COLS * pixels, len = (size_t)m * pixels;
        memcpy(tiles + (size_t)t * pixels, x->data + off, len * sizeof(float));
        memset(tiles + (size_t)(t + m) * pixels, 0,
               (size_t)(COLS - m) * pixels * sizeof(float));
        t += COLS;
        memcpy(tiles + (size_t)t * pixels, rec->data + off,
               len * sizeof(float));
        t += m;
    }
    write_grid(cli_path(o->out, "reconstructions.png"), tiles, t, side, COLS,
               2);

    tg_rng rng;
    tg_rng_seed(&rng, o->seed, 1);
    tg_tape_reset(tp);
    tg_tensor *samples = tg_vae_sample(tp, vae, 64, &rng);
    write_grid(cli_path(o->out, "samples.png"), samples->data, 64, side, 8, 2);

    if (vae->cfg.latent == 2) {
        tg_tape_reset(tp);
        tg_tensor *z = tg_tape_tensor2(tp, SIDE_N * SIDE_N, 2, false);
        for (int i = 0; i < SIDE_N; i++)
            for (int j = 0; j < SIDE_N; j++) {
                /* row i from top = z2 high to low, column j = z1 */
                double pi = 0.05 + 0.9 * (SIDE_N - 1 - i) / (SIDE_N - 1);
                double pj = 0.05 + 0.9 * j / (SIDE_N - 1);
                z->data[2 * (i * SIDE_N + j)] = (float)normal_quantile(pj);
                z->data[2 * (i * SIDE_N + j) + 1] = (float)normal_quantile(pi);
            }
        tg_tensor *dec = tg_vae_decode(tp, vae, z);
        write_grid(cli_path(o->out, "manifold.png"), dec->data, SIDE_N * SIDE_N,
                   side, SIDE_N, 1);
    }
    free(tiles);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
}

static void write_metrics(const options *o, const epoch_stats *hist, int n)
{
    const char *path = cli_path(o->out, "metrics.csv");
    const char *tmp = cli_tmp(path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        fail_write(path);
    fprintf(f, "epoch,step,train_neg_elbo,train_rec,train_kl,test_neg_elbo,"
               "test_rec,test_kl,samples_per_s\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "%d,%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f,%.1f\n",
                hist[i].epoch, (long long)hist[i].step, hist[i].train,
                hist[i].train_rec, hist[i].train_kl, hist[i].test,
                hist[i].test_rec, hist[i].test_kl, hist[i].samples_per_s);
    errno = 0;
    bool ok = !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!cli_commit(tmp, path, ok))
        fail_write(path);

    size_t points = n > 0 ? (size_t)n : 1;
    double *xy = malloc(sizeof(double) * 3 * points);
    if (!xy)
        fail_write(path);
    for (int i = 0; i < n; i++) {
        xy[i] = hist[i].epoch;
        xy[n + i] = hist[i].train;
        xy[2 * n + i] = hist[i].test;
    }
    svg_series s[2] = {{"train", "#1f77b4", xy, xy + n, n},
                       {"test", "#d62728", xy, xy + 2 * n, n}};
    path = cli_path(o->out, "loss.svg");
    tmp = cli_tmp(path);
    errno = 0;
    if (!cli_commit(tmp, path,
                    svg_line_chart(tmp, "VAE on MNIST: -ELBO per sample",
                                   "epoch", "-ELBO (nats)", s, 2)))
        fail_write(path);
    free(xy);
}

/* Rows of an earlier run's metrics.csv before first_epoch, so a resumed run
 * keeps its curves. A missing file gives none. */
static int read_metrics(const options *o, epoch_stats *hist, int first_epoch,
                        int cap)
{
    FILE *f = fopen(cli_path(o->out, "metrics.csv"), "r");
    if (!f)
        return 0;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        epoch_stats s;
        long long step;
        if (sscanf(line, "%d,%lld,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &s.epoch, &step,
                   &s.train, &s.train_rec, &s.train_kl, &s.test, &s.test_rec,
                   &s.test_kl, &s.samples_per_s) == 9 &&
            s.epoch < first_epoch) {
            s.step = step;
            hist[n++] = s;
        }
    }
    fclose(f);
    return n;
}

/* A double as C99 hex ("%a"), so it reads back bit for bit. */
static void meta_set_exact(tg_meta *m, const char *key, double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%a", v);
    tg_meta_set(m, key, buf);
}

static void set_meta(tg_meta *m, const options *o, const tg_vae *vae,
                     const train_pos *pos, int64_t step)
{
    m->n = 0;
    tg_meta_set(m, "model", "vae");
    tg_meta_set_int(m, "input", vae->cfg.input);
    tg_meta_set_int(m, "hidden", vae->cfg.hidden);
    tg_meta_set_int(m, "latent", vae->cfg.latent);
    tg_meta_set_int(m, "epoch", pos->epoch);
    tg_meta_set_int(m, "step", step);
    /* mid-epoch position: batches done in epoch + 1, its noise stream
     * (xoshiro256** state, 4 x 64 bits in hex) and running sums */
    tg_meta_set_int(m, "batch_in_epoch", pos->batch);
    char rng[4 * 16 + 1];
    for (int i = 0; i < 4; i++)
        snprintf(rng + 16 * i, 17, "%016llx",
                 (unsigned long long)pos->noise.s[i]);
    tg_meta_set(m, "noise_rng", rng);
    tg_meta_set_int(m, "epoch_seen", pos->seen);
    meta_set_exact(m, "epoch_rec", pos->rec);
    meta_set_exact(m, "epoch_kl", pos->kl);
    tg_meta_set_int(m, "epoch_skipped", pos->skipped);
    tg_meta_set_int(m, "batch", o->batch);
    tg_meta_set_int(m, "seed", (int64_t)o->seed);
    char lr[32];
    snprintf(lr, sizeof lr, "%.9g", (double)o->lr);
    tg_meta_set(m, "lr", lr);
    tg_meta_set(m, "weight_layout", "[out, in] (torch.nn.Linear)");
}

static void fail_meta(const options *o, const char *key, const char *what)
{
    fprintf(stderr, "vae_mnist: %s: metadata '%s' %s\n", o->resume, key, what);
    exit(2);
}

static int64_t meta_int(const options *o, const tg_meta *m, const char *key,
                        int64_t lo, int64_t hi)
{
    int64_t v;
    if (tg_meta_get_int(m, key, &v) != TG_OK)
        fail_meta(o, key, "is missing or not an integer");
    if (v < lo || v > hi)
        fail_meta(o, key, "is out of range");
    return v;
}

static double meta_exact(const options *o, const tg_meta *m, const char *key)
{
    const char *s = tg_meta_get(m, key);
    char *end;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || end == s || *end || !isfinite(v))
        fail_meta(o, key, "is missing or not a finite number");
    return v;
}

/* The training position of a checkpoint. Files written before mid-epoch
 * checkpoints existed have only "epoch" (finished) and start the next. */
static train_pos meta_position(const options *o, const tg_meta *m)
{
    train_pos pos = {0};
    pos.epoch = (int)meta_int(o, m, "epoch", 0, MAX_EPOCHS);
    if (!tg_meta_get(m, "batch_in_epoch"))
        return pos;
    pos.batch = (int)meta_int(o, m, "batch_in_epoch", 0, 1 << 30);
    pos.seen = (int)meta_int(o, m, "epoch_seen", 0, 1 << 30);
    pos.skipped = meta_int(o, m, "epoch_skipped", 0, 1 << 30);
    pos.rec = meta_exact(o, m, "epoch_rec");
    pos.kl = meta_exact(o, m, "epoch_kl");
    const char *rng = tg_meta_get(m, "noise_rng");
    bool ok = rng && strlen(rng) == 4 * 16;
    for (int i = 0; ok && i < 4; i++) {
        char part[17];
        memcpy(part, rng + 16 * i, 16);
        part[16] = '\0';
        for (int k = 0; k < 16; k++)
            ok = ok && isxdigit((unsigned char)part[k]);
        pos.noise.s[i] = strtoull(part, NULL, 16);
    }
    if (!ok || !(pos.noise.s[0] | pos.noise.s[1] | pos.noise.s[2] |
                 pos.noise.s[3]))
        fail_meta(o, "noise_rng", "is not a generator state (64 hex digits)");
    return pos;
}

/* Loads --resume into vae and opt; the run's config must be the file's.
 * Returns where training stands. */
static train_pos resume(const options *o, tg_vae *vae, tg_optim *opt)
{
    /* The metadata first, so a config mismatch is reported as such rather
     * than as a tensor shape. */
    tg_meta m = {0};
    if (tg_checkpoint_read_meta(o->resume, &m) != TG_OK)
        fail_data();
    struct {
        const char *key;
        int64_t want;
    } keys[] = {{"input", vae->cfg.input},
                {"hidden", o->hidden},
                {"latent", o->latent},
                {"batch", o->batch},
                {"seed", (int64_t)o->seed}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int64_t v = meta_int(o, &m, keys[i].key, INT64_MIN, INT64_MAX);
        if (v != keys[i].want && i == 0) {
            fprintf(stderr,
                    "vae_mnist: %s: checkpoint has input %lld pixels but the "
                    "images in %s have %lld\n",
                    o->resume, (long long)v, o->data, (long long)keys[i].want);
            exit(2);
        }
        if (v != keys[i].want) {
            fprintf(stderr,
                    "vae_mnist: %s: checkpoint has %s %lld but this run has "
                    "%lld (pass --%s %lld)\n",
                    o->resume, keys[i].key, (long long)v,
                    (long long)keys[i].want, keys[i].key, (long long)v);
            exit(2);
        }
    }
    train_pos pos = meta_position(o, &m);
    int64_t step = meta_int(o, &m, "step", 0, INT64_MAX);
    if (tg_checkpoint_load(o->resume, vae->params, opt, &m) != TG_OK)
        fail_data();
    const char *why, *bad = cli_nonfinite(vae->params, &why);
    for (size_t i = 0, n = tg_params_numel(vae->params); i < n && !bad; i++)
        if (!isfinite(opt->m[i]) || !isfinite(opt->v[i]))
            bad = "the Adam state", why = "is not finite";
    if (bad) {
        fprintf(stderr, "vae_mnist: %s: %s: %s\n", o->resume, bad, why);
        exit(2);
    }
    opt->step = step;
    return pos;
}

/* Saves the checkpoint at pos, refusing to write a non-finite one. */
static void save_checkpoint(const options *o, tg_vae *vae, tg_optim *opt,
                            const train_pos *pos)
{
    if (tg_dist_rank() != 0)
        return; /* the ranks hold the same weights: rank 0 writes */
    tg_params *ps = tg_vae_params(vae);
    tg_params_zero_grad(ps); /* a skipped step's grads are not state */
    const char *bad = NULL;
    size_t n = tg_params_numel(ps);
    if (tg_params_finite(ps, &bad))
        for (size_t i = 0; i < n && !bad; i++)
            if (!isfinite(opt->m[i]) || !isfinite(opt->v[i]))
                bad = "the Adam state";
    if (bad) {
        fprintf(stderr,
                "vae_mnist: %s is not finite after step %lld; not saving "
                "a checkpoint (try a smaller --lr)\n",
                bad, (long long)opt->step);
        exit(3);
    }
    tg_meta meta;
    set_meta(&meta, o, vae, pos, opt->step);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    if (tg_checkpoint_save(ck, ps, opt, &meta) != TG_OK) {
        fprintf(stderr, "vae_mnist: %s\n", tg_errmsg());
        exit(1);
    }
}

/* Writes the command that continues this run from checkpoint ck. */
static void print_resume_command(FILE *f, const char *argv0, const options *o,
                                 const char *ck)
{
    cli_shell_word(f, argv0);
    fputs(" --data ", f);
    cli_shell_word(f, o->data);
    fputs(" --out ", f);
    cli_shell_word(f, o->out);
    char lr[32]; /* the shortest form that reads back as the same float */
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(lr, sizeof lr, "%.*g", digits, (double)o->lr);
        if ((float)strtod(lr, NULL) == o->lr)
            break;
    }
    fprintf(f, " --epochs %d --batch %d --hidden %d --latent %d --lr %s "
               "--seed %llu",
            o->epochs, o->batch, o->hidden, o->latent, lr,
            (unsigned long long)o->seed);
    if (o->threads)
        fprintf(f, " --threads %d", o->threads);
    if (o->max_batches)
        fprintf(f, " --max-batches %d", o->max_batches);
    if (o->checkpoint_every)
        fprintf(f, " --checkpoint-every %d", o->checkpoint_every);
    if (o->skip_nonfinite)
        fputs(" --skip-nonfinite", f);
    fputs(" --resume ", f);
    cli_shell_word(f, ck);
}

/* After SIGINT, between steps: save where training stands, say how to go
 * on, exit 130. */
static void stop_interrupted(const options *o, const char *argv0,
                             tg_vae *vae, tg_optim *opt, const train_pos *pos)
{
    save_checkpoint(o, vae, opt, pos);
    const char *ck = cli_path(o->out, "checkpoint.safetensors");
    fprintf(stderr,
            "vae_mnist: interrupted after step %lld (epoch %d, batch %d); "
            "saved %s; resume with: ",
            (long long)opt->step, pos->batch ? pos->epoch + 1 : pos->epoch,
            pos->batch, ck);
    print_resume_command(stderr, argv0, o, ck);
    fputc('\n', stderr);
    exit(130);
}

/* Rank 0's training position, copied to every rank after a resume. */
static void broadcast_pos(train_pos *pos)
{
    int64_t v[10] = {pos->epoch, pos->batch, pos->seen, pos->skipped};
    memcpy(v + 4, pos->noise.s, sizeof pos->noise.s);
    memcpy(v + 8, &pos->rec, sizeof pos->rec);
    memcpy(v + 9, &pos->kl, sizeof pos->kl);
    tg_dist_broadcast_i64(v, 10);
    pos->epoch = (int)v[0];
    pos->batch = (int)v[1];
    pos->seen = (int)v[2];
    pos->skipped = v[3];
    memcpy(pos->noise.s, v + 4, sizeof pos->noise.s);
    memcpy(&pos->rec, v + 8, sizeof pos->rec);
    memcpy(&pos->kl, v + 9, sizeof pos->kl);
}

/* Under mpirun every rank parses the same flags: rank 0 alone prints usage
 * errors and --help, and an exit while parsing finalizes MPI on every rank
 * together, so rank 0's message is never cut short. */
static bool parsing;
static void finalize_if_parsing(void)
{
    if (parsing)
        tg_dist_finalize();
}

static options parse_on_every_rank(int argc, char **argv)
{
    int err = -1;
    if (tg_dist_rank() != 0) {
        fflush(stderr);
        err = dup(STDERR_FILENO);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    parsing = true;
    atexit(finalize_if_parsing);
    options o = parse_options(argc, argv);
    parsing = false;
    if (err >= 0) {
        dup2(err, STDERR_FILENO);
        close(err);
    }
    return o;
}

int main(int argc, char **argv)
{
    cli_prog = "vae_mnist";
    tg_dist_init(&argc, &argv);
    if (tg_dist_rank() != 0 && !freopen("/dev/null", "w", stdout))
        return 1; /* only rank 0 prints progress and results */
    options o = parse_on_every_rank(argc, argv);
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
    int input = train.rows * train.cols;
    if (test.rows * test.cols != input) {
        fprintf(stderr, "vae_mnist: %s: train images are %dx%d, test %dx%d\n",
                o.data, train.rows, train.cols, test.rows, test.cols);
        exit(2);
    }

    tg_vae *vae = tg_vae_new(
        (tg_vae_config){.input = input, .hidden = o.hidden, .latent = o.latent},
        o.seed);
    tg_params *ps = tg_vae_params(vae);
    tg_optim *opt = tg_adam_new(ps, o.lr);
    /* Rank 0 reads the checkpoint (and stops the job if it cannot) and
     * sends weights, Adam state and position to the others. */
    train_pos pos = o.resume && tg_dist_rank() == 0 ? resume(&o, vae, opt)
                                                    : (train_pos){0};
    tg_dist_broadcast(ps, opt);
    if (o.resume)
        broadcast_pos(&pos);
    /* Only now, with the data and checkpoint accepted: bad input leaves no
     * output behind. */
    if (!tg_dist_all_ok(tg_dist_rank() != 0 || cli_prepare_out_dir(o.out))) {
        tg_dist_finalize();
        exit(1);
    }
    epoch_stats *hist = calloc(2 * (size_t)o.epochs + 1, sizeof *hist);
    int n_hist = read_metrics(&o, hist, pos.epoch + 1, o.epochs);

    printf("vae_mnist: %d train / %d test images of %dx%d from %s\n", train.n,
           test.n, train.rows, train.cols, o.data);
    printf("model %d-%d-%d, %zu parameters, batch %d, Adam lr %g, seed %llu, "
           "%d threads, gemm %s\n",
           input, o.hidden, o.latent, tg_params_numel(ps), o.batch,
           (double)o.lr, (unsigned long long)o.seed, tg_get_threads(),
           tg_gemm_kernel());
    if (o.resume)
        printf("resumed from %s after epoch %d, batch %d (step %lld)\n",
               o.resume, pos.epoch, pos.batch, (long long)opt->step);
    fflush(stdout);

    tg_tape *tp = tg_tape_new();
    tg_batcher batcher;
    tg_batcher_init(&batcher, &train, o.batch, o.seed);
    float *xbuf = malloc(sizeof(float) * (size_t)o.batch * input);
    float *epsbuf = malloc(sizeof(float) * (size_t)o.batch * o.latent);
    int n_batches = tg_batcher_count(&batcher);
    if (o.max_batches && o.max_batches < n_batches)
        n_batches = o.max_batches;

    for (int epoch = pos.epoch + 1; epoch <= o.epochs; epoch++) {
        if (pos.batch == 0) {
            pos = (train_pos){.epoch = epoch - 1};
            tg_rng_seed(&pos.noise, o.seed, 1000 + (uint64_t)epoch);
        }
        tg_batcher_start(&batcher, epoch, pos.batch);
        cli_progress bar;
        cli_progress_start(&bar, n_batches);
        double t0 = cli_now(), allreduce0 = tg_dist_allreduce_seconds();
        int seen_before = pos.seen, batch_before = pos.batch, n;
        for (int i = pos.batch;
             i < n_batches && (n = tg_batcher_next(&batcher, xbuf, NULL)) > 0;
             i++) {
            tg_params_zero_grad(ps);
            double sums[3]; /* loss not finite, rec, kl of this rank's rows */
            share_step(tp, vae, xbuf, epsbuf, n, &pos.noise, sums);
            /* Under MPI one small all-reduce tells every rank whether any
             * loss was not finite, and gives the global batch's sums; the
             * guard then sees the same all-reduced gradients everywhere,
             * so every rank takes the same decision. */
            tg_dist_sum(sums, 3);
            /* NaN/Inf guard: the loss, then every value and gradient */
            const char *bad = "loss", *why = "is not finite";
            if (sums[0] == 0.0) {
                tg_dist_allreduce_grads(ps);
                bad = cli_nonfinite(ps, &why);
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
            cli_progress_update(&bar, i + 1, pos.seen,
                                (pos.rec + pos.kl) / pos.seen);
            int64_t done = (int64_t)(epoch - 1) * n_batches + pos.batch;
            if (o.checkpoint_every && done % o.checkpoint_every == 0 &&
                pos.batch < n_batches)
                save_checkpoint(&o, vae, opt, &pos);
            if (cli_interrupted && pos.batch < n_batches) {
                cli_progress_end(&bar);
                stop_interrupted(&o, argv[0], vae, opt, &pos);
            }
        }
        double dt = cli_now() - t0;
        double allreduce_dt = tg_dist_allreduce_seconds() - allreduce0;
        int steps = pos.batch - batch_before;
        cli_progress_end(&bar);
        double rec = pos.rec, kl = pos.kl;
        int seen = pos.seen;
        int64_t skipped = pos.skipped;
        pos = (train_pos){.epoch = epoch, .noise = pos.noise};

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

        if (tg_dist_rank() == 0) {
            write_metrics(&o, hist, n_hist);
            write_pictures(tp, vae, &test, &o);
        }
        save_checkpoint(&o, vae, opt, &pos);
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

/* vae_mnist's outputs: pictures (PNG), metrics.csv and loss.svg, each
 * written whole or not at all (cli_out_open / cli_out_commit), or compared
 * with what --out holds (outputs_differ). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "png.h"
#include "svg.h"
#include "vae_mnist.h"

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

/* An output being written: through cli_out_open / cli_out_commit, or,
 * while outputs_differ checks, into memory and compared with the file. */
typedef struct out_file {
    tg_atomic_file a;
    FILE *mem;
    char *path, *buf;
    size_t len;
} out_file;

static bool checking; /* outputs_differ: compare, write nothing */
static bool differs;  /* a file compared was missing or other */

static FILE *out_open(out_file *of, const char *path)
{
    if (!checking)
        return cli_out_open(&of->a, path);
    of->path = strdup(path); /* cli_path's buffers are reused */
    of->mem = open_memstream(&of->buf, &of->len);
    if (!of->path || !of->mem)
        tg_out_of_memory("outputs", "out of memory comparing %s", path);
    return of->mem;
}

/* True when path is a regular file of exactly len bytes, buf's (anything
 * else, a FIFO say, is never opened for long: O_NONBLOCK). */
static bool file_holds(const char *path, const char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return false;
    struct stat st;
    bool same =
        fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size == len;
    char chunk[65536];
    for (size_t at = 0; same && at < len;) {
        size_t want = len - at < sizeof chunk ? len - at : sizeof chunk;
        ssize_t got = read(fd, chunk, want);
        same = got > 0 && memcmp(chunk, buf + at, (size_t)got) == 0;
        at += got > 0 ? (size_t)got : 0;
    }
    close(fd);
    return same;
}

static void out_commit(out_file *of, bool ok)
{
    if (!checking) {
        cli_out_commit(&of->a, ok);
        return;
    }
    if (fclose(of->mem) != 0 || !ok)
        fail_write(of->path);
    if (!file_holds(of->path, of->buf, of->len))
        differs = true;
    free(of->buf);
    free(of->path);
}

static void write_grid(const char *path, const float *tiles, int n,
                       const tg_dataset *shape, int cols, int scale)
{
    int w, h;
    uint8_t *img =
        png_tile_grid(tiles, n, shape->rows, shape->cols, cols, scale, &w, &h);
    if (!img)
        tg_out_of_memory("png", "out of memory for %s", path);
    out_file of;
    out_commit(&of, png_write(out_open(&of, path), w, h, 1, img));
    free(img);
}

/* reconstructions.png: rows of 16 test inputs, each above its
 * reconstruction (decoded at the posterior mean); samples.png: 64 decoded
 * prior draws (the same z every epoch); manifold.png (latent = 2): decoded
 * 20 x 20 grid of z at normal quantiles 0.05 .. 0.95. */
void write_pictures(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                    const options *o)
{
    enum { COLS = 16, PAIRS = 2, SIDE_N = 20 };
    int pixels = test->rows * test->cols; /* tiles of rows x cols */
    bool was = tg_tape_set_recording(tp, false);
    float *tiles = malloc(sizeof(float) * (size_t)pixels * SIDE_N * SIDE_N);
    if (!tiles)
        tg_out_of_memory("pictures", "out of memory");

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
    write_grid(cli_path(o->out, "reconstructions.png"), tiles, t, test, COLS,
               2);

    tg_rng rng;
    tg_rng_seed(&rng, o->seed, 1);
    tg_tape_reset(tp);
    tg_tensor *samples = tg_vae_sample(tp, vae, 64, &rng);
    write_grid(cli_path(o->out, "samples.png"), samples->data, 64, test, 8, 2);

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
                   test, SIDE_N, 1);
    }
    free(tiles);
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
}

/* v as metrics.csv has it (4 decimals). loss.svg is drawn from these: a
 * resumed run reads its earlier epochs back from metrics.csv, and its chart
 * (scale from the unrounded losses of its own epochs and the rounded ones
 * of the others) had a grid line 0.1 px from a run never stopped. */
static double as_written(double v)
{
    char text[512]; /* any double in %.4f */
    snprintf(text, sizeof text, "%.4f", v);
    return strtod(text, NULL);
}

/* A metrics.csv row less the timing, "epoch,step,train,rec,kl,test,rec,kl":
 * write_metrics's rows, and the one a checkpoint carries (compared). */
void metrics_row(const epoch_stats *s, char *buf, size_t size)
{
    snprintf(buf, size, "%d,%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%.4f", s->epoch,
             (long long)s->step, s->train, s->train_rec, s->train_kl, s->test,
             s->test_rec, s->test_kl);
}

void write_metrics(const options *o, const epoch_stats *hist, int n)
{
    out_file of;
    FILE *f = out_open(&of, cli_path(o->out, "metrics.csv"));
    fprintf(f, "epoch,step,train_neg_elbo,train_rec,train_kl,test_neg_elbo,"
               "test_rec,test_kl,samples_per_s\n");
    for (int i = 0; i < n; i++) {
        char row[4096]; /* six doubles of any size in %.4f */
        metrics_row(&hist[i], row, sizeof row);
        fprintf(f, "%s,%.1f\n", row, hist[i].samples_per_s);
    }
    out_commit(&of, true);

    size_t points = n > 0 ? (size_t)n : 1;
    double *xy = malloc(sizeof(double) * 3 * points);
    if (!xy)
        tg_out_of_memory("loss.svg", "out of memory");
    for (int i = 0; i < n; i++) {
        xy[i] = hist[i].epoch;
        xy[n + i] = as_written(hist[i].train);
        xy[2 * n + i] = as_written(hist[i].test);
    }
    svg_series s[2] = {{"train", "#1f77b4", xy, xy + n, n},
                       {"test", "#d62728", xy, xy + 2 * n, n}};
    FILE *svg = out_open(&of, cli_path(o->out, "loss.svg"));
    out_commit(&of, svg_line_chart(svg, "VAE on MNIST: -ELBO per sample",
                                   "epoch", "-ELBO (nats)", s, 2));
    free(xy);
}

bool outputs_differ(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                    const options *o, const epoch_stats *hist, int n)
{
    checking = true;
    differs = false;
    write_metrics(o, hist, n);
    write_pictures(tp, vae, test, o);
    checking = false;
    return differs;
}

/* A row this program could have written after the rows before it (the
 * epoch last, or 0): a damaged metrics.csv carried NaN, duplicate or
 * out-of-order epochs into the resumed run's metrics.csv, and values near
 * DBL_MAX made loss.svg's scale (and so its coordinates) NaN. */
static bool plausible_row(const epoch_stats *s, long long step, int last)
{
    const double v[7] = {s->train,    s->train_rec, s->train_kl,     s->test,
                         s->test_rec, s->test_kl,   s->samples_per_s};
    for (int i = 0; i < 7; i++)
        if (!isfinite(v[i]) || fabs(v[i]) > 1e30)
            return false;
    return s->epoch > last && step >= 0;
}

/* Whether rows (n of them) may be the history of the checkpoint whose last
 * epoch's row is last (epoch 0: a checkpoint without it): their row of
 * that epoch, when there, is the checkpoint's own. */
static bool same_run(const epoch_stats *rows, int n, const epoch_stats *last)
{
    char a[256], b[256];
    for (int i = 0; last && last->epoch > 0 && i < n; i++)
        if (rows[i].epoch == last->epoch) {
            metrics_row(&rows[i], a, sizeof a);
            metrics_row(last, b, sizeof b);
            return strcmp(a, b) == 0;
        }
    return true;
}

/* Rows of an earlier run's metrics.csv before first_epoch, so a resumed run
 * keeps its curves; rows that are not plausible_row are left out. A missing
 * file gives none, and so does another run's (its row of the last epoch of
 * the checkpoint resumed, last, is not the checkpoint's): its epochs had
 * been kept before this run's, one curve of two runs, with no word. */
int read_metrics(const options *o, epoch_stats *hist, int first_epoch, int cap,
                 const epoch_stats *last)
{
    /* O_NONBLOCK: a FIFO opens at once instead of waiting for a writer.
     * Anything but a regular file (a FIFO, a link to /dev/zero) is not a
     * history of ours: it is left unread (run_setup has refused it already,
     * as an output the run cannot replace; this guards a file that changed
     * since). The lines read are bounded too: unparsable ones never
     * advance n. */
    const char *path = cli_path(o->out, "metrics.csv");
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    struct stat st = {0};
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        /* (a folder: the run's write there fails, saying so) */
        if (tg_dist_rank() == 0 && !S_ISDIR(st.st_mode))
            cli_error("note: %s is not a regular file: no earlier "
                      "epochs read from it",
                      path);
        return 0;
    }
    FILE *f = fdopen(fd, "r");
    if (!f && errno == ENOMEM) /* the earlier epochs were dropped, exit 0 */
        tg_out_of_memory("metrics", "%s: out of memory reading it", path);
    if (!f) {
        close(fd);
        return 0;
    }
    char line[512];
    int n = 0;
    long lines = 0;
    while (n < cap && lines++ < 1000000 && fgets(line, sizeof line, f)) {
        epoch_stats s;
        long long step;
        if (sscanf(line, "%d,%lld,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &s.epoch, &step,
                   &s.train, &s.train_rec, &s.train_kl, &s.test, &s.test_rec,
                   &s.test_kl, &s.samples_per_s) == 9 &&
            s.epoch < first_epoch &&
            plausible_row(&s, step, n ? hist[n - 1].epoch : 0)) {
            s.step = step;
            hist[n++] = s;
        }
    }
    fclose(f);
    if (!same_run(hist, n, last)) {
        if (tg_dist_rank() == 0)
            cli_error("note: %s is another run's (its epoch %d row is not the "
                      "checkpoint's): its rows are not kept",
                      path, last->epoch);
        return 0;
    }
    return n;
}

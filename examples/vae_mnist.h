/* vae_mnist's own header: the types its files share. vae_mnist.c trains,
 * vae_mnist_setup.c and vae_mnist_train.c set the run up and run its
 * epochs, vae_mnist_outputs.c writes pictures and metrics,
 * vae_mnist_checkpoint.c saves and resumes. */
#ifndef VAE_MNIST_H
#define VAE_MNIST_H

#include <stdio.h>

#include "cli.h"
#include "tapegrad.h"

typedef struct options {
    const char *data, *out, *resume;
    int epochs, batch, hidden, latent, threads, max_batches;
    tg_vae_arch arch; /* --arch: mlp (default) or conv (hidden is then 0) */
    tg_vae_likelihood likelihood; /* --likelihood: bernoulli (default), cb */
    int checkpoint_every;         /* batches; 0: only at each epoch's end */
    int holdout; /* the last N training images are not trained on */
    bool skip_nonfinite;
    bool allow_data_change; /* resume on data other than the checkpoint's */
    int rank_timeout;       /* seconds; 0: wait for other ranks forever */
    int shards; /* --shards; 0: the checkpoint's, or the rank count */
    float lr;
    uint64_t seed;
} options;

/* One row of metrics.csv. */
typedef struct epoch_stats {
    int epoch;
    int64_t step;
    double train, train_rec, train_kl, test, test_rec, test_kl;
    double samples_per_s;
} epoch_stats;

/* Test images per evaluation pass; the conv VAE's im2col matrices grow with
 * it (about 0.1 MB per image), so it takes smaller passes. */
enum { MAX_EPOCHS = 100000, EVAL_BATCH = 1000, EVAL_BATCH_CONV = 250 };
enum { MAX_BATCH = CLI_MAX_BATCH, MAX_HOLDOUT = 1 << 30 };

/* A training run: what vae_mnist_setup.c's and vae_mnist_train.c's
 * functions share. */
typedef struct run {
    const options *o;
    const char *argv0;
    tg_dataset train, test;
    tg_vae *vae;
    tg_params *ps;
    tg_optim *opt;
    tg_step_guard guard;
    tg_tape *tp;
    tg_batcher batcher;
    int n_batches;        /* per epoch, after --max-batches */
    int shards;           /* from the checkpoint (rank 0), 0: none */
    float *xbuf, *epsbuf; /* a global batch's images and noise */
    tg_vae_position pos;
    char data_fp[2 * TG_FINGERPRINT_MAX + 16]; /* "train ...; test ..." */
    epoch_stats *hist;                         /* metrics.csv's rows */
    int n_hist;
    /* the current epoch's start, for its timing line */
    double t0, wait0;
    int64_t seen0, batch0;
    /* the most batches an epoch of this training had (rank 0): the
     * checkpoint's, 0 for a fresh run, -1 when the checkpoint did not
     * record it (this run's own count is added when saving) */
    int64_t epoch_batches_max;
    int64_t first_step; /* the optimizer's step this run started from */
    /* rank 0: the last finished epoch's metrics.csv row, from --resume
     * (epoch 0: none); see save_checkpoint */
    epoch_stats resumed_row;
} run;

/* vae_mnist_setup.c: run_setup reads the data (and --resume), builds the
 * model and prepares --out; run_free frees what it made. */
void run_setup(run *r, const options *o, const char *argv0);
void run_free(run *r);
/* vae_mnist_train.c: train_epoch runs an epoch's guarded steps (exits on a
 * stop); end_epoch evaluates, prints, saves the checkpoint and then
 * metrics.csv and the pictures. */
void train_epoch(run *r, int epoch);
void end_epoch(run *r, int epoch);

/* vae_mnist.c */
/* tg_errmsg(), exit 2 */
__attribute__((noreturn)) void fail_data(void);
/* TG_OK: returns; TG_ERR_NOMEM: exit 1; else fail_data */
void fail_read(tg_status st);
/* errno's reason, exit 1 */
__attribute__((noreturn)) void fail_write(const char *path);
/* Rows [first, first + n) of ds as a tape tensor [n, pixels] (a view). */
tg_tensor *rows_on_tape(tg_tape *tp, const tg_dataset *ds, int first, int n);

/* vae_mnist_outputs.c */
void write_pictures(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                    const options *o);
void write_metrics(const options *o, const epoch_stats *hist, int n);
/* True when metrics.csv, loss.svg or a picture in --out is missing or is
 * not what write_metrics (hist) and write_pictures would write; writes
 * nothing. */
bool outputs_differ(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                    const options *o, const epoch_stats *hist, int n);
int read_metrics(const options *o, epoch_stats *hist, int first_epoch, int cap,
                 const epoch_stats *last);
void metrics_row(const epoch_stats *s, char *buf, size_t size);

/* vae_mnist_checkpoint.c */
void resume(run *r); /* rank 0: --resume into r, checked */
void save_checkpoint(const run *r);
void stop_interrupted(const run *r, bool save);
void broadcast_pos(tg_vae_position *pos);
void broadcast_guard(tg_step_guard *g);

#endif

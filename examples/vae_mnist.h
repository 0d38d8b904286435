/* vae_mnist's own header: the types its files share. vae_mnist.c trains,
 * vae_mnist_outputs.c writes pictures and metrics, vae_mnist_checkpoint.c
 * saves and resumes. */
#ifndef VAE_MNIST_H
#define VAE_MNIST_H

#include <stdio.h>

#include "tapegrad.h"

typedef struct options {
    const char *data, *out, *resume;
    int epochs, batch, hidden, latent, threads, max_batches;
    tg_vae_arch arch;     /* --arch: mlp (default) or conv (hidden is then 0) */
    int checkpoint_every; /* batches; 0: only at each epoch's end */
    bool skip_nonfinite;
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

enum { MAX_EPOCHS = 100000, EVAL_BATCH = 1000 };

/* vae_mnist.c */
void fail_data(void);              /* tg_errmsg(), exit 2 */
void fail_write(const char *path); /* errno's reason, exit 1 */
/* Rows [first, first + n) of ds as a tape tensor [n, pixels] (a view). */
tg_tensor *rows_on_tape(tg_tape *tp, const tg_dataset *ds, int first, int n);

/* vae_mnist_outputs.c */
void write_pictures(tg_tape *tp, const tg_vae *vae, const tg_dataset *test,
                    const options *o);
void write_metrics(const options *o, const epoch_stats *hist, int n);
int read_metrics(const options *o, epoch_stats *hist, int first_epoch, int cap);

/* vae_mnist_checkpoint.c */
tg_vae_position resume(const options *o, tg_vae *vae, tg_optim *opt,
                       int n_batches);
void save_checkpoint(const options *o, tg_vae *vae, tg_optim *opt,
                     const tg_vae_position *pos);
void stop_interrupted(const options *o, const char *argv0, tg_vae *vae,
                      tg_optim *opt, const tg_vae_position *pos);
void broadcast_pos(tg_vae_position *pos);

#endif

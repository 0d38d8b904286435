/* tapegrad nn: what a model is built from. Seeded RNG, parameter sets,
 * Dense layers, losses, optimizers, checkpoints (safetensors) and IDX data.
 *
 * Bad data (files, arguments) is reported, never aborted on: functions that
 * read or write return a tg_status and leave a one-line message for
 * tg_errmsg(). */
#ifndef TG_NN_H
#define TG_NN_H

#include "tg_autograd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ---------------------------------------------------------------- */

typedef enum tg_status {
    TG_OK = 0,
    TG_ERR_IO,       /* could not open, read, write or rename a file */
    TG_ERR_FORMAT,   /* the file is not what it claims (magic, sizes, JSON) */
    TG_ERR_MISMATCH, /* a valid file that does not fit (shapes, names) */
    TG_ERR_ARG,      /* a bad argument value */
    TG_ERR_NOMEM,
    TG_ERR_UNSUPPORTED, /* e.g. .gz without zlib */
} tg_status;

/* The message of the last error on this thread ("" if none): one line that
 * names the file or value and what is wrong. */
const char *tg_errmsg(void);
/* Sets the message (printf-style) and returns status, for one-line returns:
 * return tg_error(TG_ERR_FORMAT, "%s: bad magic 0x%08x", path, magic); */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
tg_status tg_error(tg_status status, const char *fmt, ...);

/* ---- random numbers ----------------------------------------------------------
 * xoshiro256** seeded through splitmix64 from (seed, stream): one stream per
 * purpose (init, data order, noise) so each is reproducible on its own. */
typedef struct tg_rng {
    uint64_t s[4];
} tg_rng;

void tg_rng_seed(tg_rng *r, uint64_t seed, uint64_t stream);
uint64_t tg_rng_u64(tg_rng *r);
uint32_t tg_rng_below(tg_rng *r, uint32_t n); /* uniform in [0, n), unbiased */
float tg_rng_uniform(tg_rng *r);              /* uniform in [0, 1) */
float tg_rng_normal(tg_rng *r);               /* N(0, 1) */
void tg_rng_fill_uniform(tg_rng *r, float *x, size_t n, float lo, float hi);
void tg_rng_fill_normal(tg_rng *r, float *x, size_t n, float mean, float std);

/* ---- dropout ---------------------------------------------------------------
 * Inverted dropout: each element of x is zeroed with probability p and the
 * survivors are scaled by 1 / (1 - p), so the expected value is unchanged.
 * Whether it drops is the mode's choice, never the tape's alone:
 *   TG_DROPOUT_TRAIN  always drops: training, and MC dropout at test time
 *                     (recording off, S passes with dropout on);
 *   TG_DROPOUT_EVAL   never: returns x itself (evaluation);
 *   TG_DROPOUT_AUTO   drops while tp records, returns x when recording is
 *                     off (inference under tg_tape_set_recording(tp, false)).
 * When it drops it draws one tg_rng_uniform per element, in row-major order,
 * on the calling thread (so a seed gives the same mask on any thread count);
 * when it does not, or p = 0, rng is not touched and may be NULL. p = 1
 * zeroes everything. The mask is saved for backward on the tape. */
typedef enum tg_dropout_mode {
    TG_DROPOUT_AUTO = 0,
    TG_DROPOUT_TRAIN,
    TG_DROPOUT_EVAL,
} tg_dropout_mode;

tg_tensor *tg_dropout(tg_tape *tp, tg_tensor *x, float p, tg_rng *rng,
                      tg_dropout_mode mode);

/* ---- parameter sets ----------------------------------------------------------
 * Named long-lived tensors ("encoder.fc1.weight"). Once the set is sealed
 * (by the first tg_params_zero_grad, optimizer or checkpoint call, or
 * explicitly) every parameter's data lives in one contiguous buffer and
 * every grad in another, in the order added: one all-reduce syncs them all. */
typedef struct tg_params tg_params;

tg_params *tg_params_new(void);
void tg_params_free(tg_params *ps);
/* A new zeroed parameter owned by the set; aborts on a duplicate name or
 * after sealing. */
tg_tensor *tg_params_add(tg_params *ps, const char *name, int ndim,
                         const int *shape);
void tg_params_seal(tg_params *ps);
int tg_params_count(const tg_params *ps);
tg_tensor *tg_params_get(const tg_params *ps, int i);
const char *tg_params_name(const tg_params *ps, int i);
tg_tensor *tg_params_find(const tg_params *ps, const char *name); /* or NULL */
size_t tg_params_numel(const tg_params *ps); /* total elements */
float *tg_params_data(tg_params *ps);        /* contiguous, seals */
float *tg_params_grad(tg_params *ps);        /* contiguous, seals */
void tg_params_zero_grad(tg_params *ps);
/* True when every parameter value and gradient is finite; otherwise *where
 * (if not NULL) names the first tensor holding a NaN or Inf. */
bool tg_params_finite(tg_params *ps, const char **where);
/* The largest |gradient| (NaN if any gradient is NaN): for a NaN guard that
 * also catches gradients whose square would overflow, or for clipping. */
float tg_params_grad_absmax(tg_params *ps);

/* ---- layers -------------------------------------------------------------- */

typedef enum tg_init {
    TG_INIT_GLOROT, /* uniform +-sqrt(6 / (in + out)): sigmoid, tanh, linear */
    TG_INIT_HE,     /* normal, std sqrt(2 / in): followed by ReLU */
    TG_INIT_TORCH,  /* uniform +-1/sqrt(in) for W and b, PyTorch's Linear */
} tg_init;

/* y = x . W^T + b; W [out, in] as PyTorch stores it, b [out]. Parameters are
 * registered in ps as "<name>.weight" and "<name>.bias". */
typedef struct tg_dense_layer {
    tg_tensor *W, *b;
    int in, out;
} tg_dense_layer;

void tg_dense_layer_init(tg_dense_layer *l, tg_params *ps, const char *name,
                         int in, int out, tg_init init, tg_rng *rng);
tg_tensor *tg_dense_apply(tg_tape *tp, const tg_dense_layer *l, tg_tensor *x);

/* ---- losses (scalars: the mean over the rows of a batch) ------------------ */

tg_tensor *tg_loss_bce_with_logits(tg_tape *tp, tg_tensor *logits,
                                   tg_tensor *targets); /* summed per row */
tg_tensor *tg_loss_mse(tg_tape *tp, tg_tensor *pred,
                       tg_tensor *target); /* summed per row */
tg_tensor *tg_loss_softmax_xent(tg_tape *tp, tg_tensor *logits,
                                const int *labels);

/* ---- optimizers ------------------------------------------------------------ */

typedef enum tg_optim_kind { TG_OPTIM_SGD, TG_OPTIM_ADAM } tg_optim_kind;

typedef struct tg_optim {
    tg_optim_kind kind;
    tg_params *params;
    float lr;
    float momentum;             /* SGD */
    float beta1, beta2, eps;    /* Adam (0.9, 0.999, 1e-8) */
    float weight_decay;         /* L2, added to the gradient; default 0 */
    int64_t step;               /* steps taken */
    float *m, *v;               /* state, tg_params_numel() each (v: Adam) */
} tg_optim;

/* SGD: v = momentum * v + g; p -= lr * v (PyTorch's form). */
tg_optim *tg_sgd_new(tg_params *ps, float lr, float momentum);
/* Adam with bias correction, as torch.optim.Adam. */
tg_optim *tg_adam_new(tg_params *ps, float lr);
void tg_optim_step(tg_optim *opt);
void tg_optim_free(tg_optim *opt);

/* ---- checkpoints (safetensors) ---------------------------------------------
 * A file holds the parameters under their names (F32, little-endian, W as
 * [out, in] so safetensors.torch.load_file gives PyTorch's layout), the
 * optimizer state as "optim.m.<name>" / "optim.v.<name>", and string
 * metadata (model config, step, epoch, RNG state). Saving writes a temporary
 * file, fsyncs and renames: an interrupted save never leaves a broken file.
 * Loading validates everything before touching the model. */
#define TG_META_MAX 32
typedef struct tg_meta {
    int n;
    char key[TG_META_MAX][64];
    char value[TG_META_MAX][256];
} tg_meta;

void tg_meta_set(tg_meta *m, const char *key, const char *value);
void tg_meta_set_int(tg_meta *m, const char *key, int64_t value);
const char *tg_meta_get(const tg_meta *m, const char *key); /* or NULL */
/* Parses an integer value; TG_ERR_FORMAT if missing or not an integer. */
tg_status tg_meta_get_int(const tg_meta *m, const char *key, int64_t *value);

/* opt and meta may be NULL. */
tg_status tg_checkpoint_save(const char *path, tg_params *ps,
                             const tg_optim *opt, const tg_meta *meta);
/* Every parameter of ps must be in the file with the same shape; optimizer
 * state is loaded when opt is not NULL (and must then be present). */
tg_status tg_checkpoint_load(const char *path, tg_params *ps, tg_optim *opt,
                             tg_meta *meta);
/* Only the metadata (after validating the header), to check a model's
 * config before building it (nn/checkpoint_meta.c). */
tg_status tg_checkpoint_read_meta(const char *path, tg_meta *meta);

/* ---- data ------------------------------------------------------------------- */

/* n images of rows x cols pixels as floats in [0, 1], row-major, and their
 * labels (0..255 as read; MNIST uses 0..9). */
typedef struct tg_dataset {
    int n, rows, cols;
    float *images; /* n * rows * cols */
    uint8_t *labels;
} tg_dataset;

/* Reads an IDX file (raw, or gzip when the name ends in .gz and zlib was
 * found at build time). Checks magic, dims, and sizes against the file before
 * allocating. *dims gets up to 3 sizes; data is malloc'd (caller frees). */
tg_status tg_idx_read(const char *path, int *ndim, int dims[3],
                      uint8_t **data);
/* Loads "<dir>/train-images-idx3-ubyte" (or t10k- when train is false) and
 * its labels, trying each name raw and with .gz. Checks counts agree. */
tg_status tg_mnist_load(const char *dir, bool train, tg_dataset *ds);
void tg_dataset_free(tg_dataset *ds);
bool tg_have_zlib(void);

/* Mini-batches in an order that depends only on (seed, epoch): resuming at a
 * batch index reproduces the same batches. The last batch may be short. */
typedef struct tg_batcher {
    const tg_dataset *ds;
    int batch;
    int *order;
    uint64_t seed;
    int64_t epoch;
    int pos; /* next sample within the epoch's order */
} tg_batcher;

void tg_batcher_init(tg_batcher *b, const tg_dataset *ds, int batch,
                     uint64_t seed);
void tg_batcher_free(tg_batcher *b);
/* Starts epoch (shuffles by (seed, epoch)) at batch index first_batch. */
void tg_batcher_start(tg_batcher *b, int64_t epoch, int first_batch);
int tg_batcher_count(const tg_batcher *b); /* batches per epoch */
/* Copies the next batch into x ([n, rows*cols], n <= batch) and labels (may
 * be NULL); returns n, 0 at the end of the epoch. */
int tg_batcher_next(tg_batcher *b, float *x, int *labels);

#ifdef __cplusplus
}
#endif
#endif

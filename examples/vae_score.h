/* vae_score in three files: vae_score.c reads the flags and scores each
 * set; vae_score_sets.c reads the model and the images and makes the sets
 * to score; vae_score_report.c prints and writes what the scores say
 * (tables, CSV files, pictures). */
#ifndef EX_VAE_SCORE_H
#define EX_VAE_SCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tapegrad.h"

typedef struct options {
    const char *checkpoint, *data, *ood, *out, *near, *reference;
    int k, threads, max_images, samples, ref_images, resamples;
    float min_ess;
    uint64_t seed;
} options;

enum {
    N_SCORES = 7,
    MAX_SETS = 5, /* test, reference, --ood-data, rot90, hflip */
};
enum { SC_ELBO, SC_NLL, SC_S, SC_S2, SC_L2, SC_LR, SC_DOSE };
/* the scores' names in the tables and, the same order, in scores.csv */
extern const char *const SCORE_NAMES[N_SCORES];
extern const char *const SCORE_KEYS[N_SCORES];

/* One scored set of images; the arrays are [n]. */
typedef struct scored {
    const char *name; /* in scores.csv and the tables */
    char label[48];   /* in the pictures */
    char desc[160];   /* where the images come from */
    const float *images;
    const uint8_t *labels;
    int n, side_r, side_c;
    uint64_t stream;
    bool ood; /* scored against the in-distribution test set */
    double *log_px, *elbo, *ess, *L, *nll_bits, *log_bg;
    double *score[N_SCORES];
    double seconds, mean_std;
} scored;

/* The sets in the order they are scored and reported: the in-distribution
 * test set, the reference (--reference train), --ood-data, rot90, hflip. */
typedef struct set_list {
    scored set[MAX_SETS];
    int n;
    scored *in, *ref;     /* ref NULL with --reference test */
    const char *ref_kind; /* what the reference is, for its summary line */
    int n_bg; /* the background model's images: training images 0..n_bg-1 */
    float *near_img[2]; /* rot90 and hflip images, or NULL */
} set_list;

/* Reference statistics, fitted on the reference set only. */
typedef struct reference {
    tg_typical S, L, joint;
} reference;

/* Convergence of the log p(x) estimates of a set. */
typedef struct convergence {
    double ess_mean, ess_median, ess_min, below, se_mean, se_max;
} convergence;

/* What vae_score reads: the model, and the images of --data (test and
 * training sets) and --ood-data (its test set; ood.n == 0 without it). */
typedef struct inputs {
    tg_vae *vae;
    int holdout;    /* training images vae_mnist --holdout kept out, or 0 */
    int rows, cols; /* the images it was trained on, or 0 if unknown */
    /* the checkpoint's training images against --data's (its fingerprint
     * of what it trained on: the training set less the held-out images) */
    enum { DATA_UNKNOWN, DATA_SAME, DATA_OTHER } data;
    tg_dataset test, train, ood;
} inputs;

/* vae_score_sets.c. load_inputs reads the checkpoint's model and the
 * images of o->data and o->ood, checked against each other (bad input:
 * one line, exit status 2); make_sets makes the sets to score from them,
 * in the order of set_list. */
void load_inputs(inputs *in, const options *o);
void free_inputs(inputs *in);
void make_sets(set_list *sl, const inputs *in, const options *o);
void free_sets(set_list *sl);

/* calloc, or exit(1) with "vae_score: out of memory". */
void *xcalloc(size_t n, size_t size);

/* vae_score_report.c, in the order main calls them. */
void print_model(const options *o, const tg_vae *vae);
void print_set(const scored *s, int k, double min_ess, convergence *c);
/* train_kind: what the training-image reference is (held out, seen in
 * training, other data), NULL for the test set. */
void print_reference(const reference *rs, const scored *rset,
                     const char *train_kind, bool have_L, const tg_vae *vae,
                     int n_bg, const char *data);
/* The OOD tables and ood_metrics.csv; first_auc gets the first OOD set's
 * AUROC of each score (NaN if none), and it returns that set's name (NULL
 * without an OOD set). */
const char *write_ood_tables(const set_list *sl, const options *o,
                             double first_auc[N_SCORES]);
void write_convergence(const set_list *sl, const convergence *conv,
                       const options *o);
/* The sets in the pictures: the in-distribution test set and every OOD
 * set. Returns how many. */
int pictured_sets(set_list *sl, scored *shown[MAX_SETS]);
void write_histograms(scored *const *shown, int n_shown, bool have_L,
                      const double first_auc[N_SCORES], const char *first_ood,
                      const options *o);
void write_uncertainty(tg_tape *tp, const tg_vae *vae, scored *const *shown,
                       int n_shown, const options *o);
void write_latent(tg_tape *tp, const tg_vae *vae, const scored *s,
                  const char *path);
void write_scores_csv(const set_list *sl, const options *o);

#endif

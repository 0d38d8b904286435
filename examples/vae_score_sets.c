/* What vae_score scores: the model a checkpoint describes, the images of
 * --data and --ood-data (checked against it and each other), and the sets
 * made of them (the test set, the reference, --ood-data, the near-OOD
 * sets), each with its own random stream. */
#include "vae_score.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

static const uint64_t STREAM_UNIT = 1ull << 40;

static bool near_wanted(const options *o, const char *name)
{
    const char *p = o->near;
    size_t n = strlen(name);
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, name, n))
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

static void fail_data(void)
{
    cli_error("%s", tg_errmsg());
    exit(2);
}

/* The VAE the checkpoint describes, with its weights (checked finite), how
 * many training images vae_mnist --holdout kept out (0 if none), and the
 * geometry of the images it was trained on: its data fingerprint's ("train
 * NxRxC ..."), else a conv model's side (else 0, unknown). */
static tg_vae *load_model(const char *path, int *holdout, int *rows, int *cols,
                          char train_fp[TG_FINGERPRINT_MAX])
{
    tg_vae *vae;
    tg_vae_info info;
    tg_status st = tg_vae_open(path, &vae, &info);
    if (st == TG_ERR_NOMEM) /* not a bad checkpoint */
        cli_out_of_memory(tg_errmsg());
    if (st != TG_OK)
        fail_data();
    /* An absent 'likelihood' means a Bernoulli only in files from before
     * it; vae_mnist's files with 'shards' (newer) all have it, as its
     * --resume requires (a continuous Bernoulli model whose key was lost
     * was scored as a Bernoulli one) */
    if (tg_meta_get(&info.meta, "shards") &&
        !tg_meta_get(&info.meta, "likelihood")) {
        cli_error("%s: metadata 'likelihood' is missing (every file with "
                  "'shards' has it)",
                  path);
        exit(2);
    }
    /* absent (vae_mnist before --holdout): 0; present, it must be a count
     * (a damaged value read as 0 silently changed the reference images) */
    int64_t h = 0;
    const char *v = tg_meta_get(&info.meta, "holdout");
    if (v && (tg_meta_get_int(&info.meta, "holdout", &h) != TG_OK || h < 0 ||
              h > (1 << 30))) {
        cli_error("%s: metadata 'holdout' is '%.40s', not a number "
                  "of images in 0..%d",
                  path, v, 1 << 30);
        exit(2);
    }
    *holdout = (int)h;
    const char *fp = tg_meta_get(&info.meta, "data");
    /* "train <fingerprint>; test <fingerprint>" */
    train_fp[0] = '\0';
    const char *end = fp ? strstr(fp, "; test ") : NULL;
    if (fp && !strncmp(fp, "train ", 6) && end &&
        end - (fp + 6) < TG_FINGERPRINT_MAX) {
        memcpy(train_fp, fp + 6, (size_t)(end - (fp + 6)));
        train_fp[end - (fp + 6)] = '\0';
    }
    *rows = *cols = 0;
    if (!fp || sscanf(fp, "train %*dx%9dx%9d", rows, cols) != 2 || *rows < 1 ||
        *cols < 1 || (long long)*rows * *cols != vae->cfg.input) {
        int side = (int)lround(sqrt((double)vae->cfg.input));
        *rows = *cols = vae->cfg.arch == TG_VAE_CONV ? side : 0;
    }
    return vae;
}

static void load_data(tg_dataset *ds, const char *dir, bool train, bool ood,
                      const inputs *in, const char *checkpoint)
{
    const tg_vae *vae = in->vae;
    /* no set needs labels; an OOD set may be an images file */
    bool loaded;
    if (ood) {
        tg_status st = tg_idx_images_load(dir, false, ds);
        if (st == TG_ERR_NOMEM) /* not bad data */
            cli_out_of_memory(tg_errmsg());
        loaded = st == TG_OK;
    } else {
        loaded = cli_load_unlabelled(dir, train, ds);
    }
    if (!loaded) {
        if (train)
            cli_error("%s (the training images give the "
                      "reference statistics and the background model)",
                      tg_errmsg());
        else
            cli_error("%s", tg_errmsg());
        exit(2);
    }
    if (ds->rows * ds->cols != vae->cfg.input) {
        cli_error("%s: images are %dx%d but the model takes %d "
                  "pixels",
                  dir, ds->rows, ds->cols, vae->cfg.input);
        exit(2);
    }
    /* the same pixels in another geometry (14x56 for 28x28) scored without
     * a word: a conv model read them as 28 rows of 28 */
    if (in->rows && (ds->rows != in->rows || ds->cols != in->cols)) {
        cli_error("%s: images are %dx%d but %s was trained on %dx%d "
                  "images",
                  dir, ds->rows, ds->cols, checkpoint, in->rows, in->cols);
        exit(2);
    }
}

/* A set scored beside the in-distribution test set has its geometry, not
 * only its number of pixels (14x56 is not 28x28). */
static void same_geometry(const tg_dataset *ds, const char *dir,
                          const char *what, const tg_dataset *test)
{
    if (ds->rows != test->rows || ds->cols != test->cols) {
        cli_error("%s: %s images are %dx%d, the in-distribution "
                  "test images %dx%d",
                  dir, what, ds->rows, ds->cols, test->rows, test->cols);
        exit(2);
    }
}

void load_inputs(inputs *in, const options *o)
{
    memset(in, 0, sizeof *in);
    char trained_fp[TG_FINGERPRINT_MAX];
    in->vae = load_model(o->checkpoint, &in->holdout, &in->rows, &in->cols,
                         trained_fp);
    load_data(&in->test, o->data, false, false, in, o->checkpoint);
    load_data(&in->train, o->data, true, false, in, o->checkpoint);
    if (in->holdout >= in->train.n) {
        cli_error("%s: metadata 'holdout' says %d training images "
                  "were kept out of training, but %s has only %d: not the data "
                  "it was trained on",
                  o->checkpoint, in->holdout, o->data, in->train.n);
        exit(2);
    }
    /* the images it trained on: --data's training set less the held-out
     * ones. Other data is scored (how a model sees another set is a fair
     * question), but its images are not called held out or seen. */
    in->data = DATA_UNKNOWN;
    char here[TG_FINGERPRINT_MAX];
    if (trained_fp[0]) {
        tg_dataset trained = in->train;
        trained.n -= in->holdout;
        tg_dataset_fingerprint(&trained, here);
        in->data = strcmp(here, trained_fp) ? DATA_OTHER : DATA_SAME;
    }
    if (in->data == DATA_OTHER) {
        /* on stdout, with the report (stderr keeps one line for a
         * failure) */
        printf("note: %s was trained on other data (%s) than those of %s "
               "(%s): its reference images are not from the data it was "
               "trained on\n",
               o->checkpoint, trained_fp, o->data, here);
        in->holdout = 0; /* not these images' */
    }
    cli_note_labels(&in->test, o->data, false, 10,
                    "labels only colour latent.svg (modulo 10) and are "
                    "copied to scores.csv");
    same_geometry(&in->train, o->data, "training", &in->test);
    if (o->ood) {
        load_data(&in->ood, o->ood, false, true, in, o->checkpoint);
        same_geometry(&in->ood, o->ood, "test", &in->test);
        cli_note_labels(&in->ood, o->ood, false, 10,
                        "labels are only copied to scores.csv");
    }
}

void free_inputs(inputs *in)
{
    tg_dataset_free(&in->test);
    tg_dataset_free(&in->train);
    tg_dataset_free(&in->ood);
    tg_vae_free(in->vae);
}

static scored *add_set(set_list *sl, const char *name, const float *images,
                       const uint8_t *labels, int n, int rows, int cols,
                       uint64_t tag, bool ood)
{
    scored *s = &sl->set[sl->n++];
    memset(s, 0, sizeof *s);
    s->name = name;
    snprintf(s->label, sizeof s->label, "%s", name);
    s->images = images;
    s->labels = labels;
    s->n = n;
    s->side_r = rows;
    s->side_c = cols;
    s->stream = tag * STREAM_UNIT;
    s->ood = ood;
    double **arrays[] = {&s->log_px, &s->elbo,     &s->ess,
                         &s->L,      &s->nll_bits, &s->log_bg};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++)
        *arrays[i] = xcalloc((size_t)n, sizeof(double));
    for (int i = 0; i < N_SCORES; i++)
        s->score[i] = xcalloc((size_t)n, sizeof(double));
    return s;
}

/* The near-OOD images: each test image rotated 90 degrees anticlockwise
 * (square images) or flipped left-right. */
static float *transformed(const tg_dataset *ds, int n, bool rot)
{
    int r = ds->rows, c = ds->cols;
    float *out = xcalloc((size_t)n * r * c, sizeof(float));
    for (int i = 0; i < n; i++) {
        const float *src = ds->images + (size_t)i * r * c;
        float *dst = out + (size_t)i * r * c;
        for (int y = 0; y < r; y++)
            for (int x = 0; x < c; x++)
                dst[y * c + x] =
                    rot ? src[x * c + (c - 1 - y)] : src[y * c + (c - 1 - x)];
    }
    return out;
}

/* The reference: the last n_ref training images (those vae_mnist --holdout
 * kept out of training, when it did); the background model is fitted on
 * the training images before them. */
static void add_reference(set_list *sl, const inputs *in, const options *o)
{
    const tg_dataset *train = &in->train;
    int n_ref = in->holdout ? in->holdout : o->ref_images;
    /* what set n_ref, named when it is too small (the message blamed the
     * training set, 256 images, for --max-images 2) */
    char why[64];
    snprintf(why, sizeof why,
             in->holdout ? "the checkpoint's --holdout %d" : "--ref-images %d",
             n_ref);
    if (o->max_images && n_ref > o->max_images) {
        n_ref = o->max_images;
        snprintf(why, sizeof why, "--max-images %d", n_ref);
    }
    if (n_ref < 3 && n_ref <= train->n / 2) {
        cli_error("%s leaves %d reference images, fewer than 3", why, n_ref);
        exit(2);
    }
    if (n_ref > train->n / 2)
        n_ref = train->n / 2;
    if (n_ref < 3) {
        cli_error("%s: %d training images are too few for a "
                  "reference and a background model",
                  o->data, train->n);
        exit(2);
    }
    sl->n_bg = train->n - n_ref;
    if (strcmp(o->reference, "train")) {
        /* the reference is the scored test set: too few images were found
         * after scoring every set, blaming images "that differ" */
        if (sl->in->n < 3) {
            cli_error("--reference test: the test set of %s has %d "
                      "images, fewer than 3",
                      o->data, sl->in->n);
            exit(2);
        }
        return;
    }
    int n_bg = sl->n_bg, input = in->vae->cfg.input;
    sl->ref = add_set(sl, "ref", train->images + (size_t)n_bg * input,
                      train->labels ? train->labels + n_bg : NULL, n_ref,
                      in->test.rows, in->test.cols, 4, false);
    sl->ref_kind = in->data == DATA_OTHER ? "not the checkpoint's training data"
                   : in->holdout >= n_ref ? "held out of training"
                                          : "seen in training";
    snprintf(sl->ref->desc, sizeof sl->ref->desc,
             "training images %d..%d of %s (the reference, %s)", n_bg,
             train->n - 1, o->data, sl->ref_kind);
}

/* The test set of --ood-data (or the images of the file it names),
 * labelled "ood: <the last name of its path>" in the pictures (letters,
 * digits, . _ - only). */
static void add_ood(set_list *sl, const tg_dataset *ds, const options *o)
{
    int n = o->max_images && o->max_images < ds->n ? o->max_images : ds->n;
    scored *s = add_set(sl, "ood", ds->images, ds->labels, n, ds->rows,
                        ds->cols, 1, true);
    struct stat st;
    bool file = stat(o->ood, &st) == 0 && !S_ISDIR(st.st_mode);
    snprintf(s->desc, sizeof s->desc, "the %s of %s",
             file ? "images" : "test set", o->ood);
    const char *base = o->ood + strlen(o->ood);
    while (base > o->ood && base[-1] == '/')
        base--;
    const char *end = base;
    while (base > o->ood && base[-1] != '/')
        base--;
    int len = (int)(end - base) > 30 ? 30 : (int)(end - base);
    snprintf(s->label, sizeof s->label, "ood: %.*s", len, base);
    for (char *c = s->label + 5; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("._-", *c))
            *c = '_';
}

/* The near-OOD sets --near-ood asks for, from the first n test images. */
static void add_near(set_list *sl, const tg_dataset *test, int n,
                     const options *o)
{
    static const char *const near_names[2] = {"rot90", "hflip"};
    for (int t = 0; t < 2; t++) {
        if (!strcmp(o->near, "none") || !near_wanted(o, near_names[t]))
            continue;
        if (t == 0 && test->rows != test->cols) {
            cli_error("rot90 needs square images, %s has "
                      "%dx%d (use --near-ood hflip)",
                      o->data, test->rows, test->cols);
            exit(2);
        }
        sl->near_img[t] = transformed(test, n, t == 0);
        scored *s = add_set(sl, near_names[t], sl->near_img[t], test->labels, n,
                            test->rows, test->cols, t == 0 ? 8 : 12, true);
        snprintf(s->desc, sizeof s->desc, "the test images %s",
                 t == 0 ? "rotated 90 degrees anticlockwise"
                        : "flipped left-right");
    }
}

/* The sets to score, in order: in, ref, ood, rot90, hflip. */
void make_sets(set_list *sl, const inputs *in, const options *o)
{
    memset(sl, 0, sizeof *sl);
    const tg_dataset *test = &in->test;
    int n_in =
        o->max_images && o->max_images < test->n ? o->max_images : test->n;
    sl->in = add_set(sl, "in", test->images, test->labels, n_in, test->rows,
                     test->cols, 0, false);
    snprintf(sl->in->desc, sizeof sl->in->desc, "the test set of %s", o->data);
    snprintf(sl->in->label, sizeof sl->in->label, "in-distribution");
    add_reference(sl, in, o);
    if (o->ood)
        add_ood(sl, &in->ood, o);
    add_near(sl, test, n_in, o);
}

void free_sets(set_list *sl)
{
    for (int g = 0; g < sl->n; g++) {
        scored *s = &sl->set[g];
        free(s->log_px);
        free(s->elbo);
        free(s->ess);
        free(s->L);
        free(s->nll_bits);
        free(s->log_bg);
        for (int c = 0; c < N_SCORES; c++)
            free(s->score[c]);
    }
    free(sl->near_img[0]);
    free(sl->near_img[1]);
}

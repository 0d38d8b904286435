/* bnn_mnist: predictive uncertainty of a 784-400-400-10 ReLU classifier by
 * four methods, compared in one table:
 *   det        the deterministic network (the baseline, one pass)
 *   mcdropout  dropout after each hidden layer, kept on at test time
 *              (Gal & Ghahramani 2016), S passes
 *   bbb        Bayes by Backprop: variational Dense layers (tg_bayes_dense),
 *              loss = NLL + KL / N, S sampled passes
 *   ensemble   M independently seeded deterministic networks
 *              (Lakshminarayanan et al. 2017), one pass each
 * Scores the test set (accuracy, NLL, Brier, ECE, accuracy at coverage) and
 * an out-of-distribution folder (AUROC of predictive entropy, mutual
 * information and max-softmax), and draws the pictures into --out. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bnn_mnist.h"
#include "cli.h"

static const char *const method_names[N_METHODS] = {"det", "mcdropout", "bbb",
                                                    "ensemble"};

/* where bbb's rho should end (rho_init_auto) */
#define RHO_END -3.6
#define RHO_END_STR "-3.6"
/* Debian's dataset-fashion-mnist (tests/examples build a copy that looks
 * elsewhere, to meet a damaged one) */
#ifndef DEFAULT_OOD_DIR
#define DEFAULT_OOD_DIR "/usr/share/datasets/fashion-mnist"
#endif

static options parse_options(int argc, char **argv)
{
    options o = {0};
    o.rho_init = NAN; /* absent: from the number of steps (rho_init_auto) */
    /* --method may be given more than once: each named method runs. */
    static const char *const methods[N_METHODS + 2] = {
        "det", "mcdropout", "bbb", "ensemble", "all", NULL};
    cli_choice method = {methods, 0, 0};
    const cli_flag flags[] = {
        {"method", CLI_CHOICE, &method, 0, 0, "M", "all",
         "det | mcdropout | bbb | ensemble | all"},
        CLI_FLAG_DATA(&o.data),
        {"ood-data", CLI_STR, &o.ood, 0, 0, "DIR", NULL,
         "out-of-distribution IDX folder (its t10k images are scored, "
         "labels optional) or IDX images file (default " DEFAULT_OOD_DIR
         ", skipped when absent or of another image size, refused when "
         "unreadable; none: no OOD set)"},
        {"out", CLI_STR, &o.out, 0, 0, "DIR", NULL,
         "write reliability_<method>.svg, coverage.svg and "
         "sure_<method>.png there, removing those an earlier run left of "
         "methods this run does not train (default: no pictures)"},
        {"epochs", CLI_INT, &o.epochs, 1, 100000, "N", "10", "epochs"},
        CLI_FLAG_BATCH(&o.batch, "128"),
        {"hidden", CLI_INT, &o.hidden, 1, 65536, "N", "400",
         "units per hidden layer"},
        {"lr", CLI_FLOAT, &o.lr, 0, 1e6, "X", "1e-3", "Adam learning rate"},
        {"samples", CLI_INT, &o.samples, 1, 10000, "S", "30",
         "test-time passes for mcdropout and bbb"},
        {"members", CLI_INT, &o.members, 1, MAX_MEMBERS, "M", "5",
         "ensemble size"},
        {"dropout", CLI_FLOAT_IN, &o.dropout, 0, 0.95, "P", "0.25",
         "mcdropout's drop probability"},
        {"prior-scale", CLI_FLOAT, &o.prior_scale, 0, 1e6, "X", "1",
         "bbb's prior N(0, X^2)"},
        {"rho-init", CLI_FLOAT_IN, &o.rho_init, -30, 10.0, "X", NULL,
         "bbb's initial rho, sigma = softplus(rho) (default: " RHO_END_STR
         " - lr x training steps, clamped to [-30, " RHO_END_STR "], so "
         "that sigma ends near softplus(" RHO_END_STR "); see README)"},
        {"kl-warmup", CLI_INT, &o.kl_warmup, 0, 100000, "E", "0",
         "bbb: the KL's weight rises linearly to 1/N over the first E "
         "epochs (0: 1/N from the start)"},
        {"train-samples", CLI_INT, &o.train_samples, 1, 64, "K", "1",
         "bbb: posterior samples per training step (the NLL's mean over "
         "K passes)"},
        CLI_FLAG_SEED(&o.seed),
        CLI_FLAG_THREADS(&o.threads),
        CLI_FLAG_MAX_BATCHES(&o.max_batches),
        {"max-eval", CLI_INT, &o.max_eval, 1, 1 << 30, "N", NULL,
         "score only the first N test and OOD images"},
    };
    CLI_PARSE(
        argc, argv, flags,
        "usage: bnn_mnist [options]\n"
        "Trains a 784-H-H-10 ReLU classifier by one or all of four methods "
        "and prints one table of predictive quality and uncertainty.\n",
        "Throughput: training = epochs x training images / training time "
        "(the ensemble's time covers all its members); inference = test and "
        "OOD images / time to compute their S-sample predictive. The same "
        "seed gives the same table (throughput aside) on any thread count.\n"
        "A method's own flags (--samples, --members, --dropout, "
        "--prior-scale, --rho-init, --kl-warmup, --train-samples) are "
        "refused when no method that uses them runs.\n"
        "Exit status: 0 done; 1 an output file could not be written, or "
        "without --out standard output (the table is the result: a closed "
        "pipe stops the run at once); 2 bad flags or input data; 3 the loss "
        "or a trained network's predictions became NaN/Inf. With --out, a "
        "closed standard output (| head) "
        "does not stop it: a note on stderr, the pictures are written.\n");
    o.ood_given = o.ood != NULL;
    if (!o.ood_given)
        o.ood = DEFAULT_OOD_DIR;
    o.no_ood = !strcmp(o.ood, "none");
    unsigned run = 0;
    for (int k = 0; k < N_METHODS; k++) {
        o.run[k] = method.given == 0 || (method.given >> N_METHODS) & 1u ||
                   (method.given >> k) & 1u;
        run |= (unsigned)o.run[k] << k;
    }
    /* a method's own flag, given when no method that uses it runs, would
     * change nothing: refused (--method det --dropout 0.5 ran det alone,
     * its header showing the flag's value as if used) */
    const struct {
        const void *value;
        const char *flag, *methods;
        unsigned uses; /* bit k: method k */
    } own[] = {
        {&o.samples, "--samples", "mcdropout or bbb",
         1u << MCDROPOUT | 1u << BBB},
        {&o.members, "--members", "ensemble", 1u << ENSEMBLE},
        {&o.dropout, "--dropout", "mcdropout", 1u << MCDROPOUT},
        {&o.prior_scale, "--prior-scale", "bbb", 1u << BBB},
        {&o.rho_init, "--rho-init", "bbb", 1u << BBB},
        {&o.kl_warmup, "--kl-warmup", "bbb", 1u << BBB},
        {&o.train_samples, "--train-samples", "bbb", 1u << BBB},
    };
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (cli_given(own[i].value) && !(own[i].uses & run))
            cli_usage_error("%s is for --method %s, which this run does not "
                            "train",
                            own[i].flag, own[i].methods);
    return o;
}

typedef struct eval_set {
    const float *images;
    const int *labels; /* NULL for OOD */
    int n;
} eval_set;

static bool finite_all(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

/* Trains by method, scores test (and ood when ood->n > 0) into r. */
static void run_method(int method, const options *o,
                       const tg_dataset *train_set, const eval_set *test,
                       const eval_set *ood, bnn_result *r)
{
    int input = train_set->rows * train_set->cols;
    int n_nets = method == ENSEMBLE ? o->members : 1;
    int S = method == ENSEMBLE ? o->members : method == DET ? 1 : o->samples;
    net nets[MAX_MEMBERS];
    double train_s = 0.0;
    long seen = 0;
    for (int k = 0; k < n_nets; k++) {
        /* member k: its own init and data order */
        uint64_t seed = o->seed + 1000003ull * (uint64_t)k;
        net_init(&nets[k], method, o, input, seed);
        char what[64];
        snprintf(what, sizeof what, "%s member %d", method_names[method],
                 k + 1);
        train_s += train(&nets[k], o, train_set, seed,
                         n_nets > 1 ? what : method_names[method], &seen);
    }
    /* the ensemble's throughput: images through the whole ensemble */
    double trained = (double)seen / n_nets;

    size_t plane = (size_t)BNN_CLASSES * S;
    float *st = malloc(sizeof(float) * plane * (size_t)test->n);
    float *so = ood->n ? malloc(sizeof(float) * plane * (size_t)ood->n) : NULL;
    r->mean = malloc(sizeof(float) * BNN_CLASSES * (size_t)test->n);
    r->u = malloc(sizeof *r->u * (size_t)test->n);
    float *ood_mean =
        ood->n ? malloc(sizeof(float) * BNN_CLASSES * (size_t)ood->n) : NULL;
    tg_uncertainty *ood_u =
        ood->n ? malloc(sizeof *ood_u * (size_t)ood->n) : NULL;
    if (!st || !r->mean || !r->u || (ood->n && (!so || !ood_mean || !ood_u)))
        tg_out_of_memory("predictions", "out of memory for %d samples", S);

    tg_tape *tp = tg_tape_new();
    tg_rng noise;
    tg_rng_seed(&noise, o->seed, 2);
    tg_rng *rng = method == MCDROPOUT || method == BBB ? &noise : NULL;
    double t0 = cli_now();
    predict(tp, nets, n_nets, S, rng, test->images, test->n, input, st);
    if (ood->n)
        predict(tp, nets, n_nets, S, rng, ood->images, ood->n, input, so);
    double infer_s = cli_now() - t0;
    tg_tape_free(tp);
    /* weights that the last steps blew up (finite losses, then --lr 1e6)
     * give Inf logits, NaN probabilities: tg_predictive aborted on them */
    if (!finite_all(st, plane * (size_t)test->n) ||
        !finite_all(so, plane * (size_t)ood->n)) {
        cli_error("%s: the trained network's predictions are not finite "
                  "(its weights overflowed); stopped (try a smaller --lr)",
                  method_names[method]);
        exit(3);
    }

    tg_predictive(st, S, test->n, BNN_CLASSES, r->mean, r->u);
    const float *p = r->mean;
    const int *y = test->labels;
    int n = test->n;
    r->method = method_names[method];
    r->acc = tg_metric_accuracy(p, y, n, BNN_CLASSES);
    r->nll = tg_metric_nll(p, y, n, BNN_CLASSES);
    r->brier = tg_metric_brier(p, y, n, BNN_CLASSES);
    r->ece = tg_metric_ece(p, y, n, BNN_CLASSES, BNN_BINS, r->bins);
    r->acc90 = tg_metric_accuracy_at_coverage(p, y, n, BNN_CLASSES, 0.9);
    r->acc80 = tg_metric_accuracy_at_coverage(p, y, n, BNN_CLASSES, 0.8);
    r->has_mi = S > 1;
    r->train_per_s = trained / train_s;
    r->infer_per_s = (test->n + ood->n) / infer_s;
    r->auroc_entropy = r->auroc_mi = r->auroc_msp = NAN;
    if (ood->n) {
        tg_predictive(so, S, ood->n, BNN_CLASSES, ood_mean, ood_u);
        /* higher score = more likely out of distribution */
        double *in_s = malloc(sizeof(double) * (size_t)n);
        double *out_s = malloc(sizeof(double) * (size_t)ood->n);
        if (!in_s || !out_s)
            tg_out_of_memory("ood scores", "out of memory");
        for (int which = 0; which < 3; which++) {
            for (int i = 0; i < n + ood->n; i++) {
                bool in = i < n;
                int j = in ? i : i - n;
                const tg_uncertainty *u = in ? &r->u[j] : &ood_u[j];
                const float *pm =
                    (in ? r->mean : ood_mean) + (size_t)j * BNN_CLASSES;
                double v;
                if (which == 0)
                    v = u->total;
                else if (which == 1)
                    v = u->epistemic;
                else {
                    float mx = pm[0];
                    for (int k = 1; k < BNN_CLASSES; k++)
                        mx = pm[k] > mx ? pm[k] : mx;
                    v = -(double)mx;
                }
                (in ? in_s : out_s)[j] = v;
            }
            double a = tg_auroc(in_s, n, out_s, ood->n);
            *(which == 0   ? &r->auroc_entropy
              : which == 1 ? &r->auroc_mi
                           : &r->auroc_msp) = a;
        }
        free(in_s);
        free(out_s);
    }
    free(st);
    free(so);
    free(ood_mean);
    free(ood_u);
    for (int k = 0; k < n_nets; k++)
        tg_params_free(nets[k].ps);
}

/* ---- data and output --------------------------------------------------- */

/* The OOD set at path; out of memory is not bad data. */
static tg_status load_ood(const char *path, tg_dataset *ds)
{
    tg_status st = tg_idx_images_load(path, false, ds);
    if (st == TG_ERR_NOMEM)
        cli_out_of_memory(tg_errmsg());
    return st;
}

static bool load(const char *dir, bool train, tg_dataset *ds)
{
    tg_status st = tg_mnist_load(dir, train, ds);
    if (st == TG_ERR_NOMEM) /* not bad data */
        cli_out_of_memory(tg_errmsg());
    if (st != TG_OK) {
        cli_error("%s", tg_errmsg());
        return false;
    }
    return true;
}

static void print_number(double v, bool shown)
{
    if (shown && isfinite(v))
        printf(" %9.4f", v);
    else
        printf(" %9s", "-");
}

static void print_table(const bnn_result *r, int n)
{
    printf("%-10s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "method",
           "acc", "NLL", "Brier", "ECE", "AUROC-H", "AUROC-MI", "AUROC-MSP",
           "acc@90%", "acc@80%", "train/s", "infer/s");
    for (int i = 0; i < n; i++) {
        printf("%-10s", r[i].method);
        print_number(r[i].acc, true);
        print_number(r[i].nll, true);
        print_number(r[i].brier, true);
        print_number(r[i].ece, true);
        print_number(r[i].auroc_entropy, true);
        print_number(r[i].auroc_mi, r[i].has_mi);
        print_number(r[i].auroc_msp, true);
        print_number(r[i].acc90, true);
        print_number(r[i].acc80, true);
        printf(" %9.0f %9.0f\n", r[i].train_per_s, r[i].infer_per_s);
    }
}

/* The default OOD folder is there unless its path names nothing (then it
 * is skipped); anything else there, it is read or refused. */
static bool default_ood_there(const char *dir)
{
    struct stat st;
    return stat(dir, &st) == 0 || errno != ENOENT;
}

/* Loads the training and test sets and (when given, or present at the
 * default place) the OOD test set, and checks their sizes and labels.
 * Returns 0, or 2 after printing one line. The default set, of another
 * size than the training images, is skipped: its rows and cols go to
 * skipped, for the caller's note. */
static int load_data(const options *o, tg_dataset *train_set,
                     tg_dataset *test_set, tg_dataset *ood_set, bool *have_ood,
                     int skipped[2])
{
    if (!load(o->data, true, train_set) || !load(o->data, false, test_set))
        return 2;
    /* the same geometry, not only the same number of pixels: a 14x56
     * image is not a 28x28 one */
    int r = train_set->rows, c = train_set->cols;
    if (test_set->rows != r || test_set->cols != c) {
        cli_error("%s: images are %dx%d, the training images %dx%d", o->data,
                  test_set->rows, test_set->cols, r, c);
        return 2;
    }
    const tg_dataset *sets[2] = {train_set, test_set};
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < sets[s]->n; i++)
            if (sets[s]->labels[i] >= BNN_CLASSES) {
                cli_error("%s: label %d of image %d is not 0..9",
                          cli_labels_file(o->data, s == 0), sets[s]->labels[i],
                          i);
                return 2;
            }
    if (o->no_ood) {
    } else if (o->ood_given) { /* scored only: labels optional */
        if (load_ood(o->ood, ood_set) != TG_OK) {
            cli_error("%s", tg_errmsg());
            return 2;
        }
        *have_ood = true;
        if (ood_set->rows != r || ood_set->cols != c) {
            cli_error("%s: images are %dx%d, the training images %dx%d", o->ood,
                      ood_set->rows, ood_set->cols, r, c);
            return 2;
        }
    } else if (default_ood_there(o->ood)) {
        /* the default set, not asked for: there, it must be readable (a
         * damaged one, as a truncated file, was skipped in silence) */
        if (load_ood(o->ood, ood_set) != TG_OK) {
            cli_error("%s (the default OOD set; --ood-data none runs "
                      "without one)",
                      tg_errmsg());
            return 2;
        }
        /* of another size, it is skipped (it failed the run) */
        *have_ood = ood_set->rows == r && ood_set->cols == c;
        if (!*have_ood) { /* noted once every check has passed */
            skipped[0] = ood_set->rows;
            skipped[1] = ood_set->cols;
            tg_dataset_free(ood_set);
        }
    }
    return 0;
}

/* The sets scored: the first --max-eval test images with their labels,
 * and as many OOD images when there are any. Returns test's labels, for
 * the caller to free. */
static int *eval_sets(const options *o, const tg_dataset *test_set,
                      const tg_dataset *ood_set, bool have_ood, eval_set *test,
                      eval_set *ood)
{
    int n_test =
        o->max_eval && o->max_eval < test_set->n ? o->max_eval : test_set->n;
    int n_ood = !have_ood                                 ? 0
                : o->max_eval && o->max_eval < ood_set->n ? o->max_eval
                                                          : ood_set->n;
    int *test_labels = malloc(sizeof(int) * (size_t)n_test);
    if (!test_labels)
        tg_out_of_memory("test labels", "out of memory for %d labels", n_test);
    for (int i = 0; i < n_test; i++)
        test_labels[i] = test_set->labels[i];
    *test = (eval_set){test_set->images, test_labels, n_test};
    *ood = (eval_set){have_ood ? ood_set->images : NULL, NULL, n_ood};
    return test_labels;
}

/* Runs each method --method asks for into results (n_results of them),
 * drawing its pictures into --out when given, then the coverage chart of
 * all. Returns 0, or 1 when a picture could not be written. */
static int run_methods(const options *o, const tg_dataset *train_set,
                       const eval_set *test, const eval_set *ood, int side_r,
                       int side_c, bnn_result *results, int *n_results)
{
    int status = 0;
    *n_results = 0;
    for (int k = 0; k < N_METHODS; k++) {
        if (!o->run[k])
            continue;
        bnn_result *r = &results[(*n_results)++];
        memset(r, 0, sizeof *r);
        run_method(k, o, train_set, test, ood, r);
        /* the first picture that cannot be written stops the run: one
         * line, not one per picture after training every method */
        if (o->out && (!bnn_plot_reliability(o->out, r) ||
                       !bnn_plot_sure(o->out, r, test->images, side_r, side_c,
                                      test->labels, test->n))) {
            cli_error("%s", tg_errmsg());
            return 1;
        }
    }
    if (o->out && status == 0 &&
        !bnn_plot_coverage(o->out, results, *n_results, test->labels,
                           test->n)) {
        cli_error("%s", tg_errmsg());
        status = 1;
    }
    return status;
}

/* Under the KL's pull every rho whose data gradient is small (most of
 * them) rises by about lr per Adam step, whatever the KL's weight, so
 * after T steps sigma is softplus(rho_init + lr T) long before the ELBO's
 * optimum. The default starts rho at RHO_END - lr T, so sigma ends near
 * softplus(RHO_END) for any data size, epoch count or learning rate (tuned
 * on validation splits of MNIST and Fashion-MNIST; README). */
static float rho_init_auto(const options *o, int n_train)
{
    long batches = (n_train + o->batch - 1) / o->batch;
    if (o->max_batches && o->max_batches < batches)
        batches = o->max_batches;
    double r = RHO_END - (double)o->lr * (double)batches * o->epochs;
    return (float)(r < -30.0 ? -30.0 : r);
}

/* The 784-H-H-10 network (bbb's holds a mean and a rho per weight): past a
 * tg_params' reservation it aborted in tg_params_add. Exits 2, writing
 * nothing. */
static void check_model_size(const options *o, const tg_dataset *train_set)
{
    uint64_t in = (uint64_t)train_set->rows * (uint64_t)train_set->cols,
             h = (uint64_t)o->hidden;
    char what[96];
    snprintf(what, sizeof what, "--hidden %d on %dx%d images%s", o->hidden,
             train_set->rows, train_set->cols, o->run[BBB] ? " (bbb)" : "");
    cli_check_model_size(((in + 1) * h + (h + 1) * h + (h + 1) * BNN_CLASSES) *
                             (o->run[BBB] ? 2 : 1),
                         what);
    cli_check_batch_size(o->batch, train_set->rows, train_set->cols);
}

/* The pictures' names in --out are files this run can replace: one taken
 * by a folder or a FIFO is refused before training (it was found when
 * written, after training the methods before it). */
static bool outputs_writable(const options *o)
{
    char names[2 * N_METHODS + 1][32];
    const char *list[2 * N_METHODS + 1];
    int n = 0;
    for (int k = 0; k < N_METHODS; k++)
        if (o->run[k]) {
            snprintf(names[n], sizeof names[n], "reliability_%s.svg",
                     method_names[k]);
            snprintf(names[n + 1], sizeof names[n + 1], "sure_%s.png",
                     method_names[k]);
            n += 2;
        }
    snprintf(names[n++], sizeof names[0], "coverage.svg");
    for (int i = 0; i < n; i++)
        list[i] = names[i];
    return cli_check_outputs(o->out, list, n);
}

/* The pictures of the methods this run does not train, left in --out by an
 * earlier run, are removed before training: next to this run's
 * coverage.svg, which has no line for them, they passed for this run's
 * (--method det into a folder of --method all kept the other three
 * methods' pictures of another seed or epoch count). Only regular files
 * and links to them (the link, not the file it names) go. */
static bool remove_other_pictures(const options *o)
{
    for (int k = 0; k < N_METHODS; k++)
        for (int p = 0; p < 2 && !o->run[k]; p++) {
            char name[32];
            snprintf(name, sizeof name,
                     p ? "sure_%s.png" : "reliability_%s.svg", method_names[k]);
            if (!cli_remove_stale_output(o->out, name,
                                         "an earlier run's picture of a "
                                         "method this run does not train"))
                return false;
        }
    return true;
}

int main(int argc, char **argv)
{
    cli_prog = "bnn_mnist";
    cli_one_process();
    cli_stop_cleanly();
    options o = parse_options(argc, argv);
    tg_set_threads(o.threads);
    if (o.out && !cli_check_out_dir(o.out))
        return 1;

    tg_dataset train_set = {0}, test_set = {0}, ood_set = {0};
    bool have_ood = false;
    int skipped[2] = {0, 0}; /* the default OOD set's size, when skipped */
    int code =
        load_data(&o, &train_set, &test_set, &ood_set, &have_ood, skipped);
    if (code == 0)
        check_model_size(&o, &train_set);
    if (code == 0 && o.out &&
        (!cli_prepare_out_dir(o.out) || !outputs_writable(&o) ||
         !remove_other_pictures(&o)))
        code = 1;
    if (code) {
        tg_dataset_free(&train_set);
        tg_dataset_free(&test_set);
        tg_dataset_free(&ood_set);
        return code;
    }
    /* after the checks: a refused run says one line, without this note */
    if (skipped[0])
        cli_error("note: %s (the default OOD set) has %dx%d images, the "
                  "training images are %dx%d: no OOD set (--ood-data gives "
                  "one)",
                  o.ood, skipped[0], skipped[1], train_set.rows,
                  train_set.cols);
    if (isnan(o.rho_init))
        o.rho_init = rho_init_auto(&o, train_set.n);
    eval_set test, ood;
    int *test_labels =
        eval_sets(&o, &test_set, &ood_set, have_ood, &test, &ood);
    /* the settings of the methods this run trains only (a det run showed
     * S, M and rho as if it used them) */
    char own[96] = "";
    size_t at = 0;
    if (o.run[MCDROPOUT] || o.run[BBB])
        at +=
            (size_t)snprintf(own + at, sizeof own - at, "S = %d, ", o.samples);
    if (o.run[ENSEMBLE])
        at +=
            (size_t)snprintf(own + at, sizeof own - at, "M = %d, ", o.members);
    if (o.run[BBB])
        snprintf(own + at, sizeof own - at, "bbb rho init %.2f, ",
                 (double)o.rho_init);
    printf("bnn_mnist: %d train / %d test images from %s; OOD: %s (%d "
           "images); model %d-%d-%d-%d, %d epochs, batch %d, Adam lr %g, "
           "%sseed %llu, %d thread(s)\n",
           train_set.n, test.n, o.data, have_ood ? o.ood : "none", ood.n,
           train_set.rows * train_set.cols, o.hidden, o.hidden, BNN_CLASSES,
           o.epochs, o.batch, (double)o.lr, own, (unsigned long long)o.seed,
           tg_get_threads());
    cli_flush_stdout(!o.out); /* without --out the table is the result */

    bnn_result results[N_METHODS];
    int n_results;
    int status = run_methods(&o, &train_set, &test, &ood, test_set.rows,
                             test_set.cols, results, &n_results);
    print_table(results, n_results);
    cli_flush_stdout(!o.out);

    for (int i = 0; i < n_results; i++) {
        free(results[i].mean);
        free(results[i].u);
    }
    free(test_labels);
    tg_dataset_free(&train_set);
    tg_dataset_free(&test_set);
    tg_dataset_free(&ood_set);
    return status;
}

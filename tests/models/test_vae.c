/* The VAE: its loss equals the -ELBO formula evaluated here in double, its
 * gradient w.r.t. every parameter passes a finite-difference check (fixed
 * eps), training on a few hundred digits improves the ELBO, and results do
 * not depend on the thread count. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/expect_abort.h"
#include "tapegrad.h"

enum { B = 4 };

typedef struct fixture {
    tg_vae *vae;
    tg_tensor *x, *eps; /* long-lived: [B, input], [B, latent] */
} fixture;

static fixture make(int input, int hidden, int latent, uint64_t seed)
{
    fixture f;
    f.vae = tg_vae_new(
        (tg_vae_config){input, hidden, latent, TG_VAE_MLP, TG_VAE_BERNOULLI},
        seed);
    f.x = tg_tensor_new2(B, input);
    f.eps = tg_tensor_new2(B, latent);
    tg_rng rng;
    tg_rng_seed(&rng, seed, 99);
    tg_rng_fill_uniform(&rng, f.x->data, f.x->size, 0.0f, 1.0f);
    tg_rng_fill_normal(&rng, f.eps->data, f.eps->size, 0.0f, 1.0f);
    return f;
}

static void unmake(fixture *f)
{
    tg_vae_free(f->vae);
    tg_tensor_free(f->x);
    tg_tensor_free(f->eps);
}

/* out[B, n] = in[B, k] . W^T + b, in double; relu when margin is not NULL,
 * which then gets the smallest |pre-activation| seen. */
static void dense_d(const double *in, int k, const tg_dense_layer *l,
                    double *margin, double *out)
{
    for (int r = 0; r < B; r++)
        for (int o = 0; o < l->out; o++) {
            double s = l->b->data[o];
            for (int i = 0; i < k; i++)
                s += in[r * k + i] * l->W->data[o * k + i];
            if (margin)
                *margin = fmin(*margin, fabs(s));
            out[r * l->out + o] = margin && s < 0 ? 0 : s;
        }
}

/* -ELBO of the batch, straight from the formula in design.md; *margin gets
 * the distance of the nearest ReLU input from its kink. */
static double reference_loss(const fixture *f, double *margin)
{
    const tg_vae *v = f->vae;
    int in = v->cfg.input, h = v->cfg.hidden, z = v->cfg.latent;
    int width = h > 0 ? h : in;
    double *x = malloc(sizeof(double) * B * in);
    double *hid = malloc(sizeof(double) * B * (width > in ? width : in));
    double *enc = malloc(sizeof(double) * B * 2 * z);
    double *zz = malloc(sizeof(double) * B * z);
    double *logits = malloc(sizeof(double) * B * in);
    for (int i = 0; i < B * in; i++)
        x[i] = f->x->data[i];
    *margin = INFINITY;
    if (h > 0)
        dense_d(x, in, &v->enc1, margin, hid);
    dense_d(h > 0 ? hid : x, width, &v->enc2, NULL, enc);
    double total = 0;
    for (int r = 0; r < B; r++)
        for (int j = 0; j < z; j++) {
            double mean = enc[r * 2 * z + j], logvar = enc[r * 2 * z + z + j];
            zz[r * z + j] = mean + exp(0.5 * logvar) * f->eps->data[r * z + j];
            total += -0.5 * (1 + logvar - mean * mean - exp(logvar));
        }
    if (h > 0)
        dense_d(zz, z, &v->dec1, margin, hid);
    dense_d(h > 0 ? hid : zz, h > 0 ? h : z, &v->dec2, NULL, logits);
    for (int i = 0; i < B * in; i++) {
        double p = 1 / (1 + exp(-logits[i]));
        total += -(x[i] * log(p) + (1 - x[i]) * log(1 - p));
    }
    free(x), free(hid), free(enc), free(zz), free(logits);
    return total / B;
}

static void loss_is_the_negative_elbo(int hidden)
{
    fixture f = make(12, hidden, 3, 7);
    tg_tape *tp = tg_tape_new();
    tg_vae_out o = tg_vae_forward_eps(tp, f.vae, f.x, f.eps);
    double margin, want = reference_loss(&f, &margin);
    assert_true(fabs(o.loss->data[0] - want) < 1e-4 * fabs(want));
    /* rec and kl are per row and add up to the loss */
    double sum = 0;
    for (int r = 0; r < B; r++)
        sum += o.rec->data[r] + o.kl->data[r];
    assert_true(fabs(sum / B - o.loss->data[0]) < 1e-4 * fabs(want));
    assert_int_equal(o.mean->shape[1], 3);
    assert_int_equal(o.logits->shape[1], 12);
    tg_tape_free(tp);
    unmake(&f);
}

static void loss_matches_formula_hidden(void **state)
{
    (void)state;
    loss_is_the_negative_elbo(5);
}

static void loss_matches_formula_no_hidden(void **state)
{
    (void)state;
    loss_is_the_negative_elbo(0);
}

static tg_tensor *vae_loss(tg_tape *tp, tg_tensor **inputs, void *ctx)
{
    (void)inputs; /* the parameters, read through the model */
    fixture *f = ctx;
    return tg_vae_forward_eps(tp, f->vae, f->x, f->eps).loss;
}

/* Finite differences are meaningless across a ReLU kink: the fixture is the
 * first seed whose hidden pre-activations all lie at least 0.03 from 0,
 * several times what the largest step (2h = 2^-7, times |input| <= 3) moves
 * them. */
static fixture smooth_fixture(int hidden)
{
    for (uint64_t seed = 1;; seed++) {
        fixture f = make(12, hidden, 3, seed);
        double margin;
        reference_loss(&f, &margin);
        if (margin > 0.03)
            return f;
        unmake(&f);
    }
}

static void gradcheck_every_parameter(int hidden, int n_params)
{
    fixture f = smooth_fixture(hidden);
    tg_params *ps = tg_vae_params(f.vae);
    assert_int_equal(tg_params_count(ps), n_params);
    tg_tensor *inputs[8];
    for (int i = 0; i < n_params; i++)
        inputs[i] = tg_params_get(ps, i);
    tg_gradcheck_report rep;
    tg_gradcheck_opts opts = {
        .eps = 0x1p-8, .atol = 2e-4, .rtol = 1e-3, .seed = 1};
    bool ok = tg_gradcheck(vae_loss, n_params, inputs, &f, &opts, &rep);
    tg_gradcheck_print(&rep, hidden ? "vae 12-5-3" : "vae 12-0-3");
    assert_true(ok);
    assert_true(rep.checked == tg_params_numel(ps));
    unmake(&f);
}

static void gradcheck_hidden(void **state)
{
    (void)state;
    gradcheck_every_parameter(5, 8);
}

static void gradcheck_no_hidden(void **state)
{
    (void)state;
    gradcheck_every_parameter(0, 4);
}

static void parameter_names_and_shapes(void **state)
{
    (void)state;
    tg_vae *v = tg_vae_new(
        (tg_vae_config){784, 400, 20, TG_VAE_MLP, TG_VAE_BERNOULLI}, 1);
    tg_params *ps = tg_vae_params(v);
    const struct {
        const char *name;
        int rows, cols;
    } want[] = {
        {"encoder.fc1.weight", 400, 784}, {"encoder.fc2.weight", 40, 400},
        {"decoder.fc1.weight", 400, 20},  {"decoder.fc2.weight", 784, 400},
        {"encoder.fc1.bias", 400, 0},     {"decoder.fc2.bias", 784, 0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        tg_tensor *t = tg_params_find(ps, want[i].name);
        assert_non_null(t);
        assert_int_equal(t->shape[0], want[i].rows);
        if (want[i].cols)
            assert_int_equal(t->shape[1], want[i].cols);
    }
    /* the PyTorch model's parameter count */
    assert_int_equal(tg_params_numel(ps), 652824);
    tg_vae_free(v);
}

/* reconstruct, decode and sample give probabilities of the right shape;
 * sample is reproducible from its rng. */
static void pictures_are_probabilities(void **state)
{
    (void)state;
    fixture f = make(12, 5, 3, 4);
    tg_tape *tp = tg_tape_new();
    tg_tape_set_recording(tp, false);
    tg_tensor *rec = tg_vae_reconstruct(tp, f.vae, f.x);
    assert_int_equal(rec->shape[0], B);
    assert_int_equal(rec->shape[1], 12);
    for (size_t i = 0; i < rec->size; i++)
        assert_true(rec->data[i] > 0.0f && rec->data[i] < 1.0f);
    tg_rng r1, r2;
    tg_rng_seed(&r1, 5, 1);
    tg_rng_seed(&r2, 5, 1);
    tg_tensor *s1 = tg_vae_sample(tp, f.vae, 6, &r1);
    tg_tensor *s2 = tg_vae_sample(tp, f.vae, 6, &r2);
    assert_int_equal(s1->shape[0], 6);
    assert_memory_equal(s1->data, s2->data, s1->size * sizeof(float));
    tg_tensor *d = tg_vae_decode(tp, f.vae, f.eps);
    assert_int_equal(d->shape[1], 12);
    tg_tape_free(tp);
    unmake(&f);
}

/* forward draws eps ~ N(0, 1) from its rng, row-major, and sample decodes
 * such noise: the same as forward_eps and decode given that noise drawn by
 * hand from a copy of the rng. reconstruct decodes the posterior mean. */
static void forward_and_sample_draw_standard_normal_noise(void **state)
{
    (void)state;
    fixture f = make(12, 5, 3, 8);
    tg_tape *tp = tg_tape_new();
    tg_rng r1, r2;
    tg_rng_seed(&r1, 11, 2);
    tg_rng_seed(&r2, 11, 2);
    tg_tensor *eps = tg_tensor_new2(B, 3);
    tg_rng_fill_normal(&r2, eps->data, eps->size, 0.0f, 1.0f);
    tg_vae_out o = tg_vae_forward(tp, f.vae, f.x, &r1);
    tg_vae_out want = tg_vae_forward_eps(tp, f.vae, f.x, eps);
    assert_memory_equal(o.z->data, want.z->data, o.z->size * sizeof(float));
    assert_true(o.loss->data[0] == want.loss->data[0]);
    /* z - mean = exp(logvar / 2) * eps, by hand */
    for (size_t i = 0; i < o.z->size; i++) {
        double d = exp(0.5 * o.logvar->data[i]) * eps->data[i];
        assert_true(fabs(o.z->data[i] - o.mean->data[i] - d) <
                    1e-5 * (1 + fabs(d)));
    }

    tg_tape_set_recording(tp, false);
    tg_rng_seed(&r1, 12, 0);
    tg_rng_seed(&r2, 12, 0);
    tg_rng_fill_normal(&r2, eps->data, eps->size, 0.0f, 1.0f);
    tg_tensor *s = tg_vae_sample(tp, f.vae, B, &r1);
    tg_tensor *d = tg_vae_decode(tp, f.vae, eps);
    assert_memory_equal(s->data, d->data, s->size * sizeof(float));

    tg_tensor *mean, *logvar;
    tg_vae_encode(tp, f.vae, f.x, &mean, &logvar);
    tg_tensor *rec = tg_vae_reconstruct(tp, f.vae, f.x);
    tg_tensor *dm = tg_vae_decode(tp, f.vae, mean);
    assert_memory_equal(rec->data, dm->data, rec->size * sizeof(float));
    tg_tensor_free(eps);
    tg_tape_free(tp);
    unmake(&f);
}

/* A huge logvar is clamped to 20 before exp: the loss stays finite. */
static void logvar_clamp_keeps_loss_finite(void **state)
{
    (void)state;
    fixture f = make(12, 0, 3, 6);
    tg_tensor *b = f.vae->enc2.b; /* [2*latent]: mean, then logvar */
    for (int j = 3; j < 6; j++)
        b->data[j] = 1e4f;
    tg_tape *tp = tg_tape_new();
    tg_vae_out o = tg_vae_forward_eps(tp, f.vae, f.x, f.eps);
    assert_true(isfinite(o.loss->data[0]));
    for (size_t i = 0; i < o.logvar->size; i++)
        assert_true(o.logvar->data[i] == TG_VAE_LOGVAR_MAX);
    tg_tape_free(tp);
    unmake(&f);
}

/* ---- training on real digits ----------------------------------------------
 */

enum { N_DIGITS = 300, TRAIN_BATCH = 50 };

static bool load_digits(tg_dataset *ds)
{
    const char *root = getenv("TG_SOURCE_ROOT");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/data/mnist", root ? root : ".");
    if (tg_mnist_load(dir, false, ds) != TG_OK) {
        printf("cannot load digits: %s\n", tg_errmsg());
        return false;
    }
    ds->n = ds->n < N_DIGITS ? ds->n : N_DIGITS;
    return true;
}

/* -ELBO per digit on the whole set, eps from a fixed stream. */
static double neg_elbo(tg_tape *tp, const tg_vae *v, const tg_dataset *ds)
{
    bool was = tg_tape_set_recording(tp, false);
    tg_rng noise;
    tg_rng_seed(&noise, 1, 77);
    tg_tape_reset(tp);
    tg_tensor *x = tg_tape_tensor2(tp, ds->n, 784, false);
    memcpy(x->data, ds->images, sizeof(float) * x->size);
    double loss = tg_vae_forward(tp, v, x, &noise).loss->data[0];
    tg_tape_reset(tp);
    tg_tape_set_recording(tp, was);
    return loss;
}

/* steps Adam steps of a 784-64-8 VAE on ds; returns the model. */
static tg_vae *train(const tg_dataset *ds, int steps, tg_tape *tp)
{
    tg_vae *v = tg_vae_new(
        (tg_vae_config){784, 64, 8, TG_VAE_MLP, TG_VAE_BERNOULLI}, 1);
    tg_params *ps = tg_vae_params(v);
    tg_optim *opt = tg_adam_new(ps, 3e-3f);
    tg_batcher b;
    tg_batcher_init(&b, ds, TRAIN_BATCH, 1);
    tg_rng noise;
    tg_rng_seed(&noise, 1, 1000);
    float *xb = malloc(sizeof(float) * TRAIN_BATCH * 784);
    int64_t epoch = 0;
    tg_batcher_start(&b, epoch, 0);
    for (int s = 0; s < steps; s++) {
        int n = tg_batcher_next(&b, xb, NULL);
        if (n == 0) {
            tg_batcher_start(&b, ++epoch, 0);
            n = tg_batcher_next(&b, xb, NULL);
        }
        tg_tape_reset(tp);
        tg_tensor *x = tg_tape_tensor2(tp, n, 784, false);
        memcpy(x->data, xb, sizeof(float) * x->size);
        tg_params_zero_grad(ps);
        tg_vae_out o = tg_vae_forward(tp, v, x, &noise);
        tg_backward(tp, o.loss);
        tg_optim_step(opt);
    }
    free(xb);
    tg_batcher_free(&b);
    tg_optim_free(opt);
    return v;
}

static void training_improves_elbo(void **state)
{
    (void)state;
    tg_dataset ds = {0};
    assert_true(load_digits(&ds));
    tg_tape *tp = tg_tape_new();
    tg_vae *untrained = tg_vae_new(
        (tg_vae_config){784, 64, 8, TG_VAE_MLP, TG_VAE_BERNOULLI}, 1);
    double before = neg_elbo(tp, untrained, &ds);
    tg_vae *trained = train(&ds, 120, tp); /* 20 epochs of 6 batches */
    double after = neg_elbo(tp, trained, &ds);
    printf("-ELBO on %d digits: %.2f before, %.2f after 120 steps\n", ds.n,
           before, after);
    /* 784 ln 2 = 543 nats is a coin per pixel; a VAE that learned the
     * digits' strokes is far below it. */
    assert_true(before > 500.0);
    assert_true(after < 0.6 * before);
    tg_vae_free(untrained);
    tg_vae_free(trained);
    tg_tape_free(tp);
    tg_dataset_free(&ds);
}

static void training_same_on_one_and_two_threads(void **state)
{
    (void)state;
    tg_dataset ds = {0};
    assert_true(load_digits(&ds));
    tg_tape *tp = tg_tape_new();
    int old = tg_get_threads();
    tg_set_threads(1);
    tg_vae *a = train(&ds, 12, tp);
    tg_set_threads(2);
    tg_vae *b = train(&ds, 12, tp);
    tg_set_threads(old);
    tg_params *pa = tg_vae_params(a), *pb = tg_vae_params(b);
    assert_memory_equal(tg_params_data(pa), tg_params_data(pb),
                        tg_params_numel(pa) * sizeof(float));
    tg_vae_free(a);
    tg_vae_free(b);
    tg_tape_free(tp);
    tg_dataset_free(&ds);
}

/* Pixels outside [0, 1] abort in tg_vae_rec (every ELBO and log p(x) goes
 * through it): an image of -1s scored log p(x) = +14163 nats, a
 * probability far above 1. NaN passes, for the guards to report. */
static void score_pixel(float v)
{
    tg_vae *vae = tg_vae_new((tg_vae_config){.input = 4, .latent = 2}, 1);
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 2, 4, true);
    x->data[6] = v;
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_vae_out o = tg_vae_forward(tp, vae, x, &rng);
    assert_true(v == v || isnan(o.loss->data[0]));
    tg_tape_free(tp);
    tg_vae_free(vae);
}
static void pixel_below_zero(void) { score_pixel(-1.0f); }
static void pixel_above_one(void) { score_pixel(1.5f); }

static void pixels_outside_the_unit_interval_abort(void **state)
{
    (void)state;
    expect_abort(pixel_below_zero, "vae_rec", "x [2, 4]",
                 "pixel 2 of row 1 is -1", "[0, 1]");
    expect_abort(pixel_above_one, "vae_rec", "pixel 2 of row 1 is 1.5");
    score_pixel(1.0f); /* the ends are in */
    score_pixel(0.0f);
    score_pixel(NAN);
}

/* A NULL model in any call that takes one aborts naming the call: each
 * was a segfault inside (vae->cfg, vae->params read unchecked), where a
 * NULL layer or parameter set names its call (static-analysis audit). */
static tg_tape *null_tp;
static tg_tensor *rows2(int cols)
{
    return tg_tape_tensor2(null_tp, 2, cols, true);
}
static tg_rng *rng1(void)
{
    static tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    return &rng;
}
static void params_of_null(void) { tg_vae_params(NULL); }
static void encode_null(void)
{
    tg_tensor *mean, *logvar;
    tg_vae_encode(null_tp, NULL, rows2(4), &mean, &logvar);
}
static void decode_logits_null(void)
{
    tg_vae_decode_logits(null_tp, NULL, rows2(2));
}
static void rec_null(void) { tg_vae_rec(null_tp, NULL, rows2(4), rows2(4)); }
static void forward_eps_null(void)
{
    tg_vae_forward_eps(null_tp, NULL, rows2(4), rows2(2));
}
static void forward_null(void)
{
    tg_vae_forward(null_tp, NULL, rows2(4), rng1());
}
static void decode_null(void) { tg_vae_decode(null_tp, NULL, rows2(2)); }
static void reconstruct_null(void)
{
    tg_vae_reconstruct(null_tp, NULL, rows2(4));
}
static void sample_null(void) { tg_vae_sample(null_tp, NULL, 2, rng1()); }
static void save_null(void)
{
    tg_vae_save("unused.safetensors", NULL, NULL, NULL, NULL);
}
static void load_null(void)
{
    tg_vae_load("unused.safetensors", NULL, NULL, NULL);
}
static void save_null_path(void)
{
    tg_vae *vae = tg_vae_new((tg_vae_config){.input = 4, .latent = 2}, 1);
    vae->dec2.b->data[0] = NAN; /* refused, with a message naming path */
    tg_vae_save(NULL, vae, NULL, NULL, NULL);
}
static void read_info_null(void)
{
    tg_vae_read_info("unused.safetensors", NULL);
}
static void open_null(void) { tg_vae_open("unused.safetensors", NULL, NULL); }
static void cb_mean_null(void)
{
    float mean[2];
    tg_cb_mean(NULL, mean, 2);
}
static void iwae_null(void)
{
    static const float x[4];
    double log_px[1];
    tg_vae_iwae(null_tp, NULL, x, 1, &(tg_iw_opts){.k = 2}, log_px, NULL);
}
static void posterior_pixels_null(void)
{
    static const float x[4];
    float mean[4], std[4];
    tg_vae_posterior_pixels(null_tp, NULL, x, 1, 2, 1, 0, mean, std);
}

static void null_model_aborts_naming_the_call(void **state)
{
    (void)state;
    null_tp = tg_tape_new();
    expect_abort(params_of_null, "vae_params", "NULL model");
    expect_abort(encode_null, "vae_encode", "NULL model");
    expect_abort(decode_logits_null, "vae_decode_logits", "NULL model");
    expect_abort(rec_null, "vae_rec", "NULL model");
    expect_abort(forward_eps_null, "vae_forward_eps", "NULL model");
    expect_abort(forward_null, "vae_forward", "NULL model");
    expect_abort(decode_null, "vae_decode", "NULL model");
    expect_abort(reconstruct_null, "vae_reconstruct", "NULL model");
    expect_abort(sample_null, "vae_sample", "NULL model");
    expect_abort(save_null, "vae_save", "NULL model");
    expect_abort(load_null, "vae_load", "NULL model");
    expect_abort(save_null_path, "vae_save", "NULL path");
    expect_abort(read_info_null, "vae_read_info", "NULL info");
    expect_abort(open_null, "vae_open", "NULL vae");
    expect_abort(cb_mean_null, "cb_mean", "NULL logits");
    tg_cb_mean(NULL, NULL, 0); /* nothing to read or write */
    expect_abort(iwae_null, "vae_iwae", "NULL model");
    expect_abort(posterior_pixels_null, "vae_posterior_pixels", "NULL model");
    tg_tape_free(null_tp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_matches_formula_hidden),
        cmocka_unit_test(loss_matches_formula_no_hidden),
        cmocka_unit_test(gradcheck_hidden),
        cmocka_unit_test(gradcheck_no_hidden),
        cmocka_unit_test(parameter_names_and_shapes),
        cmocka_unit_test(pictures_are_probabilities),
        cmocka_unit_test(forward_and_sample_draw_standard_normal_noise),
        cmocka_unit_test(logvar_clamp_keeps_loss_finite),
        cmocka_unit_test(training_improves_elbo),
        cmocka_unit_test(training_same_on_one_and_two_threads),
        cmocka_unit_test(pixels_outside_the_unit_interval_abort),
        cmocka_unit_test(null_model_aborts_naming_the_call),
    };
    return cmocka_run_group_tests_name("models_vae", tests, NULL, NULL);
}

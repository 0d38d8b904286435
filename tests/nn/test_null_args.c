/* NULL where the API needs an object: each was a segfault (or UBSan's
 * null-pointer report) somewhere inside; now an abort whose message names
 * the call, as for a NULL tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "autograd/expect_abort.h"
#include "tg_dist.h"
#include "tg_nn.h"

static void step_null_optimizer(void) { tg_optim_step(NULL); }
/* labels asked of a set read without them (tg_idx_images_load) */
static void batcher_labels_of_unlabelled(void)
{
    static float images[2 * 4];
    tg_dataset ds = {.n = 2, .rows = 2, .cols = 2, .images = images};
    tg_batcher b;
    tg_batcher_init(&b, &ds, 2, 1);
    float x[8];
    int labels[2];
    tg_batcher_next(&b, x, labels);
}

/* More NULLs that were segfaults (a README-only audit): a tape, a layer,
 * a parameter set */
static void reset_null_tape(void) { tg_tape_reset(NULL); }
static void dense_null_layer(void)
{
    tg_tape *tp = tg_tape_new();
    tg_dense_apply(tp, NULL, tg_tape_tensor2(tp, 1, 2, false));
}
static void conv_null_layer(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv2d_apply(tp, NULL, NULL);
}
static void conv1d_null_layer(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv1d_apply(tp, NULL, NULL);
}
static void conv1d_null_input(void)
{
    tg_tape *tp = tg_tape_new();
    tg_conv1d(tp, NULL, tg_tensor_new(3, (int[]){1, 1, 1}), NULL, 1, 0, 1);
}
static void pool1d_null_input(void)
{
    tg_tape *tp = tg_tape_new();
    tg_max_pool1d(tp, NULL, 2, 2, 0);
}
static void gru_null_cell(void)
{
    tg_tape *tp = tg_tape_new();
    tg_gru_cell_apply(tp, NULL, NULL, NULL);
}
static void params_add_null_set(void)
{
    tg_params_add(NULL, "w", 1, (int[]){2});
}
static void adam_null_set(void) { tg_adam_new(NULL, 1e-3f); }
static void clip_null_set(void) { tg_clip_grad_norm(NULL, 1.0f); }
/* NULL where a pointer is required: an abort naming the call, not a
 * segfault (API audit) */
static void tensor_null_shape(void) { tg_tensor_new(2, NULL); }
static void rows_null_tensor(void) { tg_tensor_rows(NULL); }
static void recording_null_tape(void) { tg_tape_set_recording(NULL, true); }
static void gemm_null_c(void)
{
    static float A[4], B[4];
    tg_gemm(false, false, 2, 2, 2, 1.0f, A, 2, B, 2, 0.0f, NULL, 2);
}
static void gradcheck_print_null(void) { tg_gradcheck_print(NULL, "x"); }
static void bootstrap_null_lo(void)
{
    static const double neg[2] = {0, 1}, pos[2] = {2, 3};
    double hi;
    tg_auroc_bootstrap(neg, 2, pos, 2, 10, 1, 0.95, NULL, &hi);
}
/* a NULL batcher (or batch buffer) where a freed one names the call:
 * segfaults inside (static-analysis audit) */
static float four_images[4 * 2];
static tg_dataset four_set = {
    .n = 4, .rows = 1, .cols = 2, .images = four_images};
static void batcher_init_null(void) { tg_batcher_init(NULL, &four_set, 2, 1); }
static void batcher_start_null(void) { tg_batcher_start(NULL, 0, 0); }
static void batcher_next_null(void)
{
    float x[4];
    tg_batcher_next(NULL, x, NULL);
}
static void batcher_count_null(void) { tg_batcher_count(NULL); }
static void batcher_next_null_x(void)
{
    tg_batcher b;
    tg_batcher_init(&b, &four_set, 2, 1);
    tg_batcher_next(&b, NULL, NULL);
}
static void array_batcher_init_null(void)
{
    tg_array_batcher_init(NULL, four_images, 4, 2, 2, 1);
}
static void array_batcher_start_null(void)
{
    tg_array_batcher_start(NULL, 0, 0);
}
static void array_batcher_next_null(void)
{
    tg_tensor *x;
    tg_array_batcher_next(NULL, tg_tape_new(), &x, NULL, NULL);
}
static void array_batcher_count_null(void) { tg_array_batcher_count(NULL); }
static void array_batcher_next_null_x(void)
{
    tg_array_batcher b;
    tg_array_batcher_init(&b, four_images, 4, 2, 2, 1);
    tg_array_batcher_next(&b, tg_tape_new(), NULL, NULL, NULL);
}
/* NULL objects, paths and outputs of the file, metadata and data helpers:
 * segfaults inside, or a NULL path printed with %s (undefined) in the
 * message of a returned status (static-analysis audit) */
static void atomic_open_null_file(void) { tg_atomic_open(NULL, "unused.out"); }
static void atomic_open_null_path(void)
{
    tg_atomic_file a;
    tg_atomic_open(&a, NULL);
}
static void atomic_check_null_path(void) { tg_atomic_check(NULL); }
static void atomic_commit_null_file(void) { tg_atomic_commit(NULL, true); }
static void stale_temps_null_folder(void) { tg_remove_stale_temps(NULL); }
static void dir_lock_null_folder(void) { tg_dir_lock(NULL); }
static void fingerprint_null_set(void)
{
    char out[TG_FINGERPRINT_MAX];
    tg_dataset_fingerprint(NULL, out);
}
static void fingerprint_null_out(void)
{
    tg_dataset_fingerprint(&four_set, NULL);
}
static void optim_nonfinite_null(void) { tg_optim_nonfinite(NULL); }
static void meta_init_null(void) { tg_meta_init(NULL); }
static void meta_set_rng_null_rng(void)
{
    tg_meta m;
    tg_meta_init(&m);
    tg_meta_set_rng(&m, "rng", NULL);
}
static void meta_get_int_null_value(void)
{
    tg_meta m;
    tg_meta_init(&m);
    tg_meta_set(&m, "epoch", "3");
    tg_meta_get_int(&m, "epoch", NULL);
}
static void meta_get_double_null_value(void)
{
    tg_meta m;
    tg_meta_init(&m);
    tg_meta_set(&m, "lr", "0.5");
    tg_meta_get_double(&m, "lr", NULL);
}
static void meta_get_rng_null_rng(void)
{
    tg_meta m;
    tg_rng r;
    tg_rng_seed(&r, 1, 0);
    tg_meta_init(&m);
    tg_meta_set_rng(&m, "rng", &r);
    tg_meta_get_rng(&m, "rng", NULL);
}
/* NULL score lists where tg_auroc_bootstrap names them: segfaults in the
 * first read (static-analysis audit) */
static const double two_scores[2] = {0, 1};
static void auroc_null_pos(void) { tg_auroc(two_scores, 2, NULL, 2); }
static void aupr_null_neg(void) { tg_aupr(NULL, 2, two_scores, 2); }
static void fpr_null_pos(void) { tg_fpr_at_tpr(two_scores, 2, NULL, 2, 0.95); }
static void ess_null_logw(void) { tg_ess_from_logw(NULL, 2); }
/* a NaN learning rate set by hand made every weight NaN */
static void step_nan_lr(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "w", 1, (int[]){2});
    tg_optim *opt = tg_sgd_new(ps, 0.1f, 0.0f);
    opt->lr = (float)NAN;
    tg_optim_step(opt);
}

static tg_params *one_param(void)
{
    tg_params *ps = tg_params_new();
    tg_params_add(ps, "w", 1, (int[]){2});
    return ps;
}
static void save_null_path(void)
{
    tg_checkpoint_save(NULL, one_param(), NULL, NULL);
}
static void load_null_path(void)
{
    tg_checkpoint_load(NULL, one_param(), NULL, NULL);
}
/* the metadata reader and tg_meta's accessors: a UBSan report (open and
 * strcmp given NULL) or a segfault after the whole file had been read */
static void read_meta_null_path(void)
{
    tg_meta m = TG_META_INIT;
    tg_checkpoint_read_meta(NULL, &m);
}
/* refused before the file is opened (it need not exist) */
static void read_meta_null_meta(void)
{
    tg_checkpoint_read_meta("no-such-checkpoint.safetensors", NULL);
}
static void meta_set_null_meta(void) { tg_meta_set(NULL, "k", "v"); }
static void meta_set_null_key(void)
{
    tg_meta m = TG_META_INIT;
    tg_meta_set(&m, NULL, "v");
}
static void meta_set_null_value(void)
{
    tg_meta m = TG_META_INIT;
    tg_meta_set(&m, "k", NULL);
}
static void meta_get_null_meta(void) { tg_meta_get(NULL, "k"); }
static void meta_get_null_key(void)
{
    tg_meta m = TG_META_INIT;
    tg_meta_set(&m, "k", "v");
    tg_meta_get(&m, NULL);
}
static void gradcheck_no_graph(void)
{
    tg_gradcheck_report rep;
    tg_gradcheck(NULL, 0, NULL, NULL, NULL, &rep);
}

/* targets set without their width: batches of [n, 0] targets, silently */
static void batcher_y_without_dim(void)
{
    static float x[4], y[4];
    tg_array_batcher b;
    tg_array_batcher_init(&b, x, 4, 1, 2, 1);
    b.y = y;
    tg_array_batcher_start(&b, 0, 0);
    tg_tensor *xs, *ys;
    tg_array_batcher_next(&b, tg_tape_new(), &xs, &ys, NULL);
}

/* a NULL rng given to a layer's init: a segfault in tg_rng_u64 (a
 * README-only audit, four inits); every init that draws now says so */
static tg_params *ps_for_init(void) { return tg_params_new(); }
static void dense_init_null_rng(void)
{
    tg_dense_layer l;
    tg_dense_layer_init(&l, ps_for_init(), "d", 2, 3, TG_INIT_TORCH, NULL);
}
static void conv_init_null_rng(void)
{
    tg_conv2d_layer l;
    tg_conv2d_layer_init(&l, ps_for_init(), "c", 1, 2, 3, 1, 1, TG_INIT_TORCH,
                         NULL);
}
static void deconv_init_null_rng(void)
{
    tg_conv_transpose2d_layer l;
    tg_conv_transpose2d_layer_init(&l, ps_for_init(), "t", 2, 1, 4, 2, 1, 0,
                                   TG_INIT_TORCH, NULL);
}
static void conv1d_init_null_rng(void)
{
    tg_conv1d_layer l;
    tg_conv1d_layer_init(&l, ps_for_init(), "c", 1, 2, 3, 1, 1, 1, true,
                         TG_INIT_TORCH, NULL);
}
static void deconv1d_init_null_rng(void)
{
    tg_conv_transpose1d_layer l;
    tg_conv_transpose1d_layer_init(&l, ps_for_init(), "t", 2, 1, 4, 2, 1, 0, 1,
                                   true, TG_INIT_TORCH, NULL);
}
static void bayes_dense_init_null_rng(void)
{
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps_for_init(), "b", 2, 3, 1.0f, -5.0f, NULL);
}
static void bayes_conv_init_null_rng(void)
{
    tg_bayes_conv2d l;
    tg_bayes_conv2d_init(&l, ps_for_init(), "bc", 3, 4, 3, 1, 1, 1.0f, -3.0f,
                         NULL);
}
static void embedding_init_null_rng(void)
{
    tg_embedding_layer l;
    tg_embedding_layer_init(&l, ps_for_init(), "e", 5, 2, NULL);
}
static void gru_init_null_rng(void)
{
    tg_gru_cell c;
    tg_gru_cell_init(&c, ps_for_init(), "g", 2, 3, NULL);
}
static void lstm_init_null_rng(void)
{
    tg_lstm_cell c;
    tg_lstm_cell_init(&c, ps_for_init(), "l", 2, 3, NULL);
}
static void dense_init_null_set(void)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_dense_layer l;
    tg_dense_layer_init(&l, NULL, "d", 2, 3, TG_INIT_TORCH, &rng);
}
static void group_norm_init_null_name(void)
{
    tg_group_norm_layer l;
    tg_group_norm_layer_init(&l, ps_for_init(), NULL, 1, 2, 1e-5f);
}
/* prior_scale = +inf was refused as "must be > 0" */
static void bayes_dense_init_inf_prior(void)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_bayes_dense l;
    tg_bayes_dense_init(&l, ps_for_init(), "b", 2, 3, (float)INFINITY, -5.0f,
                        &rng);
}

/* a NULL Bayesian dense layer where its siblings (apply, apply_eps,
 * apply_kl, and every tg_bayes_conv2d_* call) abort: a segfault inside
 * (static-analysis audit) */
static void bayes_dense_moments_null_layer(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *mean, *sd;
    tg_bayes_dense_moments(tp, NULL, tg_tape_tensor2(tp, 1, 2, true), &mean,
                           &sd);
}
static void bayes_dense_kl_null_layer(void)
{
    tg_bayes_dense_kl(tg_tape_new(), NULL);
}

/* a NULL generator drawn from directly: segfaults in the draw itself */
static void u64_null_rng(void) { tg_rng_u64(NULL); }
static void seed_null_rng(void) { tg_rng_seed(NULL, 1, 0); }
static void normal_null_rng(void) { tg_rng_normal(NULL); }
static void fill_normal_null_x(void)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_rng_fill_normal(&rng, NULL, 4, 0.0f, 1.0f);
}
static void fill_uniform_null_rng(void)
{
    float x[4];
    tg_rng_fill_uniform(NULL, x, 4, 0.0f, 1.0f);
}

/* a NULL set, name or shape in the parameter-set calls, and a NULL guard,
 * set or step in the step's (an audit of a hand-written training loop) */
static void find_null_name(void) { tg_params_find(ps_for_init(), NULL); }
static void zero_grad_null_set(void) { tg_params_zero_grad(NULL); }
static void seal_null_set(void) { tg_params_seal(NULL); }
static void count_null_set(void) { tg_params_count(NULL); }
static void data_null_set(void) { tg_params_data(NULL); }
static void finite_null_set(void) { tg_params_finite(NULL, NULL); }
static void add_null_shape(void) { tg_params_add(ps_for_init(), "w", 1, NULL); }
/* a NULL name to a sealed set: it was printed by %s, undefined behaviour
 * ("'(null)' added after the set was sealed" with glibc) */
static void add_null_name_sealed(void)
{
    tg_params *ps = ps_for_init();
    tg_params_seal(ps);
    tg_params_add(ps, NULL, 1, (int[]){2});
}
static void guard_null_set(void)
{
    tg_step_guard g;
    tg_step_guard_init(&g, NULL, NULL, NULL);
}
static void guard_init_null(void)
{
    tg_step_guard_init(NULL, ps_for_init(), NULL, NULL);
}
static void finish_null_step(void)
{
    tg_step_guard g;
    tg_step_guard_init(&g, ps_for_init(), NULL, NULL);
    tg_step_finish(&g, NULL, 1);
}
static void shard_null_guard(void) { tg_step_shard(NULL, &(tg_step){0}); }
static void suspect_null_guard(void) { tg_step_suspect(NULL); }

static void test_null_arguments_abort_with_a_message(void **state)
{
    (void)state;
    expect_abort(step_null_optimizer, "optim_step", "NULL");
    expect_abort(batcher_labels_of_unlabelled, "batcher_next",
                 "dataset of 2 images has none");
    expect_abort(save_null_path, "checkpoint_save", "NULL path");
    expect_abort(load_null_path, "checkpoint_load", "NULL path");
    expect_abort(read_meta_null_path, "checkpoint_read_meta", "NULL path");
    expect_abort(read_meta_null_meta, "checkpoint_read_meta", "NULL metadata");
    expect_abort(meta_set_null_meta, "meta_set", "NULL metadata");
    expect_abort(meta_set_null_key, "meta_set", "NULL key");
    expect_abort(meta_set_null_value, "meta_set", "NULL value");
    expect_abort(meta_get_null_meta, "meta_get", "NULL metadata");
    expect_abort(meta_get_null_key, "meta_get", "NULL key");
    expect_abort(gradcheck_no_graph, "gradcheck", "n_inputs 0");
    expect_abort(batcher_y_without_dim, "array_batcher_next", "y_dim 0");
    expect_abort(reset_null_tape, "tape_reset", "NULL tape");
    expect_abort(dense_null_layer, "dense_apply", "NULL layer");
    expect_abort(conv_null_layer, "conv2d_apply", "NULL layer");
    expect_abort(conv1d_null_layer, "conv1d_apply", "NULL layer");
    expect_abort(conv1d_null_input, "conv1d", "argument 1 is NULL");
    expect_abort(pool1d_null_input, "max_pool1d", "argument 1 is NULL");
    expect_abort(gru_null_cell, "gru_cell", "NULL cell");
    expect_abort(params_add_null_set, "params_add", "NULL parameter set");
    expect_abort(adam_null_set, "adam_new", "NULL parameter set");
    expect_abort(clip_null_set, "clip_grad_norm", "NULL parameter set");
    expect_abort(tensor_null_shape, "tensor_new", "NULL shape");
    expect_abort(rows_null_tensor, "tensor_rows", "NULL tensor");
    expect_abort(recording_null_tape, "tg_tape_set_recording", "NULL tape");
    expect_abort(gemm_null_c, "tg_gemm", "NULL C");
    expect_abort(gradcheck_print_null, "gradcheck_print", "NULL report");
    expect_abort(bootstrap_null_lo, "auroc_bootstrap", "NULL lo");
    expect_abort(batcher_init_null, "batcher_init", "NULL batcher");
    expect_abort(batcher_start_null, "batcher_start", "NULL batcher");
    expect_abort(batcher_next_null, "batcher_next", "NULL batcher");
    expect_abort(batcher_count_null, "batcher_count", "NULL batcher");
    expect_abort(batcher_next_null_x, "batcher_next", "NULL x");
    expect_abort(array_batcher_init_null, "array_batcher_init", "NULL batcher");
    expect_abort(array_batcher_start_null, "array_batcher_start",
                 "NULL batcher");
    expect_abort(array_batcher_next_null, "array_batcher_next", "NULL batcher");
    expect_abort(array_batcher_count_null, "array_batcher_count",
                 "NULL batcher");
    expect_abort(array_batcher_next_null_x, "array_batcher_next", "NULL x");
    tg_batcher_free(NULL); /* as free(NULL): nothing to do */
    tg_array_batcher_free(NULL);
    expect_abort(atomic_open_null_file, "atomic_open", "NULL file");
    expect_abort(atomic_open_null_path, "atomic_open", "NULL path");
    expect_abort(atomic_check_null_path, "atomic_check", "NULL path");
    expect_abort(atomic_commit_null_file, "atomic_commit", "NULL file");
    expect_abort(stale_temps_null_folder, "remove_stale_temps", "NULL folder");
    expect_abort(dir_lock_null_folder, "dir_lock", "NULL folder");
    expect_abort(fingerprint_null_set, "dataset_fingerprint", "NULL dataset");
    expect_abort(fingerprint_null_out, "dataset_fingerprint", "NULL out");
    expect_abort(optim_nonfinite_null, "optim_nonfinite", "NULL optimizer");
    expect_abort(meta_init_null, "meta_init", "NULL metadata");
    expect_abort(meta_set_rng_null_rng, "meta_set_rng", "NULL rng");
    expect_abort(meta_get_int_null_value, "meta_get_int", "NULL value");
    expect_abort(meta_get_double_null_value, "meta_get_double", "NULL value");
    expect_abort(meta_get_rng_null_rng, "meta_get_rng", "NULL rng");
    expect_abort(auroc_null_pos, "auroc", "NULL pos");
    expect_abort(aupr_null_neg, "aupr", "NULL neg");
    expect_abort(fpr_null_pos, "fpr_at_tpr", "NULL pos");
    expect_abort(ess_null_logw, "ess_from_logw", "NULL logw");
    expect_abort(step_nan_lr, "optim_step", "learning rate is nan");
    expect_abort(dense_init_null_rng, "dense_layer_init", "NULL rng");
    expect_abort(conv_init_null_rng, "conv2d_layer_init", "NULL rng");
    expect_abort(deconv_init_null_rng, "conv_transpose2d_layer_init",
                 "NULL rng");
    expect_abort(conv1d_init_null_rng, "conv1d_layer_init", "NULL rng");
    expect_abort(deconv1d_init_null_rng, "conv_transpose1d_layer_init",
                 "NULL rng");
    expect_abort(bayes_dense_init_null_rng, "bayes_dense_init", "NULL rng");
    expect_abort(bayes_conv_init_null_rng, "bayes_conv2d_init", "NULL rng");
    expect_abort(embedding_init_null_rng, "embedding_layer_init", "NULL rng");
    expect_abort(gru_init_null_rng, "gru_cell_init", "NULL rng");
    expect_abort(lstm_init_null_rng, "lstm_cell_init", "NULL rng");
    expect_abort(u64_null_rng, "rng_u64", "NULL rng");
    expect_abort(seed_null_rng, "rng_seed", "NULL rng");
    expect_abort(normal_null_rng, "rng_normal", "NULL rng");
    expect_abort(fill_normal_null_x, "rng_fill_normal", "NULL x");
    expect_abort(fill_uniform_null_rng, "rng_fill_uniform", "NULL rng");
    expect_abort(dense_init_null_set, "dense_layer_init", "NULL parameter set");
    expect_abort(group_norm_init_null_name, "group_norm_layer_init",
                 "NULL name");
    expect_abort(bayes_dense_moments_null_layer, "bayes_dense_moments",
                 "NULL layer");
    expect_abort(bayes_dense_kl_null_layer, "bayes_dense_kl", "NULL layer");
    expect_abort(bayes_dense_init_inf_prior, "bayes_dense_init",
                 "prior_scale inf must be finite and > 0");
    expect_abort(find_null_name, "params_find", "NULL name");
    expect_abort(zero_grad_null_set, "params_zero_grad", "NULL parameter set");
    expect_abort(seal_null_set, "params_seal", "NULL parameter set");
    expect_abort(count_null_set, "params_count", "NULL parameter set");
    expect_abort(data_null_set, "params_data", "NULL parameter set");
    expect_abort(finite_null_set, "params_finite", "NULL parameter set");
    expect_abort(add_null_shape, "params_add", "'w': NULL shape");
    expect_abort(add_null_name_sealed, "params_add", "empty parameter name");
    expect_abort(guard_null_set, "step_guard_init", "NULL parameter set");
    expect_abort(guard_init_null, "step_guard_init", "NULL guard");
    expect_abort(finish_null_step, "step_finish", "NULL step");
    expect_abort(shard_null_guard, "step_shard", "NULL guard");
    expect_abort(suspect_null_guard, "step_suspect", "NULL guard");
    /* a loader reports, it does not abort */
    tg_dataset ds;
    assert_int_equal(tg_mnist_load(NULL, true, &ds), TG_ERR_ARG);
    assert_int_equal(tg_mnist_load("data", true, NULL), TG_ERR_ARG);
    assert_int_equal(tg_idx_images_load(NULL, true, &ds), TG_ERR_ARG);
    assert_int_equal(tg_idx_images_load("data", true, NULL), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "idx_images_load"));
    /* as tg_mnist_load: a status naming the call (the path had been
     * printed with %s, undefined for NULL; a NULL output a segfault) */
    int ndim, dims[3];
    uint8_t *data;
    assert_int_equal(tg_idx_read(NULL, &ndim, dims, &data), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "idx_read: NULL path"));
    assert_int_equal(tg_idx_read("data", &ndim, dims, NULL), TG_ERR_ARG);
    assert_non_null(strstr(tg_errmsg(), "idx_read: NULL data"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_arguments_abort_with_a_message),
    };
    return cmocka_run_group_tests_name("nn NULL arguments", tests, NULL, NULL);
}

/* GRU and LSTM cells: PyTorch's parameter names and shapes, one step's
 * forward against the formulas worked in double on a tiny case, and
 * gradient checks of one step and of two unrolled steps (every input and
 * every parameter). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "autograd/expect_abort.h"
#include "tg_nn.h"

static double sig(double x) { return 1.0 / (1.0 + exp(-x)); }

static void set(tg_tensor *t, const float *v)
{
    for (size_t i = 0; i < t->size; i++)
        t->data[i] = v[i];
}

static void names_and_shapes_are_pytorchs(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_gru_cell gru;
    tg_lstm_cell lstm;
    tg_gru_cell_init(&gru, ps, "enc.gru", 3, 5, &rng);
    tg_lstm_cell_init(&lstm, ps, "dec.lstm", 5, 2, &rng);
    const char *names[8] = {"enc.gru.weight_ih",  "enc.gru.weight_hh",
                            "enc.gru.bias_ih",    "enc.gru.bias_hh",
                            "dec.lstm.weight_ih", "dec.lstm.weight_hh",
                            "dec.lstm.bias_ih",   "dec.lstm.bias_hh"};
    const int rows[8] = {15, 15, 15, 15, 8, 8, 8, 8};
    const int cols[8] = {3, 5, 0, 0, 5, 2, 0, 0};
    assert_int_equal(tg_params_count(ps), 8);
    for (int i = 0; i < 8; i++) {
        tg_tensor *t = tg_params_find(ps, names[i]);
        assert_non_null(t);
        assert_int_equal(t->shape[0], rows[i]);
        assert_int_equal(t->ndim, cols[i] ? 2 : 1);
        if (cols[i])
            assert_int_equal(t->shape[1], cols[i]);
        float bound = 1.0f / sqrtf(i < 4 ? 5.0f : 2.0f);
        for (size_t j = 0; j < t->size; j++)
            assert_true(fabsf(t->data[j]) <= bound);
    }
    tg_params_free(ps);
}

/* in 2, hidden 1, batch 1: rows of weight_ih are the gates (r, z, n). */
static void gru_one_step_by_hand(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_gru_cell c;
    tg_gru_cell_init(&c, ps, "gru", 2, 1, &rng);
    const float wih[6] = {0.5f, -1, 0.25f, 0.75f, -0.5f, 1};
    const float whh[3] = {2, -0.5f, 1.5f};
    const float bih[3] = {0.1f, -0.2f, 0.3f}, bhh[3] = {-0.1f, 0.4f, 0.2f};
    set(c.weight_ih, wih);
    set(c.weight_hh, whh);
    set(c.bias_ih, bih);
    set(c.bias_hh, bhh);
    float xv[2] = {1.0f, 2.0f}, hv[1] = {0.5f};
    tg_tape *tp = tg_tape_new();
    tg_tensor *h1 = tg_gru_cell_apply(tp, &c, tg_tape_view2(tp, xv, 1, 2),
                                      tg_tape_view2(tp, hv, 1, 1));
    double x0 = 1, x1 = 2, h = 0.5;
    double r = sig(0.5 * x0 - 1 * x1 + 0.1 + 2 * h - 0.1);
    double z = sig(0.25 * x0 + 0.75 * x1 - 0.2 - 0.5 * h + 0.4);
    double n = tanh(-0.5 * x0 + 1 * x1 + 0.3 + r * (1.5 * h + 0.2));
    double want = (1 - z) * n + z * h;
    assert_float_equal(h1->data[0], want, 1e-6);
    /* A NULL state is zeros. */
    tg_tensor *h0 =
        tg_gru_cell_apply(tp, &c, tg_tape_view2(tp, xv, 1, 2), NULL);
    r = sig(0.5 * x0 - 1 * x1 + 0.1 - 0.1);
    z = sig(0.25 * x0 + 0.75 * x1 - 0.2 + 0.4);
    n = tanh(-0.5 * x0 + 1 * x1 + 0.3 + r * 0.2);
    assert_float_equal(h0->data[0], (1 - z) * n, 1e-6);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* in 1, hidden 1: rows of weight_ih are the gates (i, f, g, o). */
static void lstm_one_step_by_hand(void **state)
{
    (void)state;
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_lstm_cell c;
    tg_lstm_cell_init(&c, ps, "lstm", 1, 1, &rng);
    const float wih[4] = {0.5f, -1, 0.25f, 2};
    const float whh[4] = {1, 0.5f, -0.75f, -1};
    const float bih[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    const float bhh[4] = {0, -0.1f, 0.1f, 0};
    set(c.weight_ih, wih);
    set(c.weight_hh, whh);
    set(c.bias_ih, bih);
    set(c.bias_hh, bhh);
    float xv[1] = {1.5f}, hv[1] = {-0.5f}, cv[1] = {0.25f};
    tg_tape *tp = tg_tape_new();
    tg_tensor *h1, *c1;
    tg_lstm_cell_apply(tp, &c, tg_tape_view2(tp, xv, 1, 1),
                       tg_tape_view2(tp, hv, 1, 1), tg_tape_view2(tp, cv, 1, 1),
                       &h1, &c1);
    double x = 1.5, h = -0.5, cell = 0.25;
    double i = sig(0.5 * x + 1 * h + 0.1 + 0);
    double f = sig(-1 * x + 0.5 * h + 0.2 - 0.1);
    double g = tanh(0.25 * x - 0.75 * h + 0.3 + 0.1);
    double o = sig(2 * x - 1 * h + 0.4 + 0);
    double c_want = f * cell + i * g;
    assert_float_equal(c1->data[0], c_want, 1e-6);
    assert_float_equal(h1->data[0], o * tanh(c_want), 1e-6);
    tg_tape_free(tp);
    tg_params_free(ps);
}

/* Gradient checks: inputs are x1, x2, h0, c0 then the cell's parameters. */
typedef struct rnn_ctx {
    tg_gru_cell gru;
    tg_lstm_cell lstm;
    int steps;
} rnn_ctx;

static tg_tensor *gru_graph(tg_tape *tp, tg_tensor **in, void *arg)
{
    rnn_ctx *ctx = arg;
    tg_tensor *h = tg_gru_cell_apply(tp, &ctx->gru, in[0], in[2]);
    if (ctx->steps == 2)
        h = tg_gru_cell_apply(tp, &ctx->gru, in[1], h);
    return h;
}

static tg_tensor *lstm_graph(tg_tape *tp, tg_tensor **in, void *arg)
{
    rnn_ctx *ctx = arg;
    tg_tensor *h, *c;
    tg_lstm_cell_apply(tp, &ctx->lstm, in[0], in[2], in[3], &h, &c);
    if (ctx->steps == 2)
        tg_lstm_cell_apply(tp, &ctx->lstm, in[1], h, c, &h, &c);
    return tg_concat(tp, 2, (tg_tensor *[]){h, c});
}

static void check_cell(bool lstm, int steps)
{
    enum { B = 3, IN = 4, H = 5 };
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 20 + (uint64_t)steps, 0);
    rnn_ctx ctx = {.steps = steps};
    tg_tensor *in[8];
    if (lstm) {
        tg_lstm_cell_init(&ctx.lstm, ps, "lstm", IN, H, &rng);
    } else {
        tg_gru_cell_init(&ctx.gru, ps, "gru", IN, H, &rng);
    }
    for (int k = 0; k < 4; k++) {
        in[k] = tg_tensor_new2(B, k < 2 ? IN : H);
        tg_rng_fill_normal(&rng, in[k]->data, in[k]->size, 0, 1);
        tg_tensor_require_grad(in[k]);
    }
    for (int k = 0; k < 4; k++)
        in[4 + k] = tg_params_get(ps, k);
    tg_gradcheck_report r;
    bool ok =
        tg_gradcheck(lstm ? lstm_graph : gru_graph, 8, in, &ctx, NULL, &r);
    if (!ok)
        tg_gradcheck_print(&r, lstm ? "lstm" : "gru");
    assert_true(ok);
    for (int k = 0; k < 4; k++)
        tg_tensor_free(in[k]);
    tg_params_free(ps);
}

static void gru_gradcheck_one_step(void **state)
{
    (void)state;
    check_cell(false, 1);
}

static void gru_gradcheck_two_unrolled_steps(void **state)
{
    (void)state;
    check_cell(false, 2);
}

static void lstm_gradcheck_one_step(void **state)
{
    (void)state;
    check_cell(true, 1);
}

static void lstm_gradcheck_two_unrolled_steps(void **state)
{
    (void)state;
    check_cell(true, 2);
}

/* hidden sizes whose stacked gates (G * H rows) pass INT_MAX: 3 * 1e9
 * wrapped negative, 4 * 1.1e9 to a positive 105032704 (a weight of the
 * wrong shape, allocated). Refused before any parameter is made. */
static void gru_gates_past_int(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_gru_cell c;
    tg_gru_cell_init(&c, ps, "gru", 1, 1000000000, &rng);
}
static void lstm_gates_past_int(void)
{
    tg_params *ps = tg_params_new();
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    tg_lstm_cell c;
    tg_lstm_cell_init(&c, ps, "lstm", 1, 1100000000, &rng);
}

static void stacked_gates_past_int_refused(void **state)
{
    (void)state;
    expect_abort(gru_gates_past_int, "gru_cell_init:", "hidden=1000000000",
                 "3 gates");
    expect_abort(lstm_gates_past_int, "lstm_cell_init:", "hidden=1100000000",
                 "4 gates");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names_and_shapes_are_pytorchs),
        cmocka_unit_test(gru_one_step_by_hand),
        cmocka_unit_test(lstm_one_step_by_hand),
        cmocka_unit_test(gru_gradcheck_one_step),
        cmocka_unit_test(gru_gradcheck_two_unrolled_steps),
        cmocka_unit_test(lstm_gradcheck_one_step),
        cmocka_unit_test(lstm_gradcheck_two_unrolled_steps),
        cmocka_unit_test(stacked_gates_past_int_refused),
    };
    return cmocka_run_group_tests_name("nn_recurrent", tests, NULL, NULL);
}

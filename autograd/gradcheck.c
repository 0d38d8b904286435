/* Finite-difference gradient check for any function of tensors.
 *
 * L(inputs) = sum_k w_k * f(inputs)_k with fixed random weights w, summed in
 * double. The analytic gradient is one backward seeded with w. The numeric
 * one is the fourth-order central difference
 *   dL/dx ~ (-L(x+2h) + 8 L(x+h) - 8 L(x-h) + L(x-2h)) / (12 h),
 * whose truncation error is O(h^4): with float32 forward passes it allows a
 * step large enough that rounding in f stays far below the tolerances. h is
 * a power of two so that x +- h and x +- 2h are exact in float32 (for
 * |x| < 2^16 h): the stencil is then exactly symmetric. */
#include "tg_autograd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double weighted_sum(const tg_tensor *y, const float *w)
{
    double acc = 0.0;
    for (size_t k = 0; k < y->size; k++)
        acc += (double)w[k] * (double)y->data[k];
    return acc;
}

static double eval(tg_graph_fn f, tg_tape *tp, tg_tensor **inputs, void *ctx,
                   const float *w, size_t n_out)
{
    tg_tape_reset(tp);
    tg_tensor *y = f(tp, inputs, ctx);
    if (y->size != n_out)
        tg_fatal("gradcheck", "f returned %zu elements, then %zu", n_out,
                 y->size);
    return weighted_sum(y, w);
}

/* dL/dx[j] by the fourth-order central difference, x[j] restored after. */
static double numeric_grad(tg_graph_fn f, tg_tape *tp, tg_tensor **inputs,
                           void *ctx, const float *w, size_t n_out,
                           tg_tensor *x, size_t j, double h)
{
    float v = x->data[j];
    double L[4];
    const double steps[4] = {2 * h, h, -h, -2 * h};
    for (int t = 0; t < 4; t++) {
        x->data[j] = (float)(v + steps[t]);
        L[t] = eval(f, tp, inputs, ctx, w, n_out);
    }
    x->data[j] = v;
    return (-L[0] + 8 * L[1] - 8 * L[2] + L[3]) / (12 * h);
}

bool tg_gradcheck(tg_graph_fn f, int n_inputs, tg_tensor **inputs, void *ctx,
                  const tg_gradcheck_opts *opts, tg_gradcheck_report *rep)
{
    if (!f || n_inputs < 1 || !inputs || !rep)
        tg_fatal("gradcheck",
                 "needs a graph function, inputs (n_inputs %d >= 1) and a "
                 "report",
                 n_inputs);
    tg_check_tensors("gradcheck", n_inputs, (const tg_tensor *const *)inputs);
    /* a field left 0 (or not > 0) takes its default: {.eps = 2^-8} keeps
     * the tolerances, and with them the all-zero guard (atol 0 had turned
     * it off and failed correct graphs) */
    tg_gradcheck_opts o = {0x1p-6, 1e-4, 1e-3, 42};
    if (opts) {
        o.eps = opts->eps > 0 ? opts->eps : o.eps;
        o.atol = opts->atol > 0 ? opts->atol : o.atol;
        o.rtol = opts->rtol > 0 ? opts->rtol : o.rtol;
        o.seed = opts->seed ? opts->seed : o.seed;
    }
    double h = exp2(round(log2(o.eps)));
    memset(rep, 0, sizeof *rep);
    rep->worst_input = -1;

    /* Every input collects a gradient for the check; restore afterwards. */
    bool *had_grad = calloc((size_t)n_inputs, sizeof *had_grad);
    float **saved_grad = calloc((size_t)n_inputs, sizeof *saved_grad);
    if (!had_grad || !saved_grad)
        tg_out_of_memory("gradcheck", "out of memory");
    for (int i = 0; i < n_inputs; i++) {
        had_grad[i] = inputs[i]->requires_grad;
        saved_grad[i] = inputs[i]->grad;
        /* at least one float: calloc(0) may be NULL, not out of memory */
        inputs[i]->grad =
            calloc(inputs[i]->size ? inputs[i]->size : 1, sizeof(float));
        if (!inputs[i]->grad)
            tg_out_of_memory("gradcheck", "out of memory");
        inputs[i]->requires_grad = true;
    }

    tg_tape *tp = tg_tape_new();
    tg_tensor *y = f(tp, inputs, ctx);
    size_t n_out = y->size;
    float *w = malloc(n_out * sizeof *w);
    if (!w)
        tg_out_of_memory("gradcheck", "out of memory");
    uint64_t s = o.seed;
    for (size_t k = 0; k < n_out; k++)
        w[k] = (float)((double)(splitmix(&s) >> 11) * 0x1p-53 * 2.0 - 1.0);
    tg_backward_with(tp, y, w);

    /* The differences run on a recording tape, as the analytic pass did:
     * f must see the same tape both times (tg_dropout's TG_DROPOUT_AUTO
     * drops only while the tape records; off, the check had compared the
     * dropped graph's gradient with the differences of the undropped one). */
    double worst_ratio = -1.0, max_grad = 0.0;
    for (int i = 0; i < n_inputs; i++) {
        tg_tensor *x = inputs[i];
        for (size_t j = 0; j < x->size; j++) {
            double numeric =
                numeric_grad(f, tp, inputs, ctx, w, n_out, x, j, h);
            double analytic = x->grad[j];
            double err = fabs(analytic - numeric);
            double tol = o.atol + o.rtol * fabs(numeric);
            double rel = err / fmax(fabs(numeric), 1e-3);
            /* A NaN on either side fails the element: compared as it
             * comes, NaN > tol is false and a NaN gradient passed. */
            double ratio = isnan(err) ? INFINITY : err / tol;
            max_grad = fmax(max_grad, fmax(fabs(analytic), fabs(numeric)));
            rep->max_abs_err =
                isnan(err) ? INFINITY : fmax(rep->max_abs_err, err);
            rep->max_rel_err =
                isnan(rel) ? INFINITY : fmax(rep->max_rel_err, rel);
            if (ratio > worst_ratio) {
                worst_ratio = ratio;
                rep->worst_input = i;
                rep->worst_index = j;
                rep->worst_analytic = analytic;
                rep->worst_numeric = numeric;
            }
            rep->checked++;
        }
    }
    rep->all_zero = max_grad < o.atol;
    rep->ok = rep->checked > 0 && worst_ratio <= 1.0 && !rep->all_zero;

    for (int i = 0; i < n_inputs; i++) {
        free(inputs[i]->grad);
        inputs[i]->grad = saved_grad[i];
        inputs[i]->requires_grad = had_grad[i];
    }
    free(had_grad);
    free(saved_grad);
    free(w);
    tg_tape_free(tp);
    return rep->ok;
}

void tg_gradcheck_print(const tg_gradcheck_report *r, const char *name)
{
    if (!r)
        tg_fatal("gradcheck_print", "NULL report");
    if (!name)
        name = "gradcheck";
    if (r->all_zero)
        printf("%s: FAIL: every gradient is zero (%zu elements): the check "
               "cannot tell right from wrong\n",
               name, r->checked);
    else
        printf("%s: %s: %zu elements, max abs err %.3g, max rel err %.3g; "
               "worst input %d [%zu]: analytic %.9g numeric %.9g\n",
               name, r->ok ? "ok" : "FAIL", r->checked, r->max_abs_err,
               r->max_rel_err, r->worst_input, r->worst_index,
               r->worst_analytic, r->worst_numeric);
}

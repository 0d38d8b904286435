/* bench/op_check_dump: writes cases for every public op of tg_autograd.h
 * and the nn layers that have math of their own, plus the optimizers and
 * gradient clipping (inputs, tapegrad's outputs, a random upstream
 * gradient g per output, and tapegrad's gradient of sum(g * out) with
 * respect to every input) to a file that
 * bench/op_check_torch.py recomputes with PyTorch in float64. A one-off
 * cross-check, not part of CI (torch is not a build dependency); it extends
 * bench/conv_check_dump's pattern to all the ops. Fixed seed: the same file
 * every run.
 *
 * The file: "TGOPCHK1", then per case
 *   u32 0xCA5E, str op, str label, u32 nf, f64 fparams[nf],
 *   u32 ni, i32 iparams[ni],
 *   u32 n_in, per input: u32 ndim, i32 shape[ndim], u8 has_grad, f32 data,
 *   u32 n_out, per output: u32 ndim, i32 shape[ndim], f32 data, f32 g,
 *   then per input with has_grad: f32 grad
 * and a final u32 0 (str: u32 length, bytes).
 * usage: op_check_dump FILE */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cli.h"
#include "tapegrad.h"

enum { MAX_IN = 24, MAX_OUT = 24, MAX_FP = 16, MAX_IP = 4096 };

/* The case being built: its tape, inputs (long-lived tensors, each
 * requiring grad unless constant), outputs, parameters. */
static struct {
    const char *op;
    char label[160];
    tg_tape *tp;
    tg_tensor *in[MAX_IN];
    bool grad[MAX_IN];
    int n_in;
    tg_tensor *out[MAX_OUT];
    int n_out;
    double fp[MAX_FP];
    int n_fp;
    int ip[MAX_IP];
    int n_ip;
} C;

static FILE *F;
static tg_rng RNG;
static int n_cases;

static void put_u32(uint32_t v) { fwrite(&v, sizeof v, 1, F); }
static void put_str(const char *s)
{
    put_u32((uint32_t)strlen(s));
    fwrite(s, 1, strlen(s), F);
}
static void put_floats(const float *v, size_t n)
{
    if (n)
        fwrite(v, sizeof *v, n, F);
}
static void put_shape(const tg_tensor *t)
{
    put_u32((uint32_t)t->ndim);
    fwrite(t->shape, sizeof(int), (size_t)t->ndim, F);
}

static float urand(float lo, float hi)
{
    return lo + (hi - lo) * tg_rng_uniform(&RNG);
}
static int irand(int n) { return (int)tg_rng_below(&RNG, (uint32_t)n); }

static void begin(const char *op, const char *fmt, ...)
{
    memset(&C, 0, sizeof C);
    C.op = op;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(C.label, sizeof C.label, fmt, ap);
    va_end(ap);
    C.tp = tg_tape_new();
}

/* An input of the given shape, values uniform in [lo, hi). */
static tg_tensor *input_g(int ndim, const int *shape, float lo, float hi,
                          bool grad)
{
    if (C.n_in == MAX_IN)
        tg_fatal("op_check_dump", "too many inputs");
    tg_tensor *t = tg_tensor_new(ndim, shape);
    tg_rng_fill_uniform(&RNG, t->data, t->size, lo, hi);
    if (grad)
        tg_tensor_require_grad(t);
    C.in[C.n_in] = t;
    C.grad[C.n_in++] = grad;
    return t;
}
static tg_tensor *input(int ndim, const int *shape, float lo, float hi)
{
    return input_g(ndim, shape, lo, hi, true);
}
static tg_tensor *input2(int r, int c, float lo, float hi)
{
    return input(2, (int[]){r, c}, lo, hi);
}
/* Puts each of vals at a random position (for the edge values of an op). */
static void sprinkle(tg_tensor *t, const float *vals, int n)
{
    for (int i = 0; t->size && i < n; i++)
        t->data[irand((int)t->size)] = vals[i];
}
/* Puts vals[0..n) at positions 0..n-1 (all of them, when t is big enough). */
static void place(tg_tensor *t, const float *vals, int n)
{
    for (int i = 0; i < n && (size_t)i < t->size; i++)
        t->data[i] = vals[i];
}

static void fparam(double v) { C.fp[C.n_fp++] = v; }
static void iparam(int v)
{
    if (C.n_ip == MAX_IP)
        tg_fatal("op_check_dump", "too many int parameters");
    C.ip[C.n_ip++] = v;
}
static void output(tg_tensor *y)
{
    if (C.n_out == MAX_OUT)
        tg_fatal("op_check_dump", "too many outputs");
    C.out[C.n_out++] = y;
}

/* Draws g per output, runs backward once per output (tg_backward_with:
 * repeated walks add into the leaves what one walk of sum_k sum(g_k * out_k)
 * would), writes the case and frees it. */
static void end(void)
{
    float *g[MAX_OUT];
    for (int k = 0; k < C.n_out; k++) {
        size_t n = C.out[k]->size;
        g[k] = malloc((n ? n : 1) * sizeof(float));
        tg_rng_fill_uniform(&RNG, g[k], n, -1.0f, 1.0f);
    }
    for (int k = 0; k < C.n_out; k++)
        if (C.out[k]->requires_grad)
            tg_backward_with(C.tp, C.out[k], g[k]);
    put_u32(0xCA5E);
    put_str(C.op);
    put_str(C.label);
    put_u32((uint32_t)C.n_fp);
    fwrite(C.fp, sizeof(double), (size_t)C.n_fp, F);
    put_u32((uint32_t)C.n_ip);
    fwrite(C.ip, sizeof(int), (size_t)C.n_ip, F);
    put_u32((uint32_t)C.n_in);
    for (int i = 0; i < C.n_in; i++) {
        put_shape(C.in[i]);
        uint8_t gr = C.grad[i];
        fwrite(&gr, 1, 1, F);
        put_floats(C.in[i]->data, C.in[i]->size);
    }
    put_u32((uint32_t)C.n_out);
    for (int k = 0; k < C.n_out; k++) {
        put_shape(C.out[k]);
        put_floats(C.out[k]->data, C.out[k]->size);
        put_floats(g[k], C.out[k]->size);
        free(g[k]);
    }
    for (int i = 0; i < C.n_in; i++)
        if (C.grad[i])
            put_floats(C.in[i]->grad, C.in[i]->size);
    tg_tape_free(C.tp);
    for (int i = 0; i < C.n_in; i++)
        tg_tensor_free(C.in[i]);
    n_cases++;
}

/* ---- shapes ---------------------------------------------------------------
 * For the shape-agnostic ops: size-1 dims, odd sizes, ranks 1 to 4. */
typedef struct shp {
    int ndim, s[4];
} shp;
static const shp shapes[] = {
    {1, {1}},    {2, {1, 1}},    {1, {7}},          {2, {3, 5}},   {2, {4, 1}},
    {2, {1, 6}}, {3, {2, 3, 5}}, {4, {2, 1, 3, 4}}, {2, {17, 33}},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* ---- unary ops ------------------------------------------------------------
 */

typedef tg_tensor *(*unary_fn)(tg_tape *, tg_tensor *);

typedef struct unary_case {
    const char *name;
    unary_fn f;
    float lo, hi;      /* the bulk of the values */
    float special[20]; /* edge values sprinkled in; ends at the first NAN */
} unary_case;

#define END NAN
static const unary_case unaries[] = {
    {"exp",
     tg_exp,
     -4,
     4,
     {-104, -103, -100, -87.5f, -87, -20, -1e-8f, 0, 1e-8f, 20, 80, 88.5f,
      88.72f, 89, END}},
    {"log",
     tg_log,
     0.01f,
     10,
     {0, 1.4e-45f, 1e-40f, 1.2e-38f, 1e-30f, 1e-7f, 0.5f, 1, 1.0000001f,
      0.99999994f, 2, 1e20f, 3e38f, END}},
    {"sqrt",
     tg_sqrt,
     0.01f,
     10,
     {0, 1.4e-45f, 1e-40f, 1e-30f, 1e-8f, 1, 4, 1e30f, 3e38f, END}},
    {"sigmoid",
     tg_sigmoid,
     -6,
     6,
     {-104, -100, -88, -30, -20, -1e-3f, 0, 1e-3f, 16, 17, 20, 30, 88, 100,
      END}},
    {"tanh",
     tg_tanh,
     -3,
     3,
     {-20, -9.5f, -9, -5, -1e-4f, -1e-20f, 0, 1e-20f, 1e-4f, 0.5f, 5, 9, 20,
      END}},
    {"relu",
     tg_relu,
     -2,
     2,
     {0, -0.0f, 0, 1e-30f, -1e-30f, 1.4e-45f, -1.4e-45f, 1e30f, -1e30f, END}},
    {"softplus",
     tg_softplus,
     -6,
     6,
     {-104, -100, -88, -30, -20, -1e-6f, 0, 1e-6f, 15, 17, 20, 20.5f, 25, 30,
      100, END}},
    {"square", tg_square, -3, 3, {0, -0.0f, 1e-20f, 1e19f, 2e19f, -3, END}},
    {"neg", tg_neg, -3, 3, {0, -0.0f, 1e30f, END}},
    {"abs", tg_abs, -3, 3, {0, -0.0f, 0, 1e-30f, -1e-30f, END}},
    {"gelu",
     tg_gelu,
     -4,
     4,
     {-40, -10, -6, -5, -3, -1e-3f, 0, 1e-3f, 3, 6, 10, 40, END}},
    {"cb_log_norm",
     tg_cb_log_norm,
     -4,
     4,
     {-INFINITY, -100, -30, -1.0001f, -1, -0.9999f, -1e-3f, -1e-20f, 0, 1e-6f,
      0.5f, 0.9999f, 1, 1.0001f, 5, 30, 100, INFINITY, END}},
};

static void unary_cases(void)
{
    for (size_t u = 0; u < sizeof unaries / sizeof unaries[0]; u++) {
        const unary_case *c = &unaries[u];
        int n_special = 0;
        while (!isnan(c->special[n_special]))
            n_special++;
        for (int s = 0; s < N_SHAPES; s++) {
            begin(c->name, "shape %d", s);
            tg_tensor *x = input(shapes[s].ndim, shapes[s].s, c->lo, c->hi);
            if (s >= 2)
                sprinkle(x, c->special, n_special);
            output(c->f(C.tp, x));
            end();
        }
        /* every edge value at once, in order */
        begin(c->name, "edge values");
        tg_tensor *x = input(1, (int[]){n_special}, 0, 0);
        place(x, c->special, n_special);
        output(c->f(C.tp, x));
        end();
        /* NaN in, NaN out (and the gradient PyTorch gives it) */
        begin(c->name, "NaN");
        x = input(1, (int[]){4}, 0, 0);
        place(x, (float[]){NAN, 1.5f, -0.5f, 0}, 4);
        output(c->f(C.tp, x));
        end();
    }
}

/* Ops with a float parameter: scale, add_scalar, pow, leaky_relu, clamp. */
static void param_cases(void)
{
    static const float scales[] = {0, -2.5f, 1e-3f, 1, 7};
    for (int i = 0; i < 5; i++) {
        begin("scale", "s %g", (double)scales[i]);
        tg_tensor *x = input(shapes[3 + i].ndim, shapes[3 + i].s, -3, 3);
        fparam(scales[i]);
        output(tg_scale(C.tp, x, scales[i]));
        end();
        begin("add_scalar", "s %g", (double)scales[i]);
        x = input(shapes[3 + i].ndim, shapes[3 + i].s, -3, 3);
        fparam(scales[i]);
        output(tg_add_scalar(C.tp, x, scales[i]));
        end();
    }
    /* pow: integer exponents on any sign (and 0), others on x >= 0 */
    static const float pows[] = {0, 1, 2, 3, -1, -2, 0.5f, -1.5f, 2.5f, 1.5f};
    for (int i = 0; i < 10; i++) {
        float p = pows[i];
        bool integer = p == floorf(p);
        for (int s = 1; s < 5; s++) {
            begin("pow", "p %g shape %d", (double)p, s);
            tg_tensor *x = input(shapes[s + 2].ndim, shapes[s + 2].s,
                                 integer ? -2.0f : 0.05f, 2);
            if (s == 4) {
                float sp[] = {0, 1, 1e-20f, 1e-3f, integer ? -1.0f : 4.0f};
                place(x, sp, 5);
            }
            fparam(p);
            output(tg_pow(C.tp, x, p));
            end();
        }
    }
    static const float slopes[] = {0.01f, 0.2f, 0, -0.3f, 1, 2.5f};
    for (int i = 0; i < 6; i++) {
        begin("leaky_relu", "slope %g", (double)slopes[i]);
        tg_tensor *x = input2(5, 7, -2, 2);
        float sp[] = {0, -0.0f, 1e-30f, -1e-30f, NAN};
        place(x, sp, 5);
        fparam(slopes[i]);
        output(tg_leaky_relu(C.tp, x, slopes[i]));
        end();
    }
    static const float bounds[][2] = {
        {-1, 1}, {0, 0.5f}, {0.3f, 0.3f}, {-2, 0}, {0, 1e30f}};
    for (int i = 0; i < 5; i++) {
        float lo = bounds[i][0], hi = bounds[i][1];
        begin("clamp", "[%g, %g]", (double)lo, (double)hi);
        tg_tensor *x = input2(6, 7, -2, 2);
        /* at the bounds, just inside and just outside, NaN */
        float sp[] = {lo,
                      hi,
                      lo,
                      hi,
                      nextafterf(lo, -INFINITY),
                      nextafterf(lo, INFINITY),
                      nextafterf(hi, -INFINITY),
                      nextafterf(hi, INFINITY),
                      NAN};
        place(x, sp, 9);
        fparam(lo);
        fparam(hi);
        output(tg_clamp(C.tp, x, lo, hi));
        end();
    }
}

/* ---- binary ops with broadcasting -----------------------------------------
 */

typedef tg_tensor *(*binary_fn)(tg_tape *, tg_tensor *, tg_tensor *);

/* a's shape, b's shape; the iparam records nothing: the Python side reads
 * the broadcast form from the shapes, as tapegrad does. */
typedef struct bform {
    shp a, b;
    const char *name;
} bform;
static const bform bforms[] = {
    {{2, {3, 4}}, {2, {3, 4}}, "same"},
    {{1, {5}}, {1, {5}}, "same 1-D"},
    {{1, {1}}, {1, {1}}, "same [1]"},
    {{3, {2, 3, 4}}, {3, {2, 3, 4}}, "same rank 3"},
    {{2, {4, 1}}, {2, {4, 1}}, "same column"},
    {{2, {3, 4}}, {1, {4}}, "row [C]"},
    {{2, {3, 4}}, {2, {1, 4}}, "row [1, C]"},
    {{3, {2, 3, 4}}, {1, {4}}, "row [C], rank 3"},
    {{3, {2, 3, 4}}, {3, {1, 1, 4}}, "row [1, 1, C], rank 3"},
    {{2, {3, 3}}, {1, {3}}, "row [C] with R == C"},
    {{2, {17, 33}}, {1, {33}}, "row, 17x33"},
    {{2, {3, 4}}, {2, {3, 1}}, "column [R, 1]"},
    {{3, {2, 3, 4}}, {2, {6, 1}}, "column [R, 1], rank 3"},
    {{2, {17, 33}}, {2, {17, 1}}, "column, 17x33"},
    {{2, {3, 4}}, {1, {1}}, "one element [1]"},
    {{2, {3, 4}}, {2, {1, 1}}, "one element [1, 1]"},
    {{3, {2, 3, 4}}, {3, {1, 1, 1}}, "one element [1, 1, 1]"},
    {{1, {7}}, {1, {1}}, "1-D with one element"},
    {{2, {4, 1}}, {1, {1}}, "column with one element"},
};
#define N_BFORMS (int)(sizeof bforms / sizeof bforms[0])

/* Where a's element k reads b (tapegrad's broadcast rule). */
static size_t b_index(const tg_tensor *a, const tg_tensor *b, size_t k)
{
    int C_ = a->shape[a->ndim - 1];
    if (b->size == a->size)
        return k;
    if (b->size == 1)
        return 0;
    if (b->shape[b->ndim - 1] == C_ && b->size == (size_t)C_)
        return k % (size_t)C_;
    return k / (size_t)C_;
}

static void binary_cases(void)
{
    static const struct {
        const char *name;
        binary_fn f;
    } ops[] = {{"add", tg_add},         {"sub", tg_sub},
               {"mul", tg_mul},         {"div", tg_div},
               {"maximum", tg_maximum}, {"minimum", tg_minimum}};
    for (int o = 0; o < 6; o++) {
        bool div = ops[o].f == tg_div;
        bool ext = ops[o].f == tg_maximum || ops[o].f == tg_minimum;
        for (int k = 0; k < N_BFORMS; k++) {
            const bform *bf = &bforms[k];
            begin(ops[o].name, "%s", bf->name);
            tg_tensor *a = input(bf->a.ndim, bf->a.s, -2, 2);
            tg_tensor *b = input(bf->b.ndim, bf->b.s, -2, 2);
            if (div) /* |b| in [0.1, 2] */
                for (size_t i = 0; i < b->size; i++)
                    b->data[i] =
                        (b->data[i] < 0 ? -0.1f : 0.1f) + 0.95f * b->data[i];
            if (ext) /* ties: a == b at every third element */
                for (size_t i = 0; i < a->size; i += 3)
                    a->data[i] = b->data[b_index(a, b, i)];
            output(ops[o].f(C.tp, a, b));
            end();
        }
    }
    /* div near its edges: tiny divisors, zero numerators */
    begin("div", "tiny divisors");
    tg_tensor *a = input2(3, 4, -2, 2), *b = input2(3, 4, 0.5f, 2);
    float sb[] = {1e-20f, -1e-20f, 1e-30f, 3e38f, 1e-3f, -1e-3f};
    place(b, sb, 6);
    float sa[] = {1, 1, 0, 1e30f, 0, 5};
    place(a, sa, 6);
    output(tg_div(C.tp, a, b));
    end();
    /* maximum / minimum with +0 against -0 and exact ties everywhere */
    for (int m = 0; m < 2; m++) {
        begin(m ? "minimum" : "maximum", "all ties, signed zeros");
        a = input2(2, 5, -1, 1);
        b = input2(2, 5, -1, 1);
        memcpy(b->data, a->data, a->size * sizeof(float));
        a->data[0] = 0.0f;
        b->data[0] = -0.0f;
        a->data[1] = -0.0f;
        b->data[1] = 0.0f;
        output((m ? tg_minimum : tg_maximum)(C.tp, a, b));
        end();
        begin(m ? "minimum" : "maximum", "NaN in either operand");
        a = input2(2, 3, -1, 1);
        b = input2(2, 3, -1, 1);
        a->data[0] = NAN;
        b->data[1] = NAN;
        a->data[2] = b->data[2] = NAN;
        output((m ? tg_minimum : tg_maximum)(C.tp, a, b));
        end();
    }
}

/* ---- softmax family, reductions ---------------------------------------------
 */

static void row_ops(void)
{
    static const struct {
        const char *name;
        unary_fn f;
    } ops[] = {{"softmax", tg_softmax},
               {"log_softmax", tg_log_softmax},
               {"logsumexp", tg_logsumexp}};
    static const shp rshapes[] = {{2, {1, 1}}, {2, {3, 1}},    {1, {6}},
                                  {2, {4, 7}}, {3, {2, 3, 5}}, {2, {5, 64}}};
    for (int o = 0; o < 3; o++) {
        for (int s = 0; s < 6; s++) {
            begin(ops[o].name, "shape %d", s);
            tg_tensor *x = input(rshapes[s].ndim, rshapes[s].s, -3, 3);
            output(ops[o].f(C.tp, x));
            end();
        }
        /* large logits: rows around +-1000, spread 100; a row with ties;
         * a row with -Inf entries (not all) */
        begin(ops[o].name, "large, ties, -Inf");
        tg_tensor *x = input2(6, 5, -3, 3);
        for (int j = 0; j < 5; j++) {
            x->data[0 * 5 + j] = 1000.0f + urand(-1, 1);
            x->data[1 * 5 + j] = -1000.0f + urand(-100, 100);
            x->data[2 * 5 + j] = urand(-100, 100);
            x->data[3 * 5 + j] = 2.0f; /* all tied */
            x->data[5 * 5 + j] = 1e4f * urand(-1, 1);
        }
        x->data[4 * 5 + 1] = -INFINITY;
        x->data[4 * 5 + 3] = -INFINITY;
        output(ops[o].f(C.tp, x));
        end();
    }
    /* the reductions */
    static const struct {
        const char *name;
        unary_fn f;
    } reds[] = {{"sum", tg_sum},
                {"mean", tg_mean},
                {"sum_rows", tg_sum_rows},
                {"mean_rows", tg_mean_rows},
                {"sum_axis0", tg_sum_axis0},
                {"mean_axis0", tg_mean_axis0}};
    for (int o = 0; o < 6; o++) {
        for (int s = 0; s < N_SHAPES; s++) {
            begin(reds[o].name, "shape %d", s);
            tg_tensor *x = input(shapes[s].ndim, shapes[s].s, -3, 3);
            output(reds[o].f(C.tp, x));
            end();
        }
        begin(reds[o].name, "0 rows");
        tg_tensor *x = input2(0, 3, -1, 1);
        output(reds[o].f(C.tp, x));
        end();
        begin(reds[o].name, "large, cancelling");
        x = input2(4, 9, -1, 1);
        for (size_t i = 0; i < x->size; i += 2)
            x->data[i] = 1e6f * (i % 4 ? 1.0f : -1.0f);
        output(reds[o].f(C.tp, x));
        end();
    }
}

/* ---- products and data movement -------------------------------------------
 */

static void product_cases(void)
{
    static const int mkn[][3] = {{1, 1, 1},     {1, 5, 1},   {7, 1, 3},
                                 {3, 4, 5},     {13, 17, 9}, {33, 65, 31},
                                 {128, 130, 70}};
    for (int s = 0; s < 7; s++)
        for (int t = 0; t < 4; t++) {
            int M = mkn[s][0], K = mkn[s][1], N = mkn[s][2];
            bool ta = t & 1, tb = t & 2;
            begin("matmul", "%dx%dx%d%s%s", M, K, N, ta ? " A^T" : "",
                  tb ? " B^T" : "");
            tg_tensor *a = ta ? input2(K, M, -1, 1) : input2(M, K, -1, 1);
            tg_tensor *b = tb ? input2(N, K, -1, 1) : input2(K, N, -1, 1);
            iparam(ta);
            iparam(tb);
            output(tg_matmul(C.tp, a, b, ta, tb));
            end();
        }
    /* dense: B, in, out, bias form (0 none, 1 [out], 2 [1, out]), rank 3 x */
    static const int dn[][5] = {
        {1, 1, 1, 1, 0}, {4, 3, 5, 1, 0},     {4, 3, 5, 0, 0},  {4, 3, 5, 2, 0},
        {6, 7, 2, 1, 1}, {64, 100, 40, 1, 0}, {9, 33, 17, 0, 1}};
    for (int s = 0; s < 7; s++) {
        const int *d = dn[s];
        begin("dense", "B %d in %d out %d bias %d rank3 %d", d[0], d[1], d[2],
              d[3], d[4]);
        tg_tensor *x =
            d[4] ? input(3, (int[]){2, d[0] / 2 ? d[0] / 2 : 1, d[1]}, -1, 1)
                 : input2(d[0], d[1], -1, 1);
        tg_tensor *W = input2(d[2], d[1], -1, 1);
        tg_tensor *b = d[3] == 1   ? input(1, (int[]){d[2]}, -1, 1)
                       : d[3] == 2 ? input2(1, d[2], -1, 1)
                                   : NULL;
        output(tg_dense(C.tp, x, W, b));
        end();
    }
}

/* 1-D convolution and pooling: iparams N C L OC k stride padding dilation
 * output_padding bias (conv), N C L k stride padding ties (pools). After
 * the cases before, so those keep their inputs. */
/* permute: every perm of a 4-D tensor, two of a 3-D one, and [1, 0] */
static void permute_cases(void)
{
    for (int code = 0; code < 256; code++) {
        int p[4] = {code & 3, (code >> 2) & 3, (code >> 4) & 3, code >> 6};
        if ((1 << p[0] | 1 << p[1] | 1 << p[2] | 1 << p[3]) != 15)
            continue;
        begin("permute", "2x3x4x5 (%d, %d, %d, %d)", p[0], p[1], p[2], p[3]);
        tg_tensor *x = input(4, (int[]){2, 3, 4, 5}, -1, 1);
        for (int d = 0; d < 4; d++)
            iparam(p[d]);
        output(tg_permute(C.tp, x, p));
        end();
    }
    static const int p3[][3] = {{2, 0, 1}, {1, 2, 0}};
    for (int k = 0; k < 2; k++) {
        begin("permute", "3x1x4 (%d, %d, %d)", p3[k][0], p3[k][1], p3[k][2]);
        tg_tensor *x = input(3, (int[]){3, 1, 4}, -1, 1);
        for (int d = 0; d < 3; d++)
            iparam(p3[k][d]);
        output(tg_permute(C.tp, x, p3[k]));
        end();
    }
    begin("permute", "5x7 (1, 0)");
    tg_tensor *x = input2(5, 7, -1, 1);
    iparam(1);
    iparam(0);
    output(tg_permute(C.tp, x, (int[]){1, 0}));
    end();
}

static void conv1d_cases(void)
{
    static const int cv[][10] = {
        {2, 3, 9, 4, 3, 1, 1, 1, 0, 1},   {1, 1, 11, 16, 4, 2, 1, 1, 0, 1},
        {2, 16, 8, 16, 4, 2, 1, 1, 0, 1}, {1, 2, 7, 3, 2, 3, 0, 1, 0, 0},
        {2, 3, 12, 2, 3, 2, 2, 2, 0, 1},  {1, 3, 1, 2, 1, 1, 0, 1, 0, 1},
    };
    static const int ct[][10] = {
        {2, 3, 4, 2, 3, 2, 1, 1, 1, 1},   {2, 16, 4, 1, 4, 2, 1, 1, 0, 1},
        {2, 16, 4, 16, 4, 2, 1, 1, 0, 0}, {1, 2, 3, 3, 2, 3, 0, 1, 2, 1},
        {2, 3, 5, 2, 3, 1, 0, 2, 1, 1},
    };
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < (t ? 5 : 6); i++) {
            const int *d = t ? ct[i] : cv[i];
            begin(t ? "conv_transpose1d" : "conv1d",
                  "x %dx%dx%d OC %d k %d s %d p %d d %d op %d%s", d[0], d[1],
                  d[2], d[3], d[4], d[5], d[6], d[7], d[8],
                  d[9] ? "" : ", no bias");
            tg_tensor *x = input(3, d, -1, 1);
            tg_tensor *W = t ? input(3, (int[]){d[1], d[3], d[4]}, -1, 1)
                             : input(3, (int[]){d[3], d[1], d[4]}, -1, 1);
            tg_tensor *b = d[9] ? input(1, &d[3], -1, 1) : NULL;
            for (int k = 0; k < 10; k++)
                iparam(d[k]);
            output(
                t ? tg_conv_transpose1d(C.tp, x, W, b, d[5], d[6], d[8], d[7])
                  : tg_conv1d(C.tp, x, W, b, d[5], d[6], d[7]));
            end();
        }
    static const int pl[][7] = {
        {2, 3, 9, 3, 2, 1, 0}, {1, 2, 8, 2, 0, 1, 0}, {1, 2, 10, 3, 1, 1, 1},
        {1, 1, 1, 1, 1, 0, 0}, {2, 2, 7, 4, 3, 2, 1},
    };
    for (int i = 0; i < 5; i++)
        for (int avg = 0; avg < 2; avg++) {
            const int *d = pl[i];
            begin(avg ? "avg_pool1d" : "max_pool1d",
                  "x %dx%dx%d k %d s %d p %d%s", d[0], d[1], d[2], d[3], d[4],
                  d[5], d[6] ? ", ties" : "");
            tg_tensor *x = input(3, d, -1, 1);
            if (d[6])
                for (size_t k = 0; k < x->size; k++)
                    x->data[k] = (float)irand(3) - 1.0f;
            for (int k = 3; k < 6; k++)
                iparam(d[k]);
            output(avg ? tg_avg_pool1d(C.tp, x, d[3], d[4], d[5])
                       : tg_max_pool1d(C.tp, x, d[3], d[4], d[5]));
            end();
        }
}

/* tg_matmul on batches: [nb.., M, K] . [nb.., K, N], or one operand 2-D
 * and shared. Last in the file, so the cases before keep their inputs. */
static void batched_matmul_cases(void)
{
    static const int bm[][6] = {/* M, K, N, batch dims of a, of b, B1 */
                                {3, 4, 5, 1, 1, 4},   {1, 1, 1, 1, 1, 1},
                                {5, 3, 2, 2, 2, 3},   {6, 7, 5, 1, 0, 3},
                                {6, 7, 5, 0, 1, 3},   {4, 3, 6, 2, 0, 2},
                                {33, 17, 40, 1, 1, 5}};
    for (int s = 0; s < 7; s++)
        for (int t = 0; t < 4; t++) {
            const int *d = bm[s];
            bool ta = t & 1, tb = t & 2;
            begin("matmul", "batched %dx%dx%d dims %d/%d%s%s", d[0], d[1], d[2],
                  d[3], d[4], ta ? " A^T" : "", tb ? " B^T" : "");
            int sa[4] = {d[5], 2}, sb[4] = {d[5], 2};
            sa[d[3]] = ta ? d[1] : d[0];
            sa[d[3] + 1] = ta ? d[0] : d[1];
            sb[d[4]] = tb ? d[2] : d[1];
            sb[d[4] + 1] = tb ? d[1] : d[2];
            tg_tensor *a = input(d[3] + 2, sa, -1, 1);
            tg_tensor *b = input(d[4] + 2, sb, -1, 1);
            iparam(ta);
            iparam(tb);
            output(tg_matmul(C.tp, a, b, ta, tb));
            end();
        }
}

static void movement_cases(void)
{
    static const int tshape[][2] = {{1, 1}, {1, 5}, {5, 1}, {33, 47}};
    for (int s = 0; s < 4; s++) {
        begin("transpose", "%dx%d", tshape[s][0], tshape[s][1]);
        output(tg_transpose(C.tp, input2(tshape[s][0], tshape[s][1], -1, 1)));
        end();
    }
    begin("reshape", "[2,3,4] -> [6,4]");
    output(
        tg_reshape(C.tp, input(3, (int[]){2, 3, 4}, -1, 1), 2, (int[]){6, 4}));
    end();
    begin("reshape", "[4,6] -> [24]");
    output(tg_reshape(C.tp, input2(4, 6, -1, 1), 1, (int[]){24}));
    end();
    begin("reshape", "[24] -> [2,1,3,4]");
    output(
        tg_reshape(C.tp, input(1, (int[]){24}, -1, 1), 4, (int[]){2, 1, 3, 4}));
    end();
    /* concat: n parts of widths w[i] (rank 2 or 3) */
    static const int cw[][5] = {
        {1, 4}, {3, 1, 2, 5}, {4, 1, 1, 1, 1}, {2, 3, 3}};
    for (int s = 0; s < 4; s++) {
        int n = cw[s][0];
        bool rank3 = s == 3;
        begin("concat", "%d parts%s", n, rank3 ? ", rank 3" : "");
        tg_tensor *xs[4];
        for (int p = 0; p < n; p++)
            xs[p] = rank3 ? input(3, (int[]){2, 3, cw[s][1 + p]}, -1, 1)
                          : input2(3, cw[s][1 + p], -1, 1);
        output(tg_concat(C.tp, n, xs));
        end();
    }
    /* concat where one part needs no gradient */
    begin("concat", "a constant part");
    tg_tensor *xs[3];
    xs[0] = input2(2, 3, -1, 1);
    xs[1] = input_g(2, (int[]){2, 2}, -1, 1, false);
    xs[2] = input2(2, 1, -1, 1);
    output(tg_concat(C.tp, 3, xs));
    end();
    /* split: k parts; the iparam marks which outputs are dumped */
    for (int k = 1; k <= 4; k++) {
        begin("split", "k %d", k);
        tg_tensor *x = k == 3 ? input(3, (int[]){2, 2, 9}, -1, 1)
                              : input2(3, 4 * k, -1, 1);
        tg_tensor *outs[4];
        tg_split(C.tp, x, k, outs);
        iparam(k);
        for (int p = 0; p < k; p++) {
            bool used = !(k == 4 && p == 2); /* one part unused */
            iparam(used);
            if (used)
                output(outs[p]);
        }
        end();
    }
    static const int sr[][5] = {{2, 5, 3, 1, 4},
                                {2, 5, 3, 0, 5},
                                {2, 5, 3, 2, 2},
                                {3, 4, 2, 1, 3}}; /* ndim, N, inner, r0, r1 */
    for (int s = 0; s < 4; s++) {
        const int *d = sr[s];
        begin("slice_rows", "N %d rows [%d, %d)%s", d[1], d[3], d[4],
              d[0] == 3 ? ", rank 3" : "");
        tg_tensor *x = d[0] == 3 ? input(3, (int[]){d[1], d[2], 3}, -1, 1)
                                 : input2(d[1], d[2], -1, 1);
        iparam(d[3]);
        iparam(d[4]);
        output(tg_slice_rows(C.tp, x, d[3], d[4]));
        end();
    }
    static const int sc[][4] = {
        {2, 7, 2, 5}, {2, 7, 0, 7}, {2, 7, 6, 7}, {3, 5, 1, 3}};
    for (int s = 0; s < 4; s++) {
        const int *d = sc[s];
        begin("slice_cols", "C %d cols [%d, %d)%s", d[1], d[2], d[3],
              d[0] == 3 ? ", rank 3" : "");
        tg_tensor *x = d[0] == 3 ? input(3, (int[]){2, 3, d[1]}, -1, 1)
                                 : input2(4, d[1], -1, 1);
        iparam(d[2]);
        iparam(d[3]);
        output(tg_slice_cols(C.tp, x, d[2], d[3]));
        end();
    }
    static const int gi[][8] = {{6, 4, 5, 0, 5, 2, 5, 5},
                                {1, 3, 3, 0, 0, 0},
                                {5, 2, 1, 4},
                                {4, 3, 0}}; /* N, D, n, idx... */
    for (int s = 0; s < 4; s++) {
        const int *d = gi[s];
        begin("gather_rows", "table %dx%d, %d indices", d[0], d[1], d[2]);
        tg_tensor *t = input2(d[0], d[1], -1, 1);
        for (int i = 0; i < d[2]; i++)
            iparam(d[3 + i]);
        output(tg_gather_rows(C.tp, t, &d[3], d[2]));
        end();
    }
    /* detach: x * detach(x) has gradient x (not 2x) */
    begin("detach", "x * detach(x)");
    tg_tensor *x = input2(3, 4, -1, 1);
    output(tg_mul(C.tp, x, tg_detach(C.tp, x)));
    end();
    /* mask_scale */
    static const float ms[] = {2, 0, -1.5f, 1};
    for (int s = 0; s < 4; s++) {
        begin("mask_scale", "scale %g", (double)ms[s]);
        tg_tensor *mx = input(s == 3 ? 3 : 2,
                              s == 3 ? (int[]){2, 3, 4} : (int[]){5, 6}, -1, 1);
        uint8_t keep[64];
        for (size_t i = 0; i < mx->size; i++) {
            keep[i] = (uint8_t)(s == 1 ? 1 : irand(3) != 0);
            iparam(keep[i]);
        }
        fparam(ms[s]);
        output(tg_mask_scale(C.tp, mx, keep, ms[s]));
        end();
    }
}

/* ---- losses, layer norm
 * ------------------------------------------------------ */

static void loss_cases(void)
{
    static const shp ls[] = {
        {2, {1, 1}}, {2, {3, 5}}, {3, {2, 3, 4}}, {2, {16, 40}}};
    for (int s = 0; s < 4; s++) {
        begin("bce_with_logits", "shape %d", s);
        tg_tensor *x = input(ls[s].ndim, ls[s].s, -4, 4);
        tg_tensor *z = input(ls[s].ndim, ls[s].s, 0, 1);
        if (s == 3) {
            float sx[] = {-100, 100, -30, 30, -20, 20, 0, 1e-6f, -1e-6f, 15};
            float sz[] = {0, 1, 1, 0, 0.5f, 1, 0, 1, 0.999f, 0.001f};
            place(x, sx, 10);
            place(z, sz, 10);
        }
        output(tg_bce_with_logits(C.tp, x, z));
        end();

        begin("bce", "shape %d", s);
        tg_tensor *p = input(ls[s].ndim, ls[s].s, 0.02f, 0.98f);
        z = input(ls[s].ndim, ls[s].s, 0, 1);
        if (s == 3) {
            float eps = TG_BCE_EPS, one_m = 1.0f - TG_BCE_EPS;
            float sp[] = {0,
                          1e-8f,
                          eps,
                          nextafterf(eps, 1),
                          nextafterf(eps, 0),
                          1e-6f,
                          0.5f,
                          nextafterf(one_m, 0),
                          one_m,
                          nextafterf(one_m, 1),
                          1,
                          0.999f};
            float sz[] = {0, 1, 0.3f, 1, 0, 1, 0.5f, 0, 1, 0.2f, 0, 1};
            place(p, sp, 12);
            place(z, sz, 12);
        }
        output(tg_bce(C.tp, p, z));
        end();

        begin("kl_normal", "shape %d", s);
        tg_tensor *m = input(ls[s].ndim, ls[s].s, -2, 2);
        tg_tensor *v = input(ls[s].ndim, ls[s].s, -3, 3);
        if (s == 3) {
            float sv[] = {-30, -10, 0, 1e-4f, -1e-4f, 10, 30, 40};
            place(v, sv, 8);
        }
        output(tg_kl_normal(C.tp, m, v));
        end();
    }
    /* KL near 0: q close to the prior in every column (cancellation) */
    begin("kl_normal", "near zero");
    tg_tensor *m = input2(3, 8, -1e-3f, 1e-3f);
    tg_tensor *v = input2(3, 8, -1e-3f, 1e-3f);
    output(tg_kl_normal(C.tp, m, v));
    end();
    begin("kl_normals", "near zero");
    m = input2(3, 8, -1e-3f, 1e-3f);
    v = input2(3, 8, -1e-3f, 1e-3f);
    tg_tensor *prior_m = input2(3, 8, -1e-6f, 1e-6f);
    tg_tensor *prior_v = input2(3, 8, -1e-6f, 1e-6f);
    output(tg_kl_normals(C.tp, m, v, prior_m, prior_v));
    end();

    /* kl_normals: prior same shape, [C], [1, C]; rank 3 q with a row prior */
    static const shp kq[] = {
        {2, {4, 5}}, {2, {4, 5}}, {2, {4, 5}}, {3, {2, 3, 4}}, {2, {1, 1}}};
    static const shp kp[] = {
        {2, {4, 5}}, {1, {5}}, {2, {1, 5}}, {1, {4}}, {2, {1, 1}}};
    for (int s = 0; s < 5; s++) {
        begin("kl_normals", "q %d prior %d", s, s);
        tg_tensor *mq = input(kq[s].ndim, kq[s].s, -2, 2);
        tg_tensor *vq = input(kq[s].ndim, kq[s].s, -3, 3);
        tg_tensor *mp = input(kp[s].ndim, kp[s].s, -2, 2);
        tg_tensor *vp = input(kp[s].ndim, kp[s].s, -3, 3);
        if (s == 0) {
            float a[] = {-20, 20, 0, 15};
            float b[] = {20, -20, 0, -15};
            place(vq, a, 4);
            place(vp, b, 4);
        }
        output(tg_kl_normals(C.tp, mq, vq, mp, vp));
        end();
    }

    /* softmax_xent: labels as iparams */
    static const int xs[][2] = {{1, 1}, {3, 1}, {4, 5}, {6, 10}, {1, 2}};
    for (int s = 0; s < 5; s++) {
        int R = xs[s][0], Cc = xs[s][1];
        begin("softmax_xent", "%dx%d", R, Cc);
        tg_tensor *x = input2(R, Cc, -3, 3);
        if (s == 3)
            for (int j = 0; j < Cc; j++) {
                x->data[0 * Cc + j] = 1000.0f + urand(-5, 5);
                x->data[1 * Cc + j] = urand(-100, 100);
                x->data[2 * Cc + j] = 1.0f; /* ties */
            }
        int labels[16];
        for (int i = 0; i < R; i++) {
            labels[i] = irand(Cc);
            iparam(labels[i]);
        }
        if (s == 3) /* a -Inf logit that is not the label */
            x->data[3 * Cc + (labels[3] + 1) % Cc] = -INFINITY;
        output(tg_softmax_xent(C.tp, x, labels));
        end();
    }
    /* nll of log-probabilities (any values: nll only picks), labels as
     * iparams */
    for (int s = 0; s < 4; s++) {
        int R = xs[s][0] + 1, Cc = xs[s][1] + 1;
        begin("nll", "%dx%d", R, Cc);
        tg_tensor *x = input2(R, Cc, -6, 0);
        int labels[16];
        for (int i = 0; i < R; i++) {
            labels[i] = irand(Cc);
            iparam(labels[i]);
        }
        output(tg_nll(C.tp, x, labels));
        end();
    }
}

/* layer_norm: iparams gamma form, beta form (0 none, 1 [C], 2 [1, C]) */
static void layer_norm_case(const char *label, int ndim, const int *shape,
                            int gform, int bform, float eps, int rows_kind)
{
    begin("layer_norm", "%s", label);
    tg_tensor *x = input(ndim, shape, -2, 2);
    int cols = shape[ndim - 1], rows = (int)(x->size / (size_t)cols);
    if (rows_kind == 1) /* a constant row, a row offset by 1000 */
        for (int j = 0; j < cols; j++) {
            x->data[j] = 0.75f;
            if (rows > 1)
                x->data[cols + j] = 1000.0f + urand(-0.01f, 0.01f);
        }
    tg_tensor *g = gform == 1   ? input(1, &cols, 0.5f, 1.5f)
                   : gform == 2 ? input2(1, cols, -1.5f, 1.5f)
                                : NULL;
    tg_tensor *b = bform == 1   ? input(1, &cols, -1, 1)
                   : bform == 2 ? input2(1, cols, -1, 1)
                                : NULL;
    iparam(gform);
    iparam(bform);
    fparam(eps);
    output(tg_layer_norm(C.tp, x, g, b, eps));
    end();
}

static void layer_norm_cases(void)
{
    layer_norm_case("4x6 gamma beta", 2, (int[]){4, 6}, 1, 1, 1e-5f, 0);
    layer_norm_case("4x6 [1,C] params", 2, (int[]){4, 6}, 2, 2, 1e-5f, 0);
    layer_norm_case("no gamma", 2, (int[]){3, 5}, 0, 1, 1e-5f, 0);
    layer_norm_case("no beta", 2, (int[]){3, 5}, 1, 0, 1e-5f, 0);
    layer_norm_case("no affine", 2, (int[]){3, 5}, 0, 0, 1e-5f, 0);
    layer_norm_case("eps 0", 2, (int[]){3, 5}, 1, 1, 0, 0);
    layer_norm_case("eps 0.5", 2, (int[]){3, 5}, 1, 1, 0.5f, 0);
    layer_norm_case("C = 1", 2, (int[]){4, 1}, 1, 1, 1e-5f, 0);
    layer_norm_case("C = 2", 2, (int[]){4, 2}, 1, 1, 1e-5f, 0);
    layer_norm_case("rank 3", 3, (int[]){2, 3, 7}, 1, 1, 1e-5f, 0);
    layer_norm_case("constant and offset rows", 2, (int[]){3, 8}, 1, 1, 1e-5f,
                    1);
    layer_norm_case("wide", 2, (int[]){5, 300}, 1, 1, 1e-5f, 0);
}

/* group_norm: iparams groups, gamma form, beta form (0 none, 1 [C], 2 [1, C]);
 * kind 1: example 0's first group constant, example 1's offset by 1000 */
static void group_norm_case(const char *label, int ndim, const int *shape,
                            int groups, int gform, int bform, float eps,
                            int kind)
{
    begin("group_norm", "%s", label);
    tg_tensor *x = input(ndim, shape, -2, 2);
    int B = shape[0], chans = shape[1];
    size_t n = B ? x->size / ((size_t)B * groups) : 0; /* one group */
    if (kind == 1 && B > 1)
        for (size_t j = 0; j < n; j++) {
            x->data[j] = 0.75f;
            x->data[x->size / B + j] = 1000.0f + urand(-0.01f, 0.01f);
        }
    tg_tensor *g = gform == 1   ? input(1, &chans, 0.5f, 1.5f)
                   : gform == 2 ? input2(1, chans, -1.5f, 1.5f)
                                : NULL;
    tg_tensor *b = bform == 1   ? input(1, &chans, -1, 1)
                   : bform == 2 ? input2(1, chans, -1, 1)
                                : NULL;
    iparam(groups);
    iparam(gform);
    iparam(bform);
    fparam(eps);
    output(tg_group_norm(C.tp, x, groups, g, b, eps));
    end();
}

static void group_norm_cases(void)
{
    const int rows[2] = {4, 6}, img[4] = {2, 6, 5, 5};
    group_norm_case("4x6 groups 1", 2, rows, 1, 1, 1, 1e-5f, 0);
    group_norm_case("4x6 groups 2", 2, rows, 2, 1, 1, 1e-5f, 0);
    group_norm_case("4x6 groups 6", 2, rows, 6, 1, 1, 1e-5f, 0);
    group_norm_case("2x6x5x5 groups 1", 4, img, 1, 1, 1, 1e-5f, 0);
    group_norm_case("2x6x5x5 groups 3", 4, img, 3, 1, 1, 1e-5f, 0);
    group_norm_case("2x6x5x5 groups 6 (instance)", 4, img, 6, 1, 1, 1e-5f, 0);
    group_norm_case("2x6x5x5 [1,C] params", 4, img, 3, 2, 2, 1e-5f, 0);
    group_norm_case("no gamma", 4, img, 3, 0, 1, 1e-5f, 0);
    group_norm_case("no beta", 4, img, 3, 1, 0, 1e-5f, 0);
    group_norm_case("no affine", 4, img, 2, 0, 0, 1e-5f, 0);
    group_norm_case("eps 0", 4, img, 3, 1, 1, 0, 0);
    group_norm_case("eps 0.5", 4, img, 3, 1, 1, 0.5f, 0);
    group_norm_case("rank 3", 3, (int[]){3, 4, 7}, 2, 1, 1, 1e-5f, 0);
    group_norm_case("one example", 4, (int[]){1, 6, 4, 4}, 3, 1, 1, 1e-5f, 0);
    group_norm_case("1x1 instance", 4, (int[]){3, 4, 1, 1}, 4, 1, 1, 1e-5f, 0);
    group_norm_case("constant and offset groups", 4, (int[]){2, 4, 3, 3}, 2, 1,
                    1, 1e-5f, 1);
    group_norm_case("wide", 4, (int[]){2, 32, 8, 8}, 8, 1, 1, 1e-5f, 0);
}

/* ---- convolution, pooling, upsampling --------------------------------------
 */

/* iparams: N C H W OC kh kw sh sw ph pw dh dw oph opw has_bias relu */
static void conv_case(bool transpose, const int *g)
{
    begin(transpose ? "conv_transpose2d" : "conv2d",
          "x %dx%dx%dx%d oc %d k %dx%d s %d,%d p %d,%d d %d,%d op %d,%d b %d "
          "relu %d",
          g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10],
          g[11], g[12], g[13], g[14], g[15], g[16]);
    tg_tensor *x = input(4, (int[]){g[0], g[1], g[2], g[3]}, -1, 1);
    tg_tensor *W = transpose ? input(4, (int[]){g[1], g[4], g[5], g[6]}, -1, 1)
                             : input(4, (int[]){g[4], g[1], g[5], g[6]}, -1, 1);
    tg_tensor *b = g[15] ? input(1, &g[4], -1, 1) : NULL;
    for (int i = 0; i < 17; i++)
        iparam(g[i]);
    tg_conv2d_args a = {.stride = {g[7], g[8]},
                        .padding = {g[9], g[10]},
                        .dilation = {g[11], g[12]},
                        .output_padding = {g[13], g[14]},
                        .relu = g[16]};
    output(transpose ? tg_conv_transpose2d_ex(C.tp, x, W, b, &a)
                     : tg_conv2d_ex(C.tp, x, W, b, &a));
    end();
}

static void conv_cases(void)
{
    /* the last column: relu fused (args.relu), on the generic, direct
     * (one-channel image side) and implicit (16-channel) paths */
    static const int cv[][17] = {
        {2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0},
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0},
        {2, 2, 7, 6, 3, 3, 2, 2, 3, 1, 0, 2, 1, 0, 0, 0, 0},
        {1, 3, 4, 4, 2, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0},
        {2, 4, 9, 9, 5, 2, 2, 3, 3, 0, 1, 1, 2, 0, 0, 1, 0},
        {1, 2, 3, 3, 2, 3, 3, 1, 1, 2, 2, 1, 1, 0, 0, 1, 0},
        {2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1},
        {2, 1, 8, 8, 16, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1},
        {2, 16, 6, 6, 16, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1},
    };
    for (int i = 0; i < 9; i++)
        conv_case(false, cv[i]);
    static const int ct[][17] = {
        {2, 3, 4, 4, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0},
        {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 0},
        {1, 2, 3, 5, 3, 2, 3, 3, 2, 0, 1, 1, 2, 2, 1, 0, 0},
        {2, 4, 7, 7, 3, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1, 0},
        {2, 3, 4, 4, 2, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1},
        {2, 16, 4, 4, 1, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1},
        {2, 16, 3, 3, 16, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0, 1, 1},
    };
    for (int i = 0; i < 7; i++)
        conv_case(true, ct[i]);
    /* pools: N C H W k s p, and whether the input has ties (small
     * integers) */
    static const int pl[][8] = {
        {2, 3, 7, 7, 3, 2, 1, 0}, {1, 2, 5, 8, 2, 0, 1, 0},
        {1, 2, 6, 6, 3, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 0, 0},
        {2, 2, 4, 5, 2, 3, 0, 1}, {1, 1, 5, 5, 5, 1, 2, 1},
    };
    for (int i = 0; i < 6; i++)
        for (int avg = 0; avg < 2; avg++) {
            const int *d = pl[i];
            begin(avg ? "avg_pool2d" : "max_pool2d",
                  "x %dx%dx%dx%d k %d s %d p %d%s", d[0], d[1], d[2], d[3],
                  d[4], d[5], d[6], d[7] ? ", ties" : "");
            tg_tensor *x = input(4, d, -1, 1);
            if (d[7])
                for (size_t k = 0; k < x->size; k++)
                    x->data[k] = (float)irand(3) - 1.0f;
            for (int k = 4; k < 7; k++)
                iparam(d[k]);
            output(avg ? tg_avg_pool2d(C.tp, x, d[4], d[5], d[6])
                       : tg_max_pool2d(C.tp, x, d[4], d[5], d[6]));
            end();
        }
    static const int up[][5] = {
        {2, 3, 4, 5, 1}, {2, 3, 4, 5, 2}, {1, 2, 3, 2, 3}, {1, 1, 1, 1, 4}};
    for (int i = 0; i < 4; i++) {
        begin("upsample2d", "x %dx%dx%dx%d scale %d", up[i][0], up[i][1],
              up[i][2], up[i][3], up[i][4]);
        tg_tensor *x = input(4, up[i], -1, 1);
        iparam(up[i][4]);
        output(tg_upsample2d(C.tp, x, up[i][4]));
        end();
    }
}

/* ---- nn layers ------------------------------------------------------------
 */

/* GRU / LSTM unrolled over T steps: inputs x_1..x_T, [h0, [c0]], w_ih, w_hh,
 * b_ih, b_hh; outputs every h_t (and the last cell). iparams: B, in, H, T,
 * has_h0. */
static void rnn_case(bool lstm, int B, int in, int H, int T, bool h0)
{
    begin(lstm ? "lstm" : "gru", "B %d in %d H %d T %d h0 %d", B, in, H, T, h0);
    int G = lstm ? 4 : 3;
    tg_tensor *xs[8];
    for (int t = 0; t < T; t++)
        xs[t] = input2(B, in, -1.5f, 1.5f);
    tg_tensor *h = h0 ? input2(B, H, -1, 1) : NULL;
    tg_tensor *c = h0 && lstm ? input2(B, H, -1, 1) : NULL;
    float a = 1.0f / sqrtf((float)H);
    tg_tensor *w_ih = input2(G * H, in, -a, a), *w_hh = input2(G * H, H, -a, a);
    tg_tensor *b_ih = input(1, (int[]){G * H}, -a, a);
    tg_tensor *b_hh = input(1, (int[]){G * H}, -a, a);
    iparam(B);
    iparam(in);
    iparam(H);
    iparam(T);
    iparam(h0);
    if (lstm) {
        tg_lstm_cell cell = {w_ih, w_hh, b_ih, b_hh, in, H};
        for (int t = 0; t < T; t++) {
            tg_lstm_cell_apply(C.tp, &cell, xs[t], h, c, &h, &c);
            output(h);
        }
        output(c);
    } else {
        tg_gru_cell cell = {w_ih, w_hh, b_ih, b_hh, in, H};
        for (int t = 0; t < T; t++) {
            h = tg_gru_cell_apply(C.tp, &cell, xs[t], h);
            output(h);
        }
    }
    end();
}

/* Bayes dense: inputs x, W_mu, W_rho, b_mu, b_rho, eps (constant);
 * outputs y (apply_eps), mean, sd (moments), kl. fparam prior_scale. */
static void bayes_case(int B, int in, int out, float prior, float rho_lo,
                       float rho_hi, bool edge)
{
    begin("bayes_dense", "B %d in %d out %d prior %g rho [%g, %g]%s", B, in,
          out, (double)prior, (double)rho_lo, (double)rho_hi,
          edge ? " edge rho" : "");
    tg_tensor *x = input2(B, in, -1, 1);
    float a = 1.0f / sqrtf((float)in);
    tg_tensor *W_mu = input2(out, in, -a, a);
    tg_tensor *W_rho = input2(out, in, rho_lo, rho_hi);
    tg_tensor *b_mu = input(1, &out, -a, a);
    tg_tensor *b_rho = input(1, &out, rho_lo, rho_hi);
    if (edge) {
        float r[] = {-100, -90, -20, 0, 20, 40};
        place(W_rho, r, 6);
    }
    tg_tensor *eps = input_g(2, (int[]){B, out}, 0, 0, false);
    tg_rng_fill_normal(&RNG, eps->data, eps->size, 0.0f, 1.0f);
    fparam(prior);
    tg_bayes_dense l = {W_mu, W_rho, b_mu, b_rho, in, out, prior};
    output(tg_bayes_dense_apply_eps(C.tp, &l, x, eps));
    tg_tensor *mean, *sd;
    tg_bayes_dense_moments(C.tp, &l, x, &mean, &sd);
    output(mean);
    output(sd);
    output(tg_bayes_dense_kl(C.tp, &l));
    end();
}

static void nn_cases(void)
{
    rnn_case(false, 2, 3, 4, 3, false);
    rnn_case(false, 3, 5, 2, 2, true);
    rnn_case(false, 1, 1, 1, 1, true);
    rnn_case(true, 2, 3, 4, 3, false);
    rnn_case(true, 3, 5, 2, 2, true);
    rnn_case(true, 1, 1, 1, 1, true);
    bayes_case(4, 3, 5, 1.0f, -5, -2, false);
    bayes_case(2, 6, 3, 0.1f, -1, 2, false);
    bayes_case(3, 8, 4, 1.0f, -4, -3, true);
    bayes_case(5, 7, 3, 1.0f, -9, -7, false); /* bnn_mnist's Fashion start */

    /* reparameterize: inputs mean, logvar, eps (constant, eps_out) */
    begin("reparameterize", "3x4");
    tg_tensor *m = input2(3, 4, -2, 2), *v = input2(3, 4, -4, 4);
    float sv[] = {-30, 30, 0};
    place(v, sv, 3);
    tg_rng r;
    tg_rng_seed(&r, 11, 0);
    tg_tensor *eps;
    tg_tensor *z = tg_reparameterize(C.tp, m, v, &r, &eps);
    tg_tensor *e = input_g(2, (int[]){3, 4}, 0, 0, false);
    memcpy(e->data, eps->data, e->size * sizeof(float));
    output(z);
    end();

    /* the nn losses (means over rows of the per-row ops) */
    begin("loss_mse", "5x3");
    tg_tensor *pred = input2(5, 3, -2, 2);
    output(tg_loss_mse(C.tp, pred, input2(5, 3, -2, 2)));
    end();
    begin("loss_bce_with_logits", "5x3");
    tg_tensor *logits = input2(5, 3, -4, 4);
    output(tg_loss_bce_with_logits(C.tp, logits, input2(5, 3, 0, 1)));
    end();
    begin("loss_softmax_xent", "5x3");
    tg_tensor *lx = input2(5, 3, -3, 3);
    int labels[5];
    for (int i = 0; i < 5; i++) {
        labels[i] = irand(3);
        iparam(labels[i]);
    }
    output(tg_loss_softmax_xent(C.tp, lx, labels));
    end();
    begin("loss_nll", "5x3");
    tg_tensor *lp = tg_log_softmax(C.tp, input2(5, 3, -3, 3));
    for (int i = 0; i < 5; i++) {
        labels[i] = irand(3);
        iparam(labels[i]);
    }
    output(tg_loss_nll(C.tp, lp, labels));
    end();

    /* layer norm, group norm and embedding layers (their ops, through the
     * layer) */
    begin("layer_norm", "layer 3x6");
    tg_tensor *x = input2(3, 6, -2, 2);
    tg_layer_norm_layer ln = {NULL, NULL, 6, 1e-5f};
    ln.weight = input(1, (int[]){6}, 0.5f, 1.5f);
    ln.bias = input(1, (int[]){6}, -1, 1);
    iparam(1);
    iparam(1);
    fparam(1e-5f);
    output(tg_layer_norm_apply(C.tp, &ln, x));
    end();
    begin("group_norm", "layer 2x6x3x3 groups 3");
    tg_tensor *xg = input(4, (int[]){2, 6, 3, 3}, -2, 2);
    tg_group_norm_layer gn = {NULL, NULL, 3, 6, 1e-5f};
    gn.weight = input(1, (int[]){6}, 0.5f, 1.5f);
    gn.bias = input(1, (int[]){6}, -1, 1);
    iparam(3);
    iparam(1);
    iparam(1);
    fparam(1e-5f);
    output(tg_group_norm_apply(C.tp, &gn, xg));
    end();
    begin("gather_rows", "embedding layer 7x3");
    tg_embedding_layer emb = {input2(7, 3, -1, 1), 7, 3};
    int idx[6] = {6, 0, 3, 3, 1, 6};
    for (int i = 0; i < 6; i++)
        iparam(idx[i]);
    output(tg_embedding_apply(C.tp, &emb, idx, 6));
    end();

    /* dropout: the mask is read back from the output (x has no zeros) */
    begin("dropout", "p 0.3 train");
    x = input2(6, 7, 0.5f, 1.5f);
    tg_rng_seed(&r, 12, 0);
    fparam(0.3);
    output(tg_dropout(C.tp, x, 0.3f, &r, TG_DROPOUT_TRAIN));
    end();

    /* conv layers and flatten / unflatten */
    begin("conv2d", "layer, flatten");
    x = input(4, (int[]){2, 2, 5, 5}, -1, 1);
    tg_conv2d_layer cl = {
        NULL,
        NULL,
        2,
        3,
        {.stride = {2, 2}, .padding = {1, 1}, .dilation = {1, 1}}};
    cl.W = input(4, (int[]){3, 2, 3, 3}, -1, 1);
    cl.b = input(1, (int[]){3}, -1, 1);
    int cg[16] = {2, 2, 5, 5, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 1};
    for (int i = 0; i < 16; i++)
        iparam(cg[i]);
    tg_tensor *y = tg_conv2d_apply(C.tp, &cl, x);
    output(tg_unflatten(C.tp, tg_flatten(C.tp, y), y->shape[1], y->shape[2],
                        y->shape[3]));
    end();
    begin("conv_transpose2d", "layer");
    x = input(4, (int[]){2, 2, 3, 3}, -1, 1);
    tg_conv_transpose2d_layer tl = {NULL,
                                    NULL,
                                    2,
                                    3,
                                    {.stride = {2, 2},
                                     .padding = {1, 1},
                                     .dilation = {1, 1},
                                     .output_padding = {1, 1}}};
    tl.W = input(4, (int[]){2, 3, 3, 3}, -1, 1);
    tl.b = input(1, (int[]){3}, -1, 1);
    int tgm[16] = {2, 2, 3, 3, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < 16; i++)
        iparam(tgm[i]);
    output(tg_conv_transpose2d_apply(C.tp, &tl, x));
    end();
}

/* ---- optimizers and clipping ----------------------------------------------
 * Not ops, but values of the public API: K steps of an optimizer on one
 * parameter with given gradients, against torch.optim; the global norm clip
 * against torch.nn.utils.clip_grad_norm_. Inputs: p0 then the K gradients
 * (constants); output: p after K steps (a copy, no gradient). fparams:
 * kind, lr, momentum, weight decay, nesterov. */
static void optim_case(tg_optim_kind kind, float lr, float momentum, float wd,
                       bool nesterov)
{
    enum { K = 6, N = 7 };
    begin("optim", "kind %d lr %g momentum %g wd %g nesterov %d", (int)kind,
          (double)lr, (double)momentum, (double)wd, nesterov);
    tg_tensor *p0 = input_g(1, (int[]){N}, -1, 1, false);
    tg_tensor *gs[K];
    for (int k = 0; k < K; k++) {
        gs[k] = input_g(1, (int[]){N}, -1, 1, false);
        gs[k]->data[k % N] *= 1e-3f; /* small gradients too */
    }
    tg_params *ps = tg_params_new();
    tg_tensor *w = tg_params_add(ps, "w", 1, (int[]){N});
    memcpy(w->data, p0->data, sizeof(float) * N);
    tg_optim *opt = kind == TG_OPTIM_SGD     ? tg_sgd_new(ps, lr, momentum)
                    : kind == TG_OPTIM_ADAM  ? tg_adam_new(ps, lr)
                    : kind == TG_OPTIM_ADAMW ? tg_adamw_new(ps, lr, wd)
                                             : tg_rmsprop_new(ps, lr, momentum);
    if (kind != TG_OPTIM_ADAMW)
        opt->weight_decay = wd;
    opt->nesterov = nesterov;
    for (int k = 0; k < K; k++) {
        memcpy(tg_params_grad(ps), gs[k]->data, sizeof(float) * N);
        tg_optim_step(opt);
    }
    tg_tensor *fin = tg_tensor_new(1, (int[]){N});
    memcpy(fin->data, w->data, sizeof(float) * N);
    fparam(kind);
    fparam(lr);
    fparam(momentum);
    fparam(wd);
    fparam(nesterov);
    output(fin);
    end();
    tg_tensor_free(fin);
    tg_optim_free(opt);
    tg_params_free(ps);
}

/* clip: inputs two gradient tensors; outputs them clipped and the norm. */
static void clip_case(float max_norm, float scale)
{
    begin("clip_grad_norm", "max_norm %g scale %g", (double)max_norm,
          (double)scale);
    tg_tensor *g0 = input_g(2, (int[]){3, 4}, -scale, scale, false);
    tg_tensor *g1 = input_g(1, (int[]){5}, -scale, scale, false);
    tg_params *ps = tg_params_new();
    tg_tensor *a = tg_params_add(ps, "a", 2, (int[]){3, 4});
    tg_tensor *b = tg_params_add(ps, "b", 1, (int[]){5});
    memcpy(a->grad, g0->data, sizeof(float) * 12);
    memcpy(b->grad, g1->data, sizeof(float) * 5);
    float norm = tg_clip_grad_norm(ps, max_norm);
    tg_tensor *outs[3] = {tg_tensor_new(2, (int[]){3, 4}),
                          tg_tensor_new(1, (int[]){5}),
                          tg_tensor_new(1, (int[]){1})};
    memcpy(outs[0]->data, a->grad, sizeof(float) * 12);
    memcpy(outs[1]->data, b->grad, sizeof(float) * 5);
    outs[2]->data[0] = norm;
    fparam(max_norm);
    for (int i = 0; i < 3; i++)
        output(outs[i]);
    end();
    for (int i = 0; i < 3; i++)
        tg_tensor_free(outs[i]);
    tg_params_free(ps);
}

static void optim_cases(void)
{
    optim_case(TG_OPTIM_SGD, 0.1f, 0, 0, false);
    optim_case(TG_OPTIM_SGD, 0.1f, 0.9f, 0, false);
    optim_case(TG_OPTIM_SGD, 0.05f, 0.9f, 0.01f, true);
    optim_case(TG_OPTIM_ADAM, 1e-3f, 0, 0, false);
    optim_case(TG_OPTIM_ADAM, 0.1f, 0, 0.01f, false);
    optim_case(TG_OPTIM_ADAMW, 1e-2f, 0, 0.1f, false);
    optim_case(TG_OPTIM_RMSPROP, 1e-2f, 0, 0, false);
    optim_case(TG_OPTIM_RMSPROP, 1e-2f, 0.9f, 0.01f, false);
    clip_case(1.0f, 1.0f);
    clip_case(100.0f, 1.0f);
    clip_case(0.5f, 1e-3f);
}

int main(int argc, char **argv)
{
    if (argc == 2 && bench_is_help(argv[1])) {
        puts("usage: op_check_dump FILE\nWrites cases of every op and nn "
             "layer for bench/op_check_torch.py.");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-')
        bench_usage_error("op_check_dump", "needs one output FILE");
    F = fopen(argv[1], "wb");
    if (!F) {
        perror(argv[1]);
        return 1;
    }
    tg_rng_seed(&RNG, 2026, 12);
    fwrite("TGOPCHK1", 1, 8, F);
    unary_cases();
    param_cases();
    binary_cases();
    row_ops();
    product_cases();
    movement_cases();
    loss_cases();
    layer_norm_cases();
    group_norm_cases();
    conv_cases();
    nn_cases();
    optim_cases();
    batched_matmul_cases();
    conv1d_cases();
    permute_cases();
    put_u32(0);
    if (fclose(F) != 0) {
        perror(argv[1]);
        return 1;
    }
    printf("wrote %d cases to %s\n", n_cases, argv[1]);
    return 0;
}

/* Convolutional layers (PyTorch's Conv2d, ConvTranspose2d, Conv1d and
 * ConvTranspose1d: parameter
 * names, weight layouts and default init) and the reshapes between image
 * batches [B, C, H, W] and rows [B, C*H*W]. The layers own nothing
 * themselves: W and b live in the parameter set. */
#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "layer_init.h"
#include "tg_nn.h"

/* Fills W and b as tg_init says, with PyTorch's fans for a conv weight
 * [a, b, kh, kw]: fan_in = b*kh*kw, fan_out = a*kh*kw (for a transposed
 * conv, whose weight is [in, out, kh, kw], torch takes fan_in from `out`,
 * and so do we, so that TG_INIT_TORCH draws from torch's bounds). */
static void init_conv(const char *op, const char *name, tg_tensor *W,
                      tg_tensor *b, tg_init init, tg_rng *rng)
{
    int rf = 1; /* the kernel's size: kh*kw, or k for a 1-D layer */
    for (int d = 2; d < W->ndim; d++)
        rf *= W->shape[d];
    float fan_in = (float)(W->shape[1] * rf),
          fan_out = (float)(W->shape[0] * rf);
    switch (init) {
    case TG_INIT_GLOROT: {
        float a = sqrtf(6.0f / (fan_in + fan_out));
        tg_rng_fill_uniform(rng, W->data, W->size, -a, a);
        break; /* b stays zero */
    }
    case TG_INIT_HE:
        tg_rng_fill_normal(rng, W->data, W->size, 0.0f, sqrtf(2.0f / fan_in));
        break;
    case TG_INIT_TORCH: {
        /* kaiming_uniform(a = sqrt(5)): bound 1/sqrt(fan_in), and the bias
         * the same bound */
        float a = 1.0f / sqrtf(fan_in);
        tg_rng_fill_uniform(rng, W->data, W->size, -a, a);
        if (b)
            tg_rng_fill_uniform(rng, b->data, b->size, -a, a);
        break;
    }
    default:
        tg_fatal(op, "%s: unknown init %d", name, (int)init);
    }
}

/* W (4-D, or 3-D with wdims 3), and b unless nb is 0 (no bias: *b NULL). */
static void add_params_n(tg_params *ps, const char *name, int wdims,
                         const int *wshape, int nb, tg_tensor **W,
                         tg_tensor **b)
{
    char key[256];
    snprintf(key, sizeof key, "%s.weight", name);
    *W = tg_params_add(ps, key, wdims, wshape);
    *b = NULL;
    if (nb == 0)
        return;
    snprintf(key, sizeof key, "%s.bias", name);
    *b = tg_params_add(ps, key, 1, &nb);
}

static void add_params(tg_params *ps, const char *name, const int *wshape,
                       int nb, tg_tensor **W, tg_tensor **b)
{
    add_params_n(ps, name, 4, wshape, nb, W, b);
}

/* The _ex inits' sizes and args, checked as the ops will check them (stride
 * and dilation 0 mean 1), so that a bad layer fails where it is made. */
static tg_conv2d_args checked_args(const char *op, const char *name, int in,
                                   int out, int kh, int kw,
                                   const tg_conv2d_args *args, bool transpose)
{
    tg_conv2d_args a = args ? *args : (tg_conv2d_args){0};
    const char *why = in <= 0 || out <= 0 || kh <= 0 || kw <= 0
                          ? "in, out and the kernel's sides must be >= 1"
                          : NULL;
    for (int d = 0; d < 2; d++) {
        if (!why && (a.stride[d] < 0 || a.dilation[d] < 0))
            why = "stride and dilation must be >= 1 (0 means 1)";
        if (!why && (a.padding[d] < 0 || a.output_padding[d] < 0))
            why = "paddings must be >= 0";
        a.stride[d] = a.stride[d] == 0 ? 1 : a.stride[d];
        a.dilation[d] = a.dilation[d] == 0 ? 1 : a.dilation[d];
        if (!why && transpose && a.output_padding[d] >= a.stride[d] &&
            a.output_padding[d] >= a.dilation[d])
            why = "output padding must be < stride or dilation";
        if (!why && !transpose && a.output_padding[d] != 0)
            why = "output padding is for conv_transpose2d";
    }
    if (why)
        tg_fatal(op,
                 "%s: bad size in=%d out=%d kernel %dx%d, stride (%d, %d), "
                 "padding (%d, %d), dilation (%d, %d), output padding "
                 "(%d, %d) (%s)",
                 name, in, out, kh, kw, a.stride[0], a.stride[1], a.padding[0],
                 a.padding[1], a.dilation[0], a.dilation[1],
                 a.output_padding[0], a.output_padding[1], why);
    return a;
}

static tg_conv2d_args square_args(int stride, int padding, int output_padding,
                                  int dilation)
{
    return (tg_conv2d_args){.stride = {stride, stride},
                            .padding = {padding, padding},
                            .dilation = {dilation, dilation},
                            .output_padding = {output_padding, output_padding}};
}

void tg_conv2d_layer_init(tg_conv2d_layer *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          tg_init init, tg_rng *rng)
{
    layer_init_check("conv2d_layer_init", l, ps, name, true, rng);
    if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0)
        tg_fatal("conv2d_layer_init",
                 "%s: bad size in=%d out=%d kernel=%d stride=%d padding=%d",
                 name, in, out, kernel, stride, padding);
    add_params(ps, name, (int[]){out, in, kernel, kernel}, out, &l->W, &l->b);
    l->in = in;
    l->out = out;
    l->args = square_args(stride, padding, 0, 1);
    init_conv("conv2d_layer_init", name, l->W, l->b, init, rng);
}

void tg_conv2d_layer_init_ex(tg_conv2d_layer *l, tg_params *ps,
                             const char *name, int in, int out, int kh, int kw,
                             const tg_conv2d_args *args, bool bias,
                             tg_init init, tg_rng *rng)
{
    const char *op = "conv2d_layer_init_ex";
    layer_init_check(op, l, ps, name, true, rng);
    tg_conv2d_args a = checked_args(op, name, in, out, kh, kw, args, false);
    add_params(ps, name, (int[]){out, in, kh, kw}, bias ? out : 0, &l->W,
               &l->b);
    l->in = in;
    l->out = out;
    l->args = a;
    init_conv(op, name, l->W, l->b, init, rng);
}

tg_tensor *tg_conv2d_apply(tg_tape *tp, const tg_conv2d_layer *l, tg_tensor *x)
{
    if (!l)
        tg_fatal("conv2d_apply", "NULL layer");
    return tg_conv2d_ex(tp, x, l->W, l->b, &l->args);
}

void tg_conv_transpose2d_layer_init(tg_conv_transpose2d_layer *l, tg_params *ps,
                                    const char *name, int in, int out,
                                    int kernel, int stride, int padding,
                                    int output_padding, tg_init init,
                                    tg_rng *rng)
{
    layer_init_check("conv_transpose2d_layer_init", l, ps, name, true, rng);
    if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0 ||
        output_padding < 0 || output_padding >= stride)
        tg_fatal("conv_transpose2d_layer_init",
                 "%s: bad size in=%d out=%d kernel=%d stride=%d padding=%d "
                 "output_padding=%d (must be < stride)",
                 name, in, out, kernel, stride, padding, output_padding);
    add_params(ps, name, (int[]){in, out, kernel, kernel}, out, &l->W, &l->b);
    l->in = in;
    l->out = out;
    l->args = square_args(stride, padding, output_padding, 1);
    init_conv("conv_transpose2d_layer_init", name, l->W, l->b, init, rng);
}

void tg_conv_transpose2d_layer_init_ex(tg_conv_transpose2d_layer *l,
                                       tg_params *ps, const char *name, int in,
                                       int out, int kh, int kw,
                                       const tg_conv2d_args *args, bool bias,
                                       tg_init init, tg_rng *rng)
{
    const char *op = "conv_transpose2d_layer_init_ex";
    layer_init_check(op, l, ps, name, true, rng);
    tg_conv2d_args a = checked_args(op, name, in, out, kh, kw, args, true);
    add_params(ps, name, (int[]){in, out, kh, kw}, bias ? out : 0, &l->W,
               &l->b);
    l->in = in;
    l->out = out;
    l->args = a;
    init_conv(op, name, l->W, l->b, init, rng);
}

tg_tensor *tg_conv_transpose2d_apply(tg_tape *tp,
                                     const tg_conv_transpose2d_layer *l,
                                     tg_tensor *x)
{
    if (!l)
        tg_fatal("conv_transpose2d_apply", "NULL layer");
    return tg_conv_transpose2d_ex(tp, x, l->W, l->b, &l->args);
}

/* ---- 1-D layers: weights [out, in, k] / [in, out, k] ------------------ */

void tg_conv1d_layer_init(tg_conv1d_layer *l, tg_params *ps, const char *name,
                          int in, int out, int kernel, int stride, int padding,
                          int dilation, bool bias, tg_init init, tg_rng *rng)
{
    const char *op = "conv1d_layer_init";
    layer_init_check(op, l, ps, name, true, rng);
    if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0 ||
        dilation <= 0)
        tg_fatal(op,
                 "%s: bad size in=%d out=%d kernel=%d stride=%d padding=%d "
                 "dilation=%d",
                 name, in, out, kernel, stride, padding, dilation);
    add_params_n(ps, name, 3, (int[]){out, in, kernel}, bias ? out : 0, &l->W,
                 &l->b);
    l->in = in;
    l->out = out;
    l->stride = stride;
    l->padding = padding;
    l->dilation = dilation;
    init_conv(op, name, l->W, l->b, init, rng);
}

tg_tensor *tg_conv1d_apply(tg_tape *tp, const tg_conv1d_layer *l, tg_tensor *x)
{
    if (!l)
        tg_fatal("conv1d_apply", "NULL layer");
    return tg_conv1d(tp, x, l->W, l->b, l->stride, l->padding, l->dilation);
}

void tg_conv_transpose1d_layer_init(tg_conv_transpose1d_layer *l, tg_params *ps,
                                    const char *name, int in, int out,
                                    int kernel, int stride, int padding,
                                    int output_padding, int dilation, bool bias,
                                    tg_init init, tg_rng *rng)
{
    const char *op = "conv_transpose1d_layer_init";
    layer_init_check(op, l, ps, name, true, rng);
    if (in <= 0 || out <= 0 || kernel <= 0 || stride <= 0 || padding < 0 ||
        dilation <= 0 || output_padding < 0 ||
        (output_padding >= stride && output_padding >= dilation))
        tg_fatal(op,
                 "%s: bad size in=%d out=%d kernel=%d stride=%d padding=%d "
                 "output_padding=%d dilation=%d (output padding must be < "
                 "stride or dilation)",
                 name, in, out, kernel, stride, padding, output_padding,
                 dilation);
    add_params_n(ps, name, 3, (int[]){in, out, kernel}, bias ? out : 0, &l->W,
                 &l->b);
    l->in = in;
    l->out = out;
    l->stride = stride;
    l->padding = padding;
    l->output_padding = output_padding;
    l->dilation = dilation;
    init_conv(op, name, l->W, l->b, init, rng);
}

tg_tensor *tg_conv_transpose1d_apply(tg_tape *tp,
                                     const tg_conv_transpose1d_layer *l,
                                     tg_tensor *x)
{
    if (!l)
        tg_fatal("conv_transpose1d_apply", "NULL layer");
    return tg_conv_transpose1d(tp, x, l->W, l->b, l->stride, l->padding,
                               l->output_padding, l->dilation);
}

tg_tensor *tg_flatten(tg_tape *tp, tg_tensor *x)
{
    if (!x || x->ndim < 2) {
        char s[64];
        tg_fatal("flatten", "needs a batch [B, ...] of at least 2 dims, got %s",
                 x ? tg_shape_str(x, s) : "NULL");
    }
    /* in 64 bits: an int product wrapped, and reshape refused a shape
     * nobody asked for ("[2, 65536, 65536] has 8589934592 elements, [2, 0]
     * has 0") */
    long long cols = 1;
    for (int d = 1; d < x->ndim; d++)
        cols *= x->shape[d];
    if (cols > INT_MAX) {
        char s[64];
        tg_fatal("flatten", "x %s: %lld columns, more than a dim holds (%d)",
                 tg_shape_str(x, s), cols, INT_MAX);
    }
    return tg_reshape(tp, x, 2, (int[]){x->shape[0], (int)cols});
}

tg_tensor *tg_unflatten(tg_tape *tp, tg_tensor *x, int C, int H, int W)
{
    char s[64];
    if (!x || x->ndim != 2 || C < 1 || H < 1 || W < 1 ||
        (long)x->shape[1] != (long)C * H * W)
        tg_fatal("unflatten", "x %s is not [B, %d * %d * %d]",
                 x ? tg_shape_str(x, s) : "NULL", C, H, W);
    return tg_reshape(tp, x, 4, (int[]){x->shape[0], C, H, W});
}

/* The 1-D convolutions, conv1d and conv_transpose1d (x [N, C, L], W [*, *,
 * k]): the 2-D ops of ops_conv.c on views, with their own argument checks. */
#include "conv_internal.h"

#include <limits.h>

/* ---- 1-D: conv2d and conv_transpose2d on the views [N, C, 1, L] ----------
 * Checked here first, so that a bad call names the 1-D op and the shapes
 * it was given; the 2-D op then cannot fail. */

static tg_conv2d_args args_1d(tg_tape *tp, const char *op, tg_tensor *x,
                              tg_tensor *W, tg_tensor *b, bool transpose,
                              int stride, int padding, int output_padding,
                              int dilation)
{
    char sx[64], sw[64], sb[64];
    check_inputs(op, x, W);
    bool empty =
        W->ndim == 3 && (W->shape[0] < 1 || W->shape[1] < 1 || W->shape[2] < 1);
    if (x->ndim != 3 || W->ndim != 3 || empty || x->shape[1] < 1 ||
        x->shape[2] < 1)
        tg_fatal(op,
                 "needs x [N, C, L] and a 3-D weight with no 0 dims (but N), "
                 "got x %s, W %s",
                 tg_shape_str(x, sx), tg_shape_str(W, sw));
    int C = transpose ? W->shape[0] : W->shape[1];
    int OC = transpose ? W->shape[1] : W->shape[0];
    if (x->shape[1] != C)
        tg_fatal(op, "x %s has %d channels, W %s takes %d (W is %s)",
                 tg_shape_str(x, sx), x->shape[1], tg_shape_str(W, sw), C,
                 transpose ? "[in, out, k]" : "[out, in, k]");
    if (b && (b->ndim != 1 || b->size != (size_t)OC))
        tg_fatal(op, "bias %s does not fit W %s (bias is [%d])",
                 tg_shape_str(b, sb), tg_shape_str(W, sw), OC);
    int s = conv_arg_or_1(stride), d = conv_arg_or_1(dilation);
    if (s < 1 || d < 1 || padding < 0 || output_padding < 0)
        tg_fatal(op,
                 "stride %d, dilation %d, padding %d, output padding %d: "
                 "stride and dilation must be >= 1 (0 means 1), paddings >= 0",
                 stride, dilation, padding, output_padding);
    if (transpose && output_padding >= s && output_padding >= d)
        tg_fatal(op,
                 "output padding %d must be smaller than the stride %d or the "
                 "dilation %d",
                 output_padding, s, d);
    int k = W->shape[2], L = x->shape[2];
    int len = transpose ? convt_len(L, k, s, padding, d, output_padding)
                        : conv_len(L, k, s, padding, d);
    if (len < 1)
        tg_fatal(op,
                 "x %s with W %s, stride %d, padding %d, dilation %d gives an "
                 "output of length %d",
                 tg_shape_str(x, sx), tg_shape_str(W, sw), s, padding, d, len);
    long long N = x->shape[0];
    if (len == INT_MAX || N * len > INT_MAX || N * L > INT_MAX)
        tg_fatal(op,
                 "x %s with W %s, stride %d, padding %d, dilation %d: too "
                 "many positions (over %d in all)",
                 tg_shape_str(x, sx), tg_shape_str(W, sw), s, padding, d,
                 INT_MAX);
    tg_tensor *in[] = {x, W, b};
    check_recorded_inputs(tp, op, b ? 3 : 2, in);
    return (tg_conv2d_args){.stride = {1, s},
                            .dilation = {1, d},
                            .padding = {0, padding},
                            .output_padding = {0, output_padding}};
}

/* [a, b, c] as [a, b, 1, c] */
static tg_tensor *rows_view(tg_tape *tp, tg_tensor *t)
{
    return tg_reshape(tp, t, 4,
                      (int[]){t->shape[0], t->shape[1], 1, t->shape[2]});
}

static tg_tensor *drop_rows(tg_tape *tp, tg_tensor *y)
{
    return tg_reshape(tp, y, 3, (int[]){y->shape[0], y->shape[1], y->shape[3]});
}

tg_tensor *tg_conv1d(tg_tape *tp, tg_tensor *x, tg_tensor *W, tg_tensor *b,
                     int stride, int padding, int dilation)
{
    tg_conv2d_args a =
        args_1d(tp, "conv1d", x, W, b, false, stride, padding, 0, dilation);
    return drop_rows(
        tp, tg_conv2d_ex(tp, rows_view(tp, x), rows_view(tp, W), b, &a));
}

tg_tensor *tg_conv_transpose1d(tg_tape *tp, tg_tensor *x, tg_tensor *W,
                               tg_tensor *b, int stride, int padding,
                               int output_padding, int dilation)
{
    tg_conv2d_args a = args_1d(tp, "conv_transpose1d", x, W, b, true, stride,
                               padding, output_padding, dilation);
    return drop_rows(tp, tg_conv_transpose2d_ex(tp, rows_view(tp, x),
                                                rows_view(tp, W), b, &a));
}

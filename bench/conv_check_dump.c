/* bench/conv_check_dump: writes conv2d, conv_transpose2d, max_pool2d and
 * avg_pool2d cases (inputs, a seed gradient, our outputs and gradients) to
 * a file that bench/conv_check_torch.py compares with PyTorch's
 * torch.nn.functional. A one-off cross-check, not part of CI.
 * usage: conv_check_dump FILE [RANDOM [SEED]]: the fixed cases, then RANDOM
 * random geometries (sizes, kernels, strides, padding, dilation, output
 * padding; batch 1-6) drawn from SEED. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cli.h"
#include "tapegrad.h"

enum { CONV, CONVT, MAXPOOL, AVGPOOL };

/* op, N, C, H, W, OC, kh, kw, sh, sw, ph, pw, dh, dw, oph, opw
 * (pools: kernel kh, stride sh, padding ph) */
static const int cases[][16] = {
    {CONV, 2, 3, 9, 8, 4, 2, 2, 3, 3, 0, 0, 1, 1, 0, 0},
    {CONV, 2, 3, 7, 5, 5, 3, 3, 1, 1, 2, 1, 1, 1, 0, 0},
    {CONV, 3, 9, 5, 6, 11, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0},
    {CONV, 1, 2, 6, 7, 3, 2, 3, 1, 2, 1, 0, 1, 1, 0, 0},
    {CONV, 2, 2, 9, 8, 3, 3, 2, 1, 1, 1, 1, 2, 3, 0, 0},
    {CONV, 4, 32, 14, 14, 64, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0},
    {CONVT, 2, 2, 4, 3, 3, 3, 2, 3, 2, 1, 0, 1, 1, 2, 1},
    {CONVT, 1, 2, 4, 4, 2, 2, 2, 1, 1, 0, 0, 3, 2, 2, 1},
    {CONVT, 4, 64, 7, 7, 32, 4, 4, 2, 2, 1, 1, 1, 1, 0, 0},
    {CONVT, 2, 17, 3, 4, 5, 3, 3, 2, 1, 1, 0, 1, 2, 1, 0},
    {MAXPOOL, 2, 3, 7, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0},
    {MAXPOOL, 2, 2, 5, 8, 2, 2, 2, 3, 3, 1, 1, 1, 1, 0, 0},
    {AVGPOOL, 2, 3, 7, 7, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0},
    {AVGPOOL, 1, 4, 6, 5, 4, 2, 2, 2, 2, 0, 0, 1, 1, 0, 0},
};

/* Output size along one axis, as the ops compute it (< 1: no output). */
static long out_size(int op, int in, int k, int s, int p, int d, int op_pad)
{
    if (op == CONVT)
        return (long)(in - 1) * s - 2L * p + (long)d * (k - 1) + op_pad + 1;
    long span = (long)in + 2L * p - (long)d * (k - 1) - 1;
    return span < 0 ? 0 : span / s + 1;
}

static int pick(tg_rng *r, int lo, int hi)
{
    return lo + (int)(tg_rng_u64(r) % (uint64_t)(hi - lo + 1));
}

/* A random case that every op accepts: pools take padding <= kernel / 2
 * and no dilation, conv_transpose2d an output padding below its stride or
 * its dilation, and every output is at least 1 x 1. */
static void random_case(tg_rng *r, int c[16])
{
    for (;;) {
        int op = pick(r, 0, 3);
        int k = pick(r, 1, 5), k2 = op >= MAXPOOL ? k : pick(r, 1, 5);
        int s = pick(r, 1, 4), s2 = op >= MAXPOOL ? s : pick(r, 1, 4);
        int d = op >= MAXPOOL ? 1 : pick(r, 1, 3);
        int d2 = op >= MAXPOOL ? 1 : pick(r, 1, 3);
        int p = op >= MAXPOOL ? pick(r, 0, k / 2) : pick(r, 0, k + 1);
        int p2 = op >= MAXPOOL ? p : pick(r, 0, k2 + 1);
        int o = 0, o2 = 0;
        if (op == CONVT) {
            o = pick(r, 0, (s > d ? s : d) - 1);
            o2 = pick(r, 0, (s2 > d2 ? s2 : d2) - 1);
        }
        int H = pick(r, 1, 13), W = pick(r, 1, 13), C = pick(r, 1, 9);
        int OC = op >= MAXPOOL ? C : pick(r, 1, 9);
        int case_[16] = {
            op, pick(r, 1, 6), C, H, W, OC, k, k2, s, s2, p, p2, d, d2, o, o2};
        if (out_size(op, H, k, s, p, d, o) < 1 ||
            out_size(op, W, k2, s2, p2, d2, o2) < 1)
            continue;
        memcpy(c, case_, sizeof case_);
        return;
    }
}

static void put(FILE *f, const float *v, size_t n)
{
    fwrite(v, sizeof *v, n, f);
}

int main(int argc, char **argv)
{
    if (argc == 2 && bench_is_help(argv[1])) {
        puts("usage: conv_check_dump FILE [RANDOM [SEED]]\nWrites conv and "
             "pooling cases for bench/conv_check_torch.py: the fixed ones,\n"
             "then RANDOM random geometries drawn from SEED (default 1).");
        return 0;
    }
    if (argc < 2 || argc > 4 || argv[1][0] == '-')
        bench_usage_error("conv_check_dump", "needs an output FILE");
    char *end = NULL;
    long n_random = argc > 2 ? strtol(argv[2], &end, 10) : 0;
    if (argc > 2 && (*end || n_random < 0 || n_random > 100000))
        bench_usage_error("conv_check_dump", "RANDOM is a count, 0..100000");
    long seed = argc > 3 ? strtol(argv[3], &end, 10) : 1;
    if (argc > 3 && (*end || seed < 0))
        bench_usage_error("conv_check_dump", "SEED is an integer >= 0");
    FILE *f = fopen(argv[1], "wb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    tg_rng rng, geo;
    tg_rng_seed(&rng, 7, 0);
    tg_rng_seed(&geo, (uint64_t)seed, 1);
    int n_fixed = (int)(sizeof cases / sizeof cases[0]);
    int n = n_fixed + (int)n_random;
    fwrite(&n, sizeof n, 1, f);
    for (int k = 0; k < n; k++) {
        int c[16];
        if (k < n_fixed)
            memcpy(c, cases[k], sizeof c);
        else
            random_case(&geo, c);
        int op = c[0];
        tg_tensor *x = tg_tensor_new(4, (int[]){c[1], c[2], c[3], c[4]});
        tg_tensor *W =
            op == CONV    ? tg_tensor_new(4, (int[]){c[5], c[2], c[6], c[7]})
            : op == CONVT ? tg_tensor_new(4, (int[]){c[2], c[5], c[6], c[7]})
                          : NULL;
        tg_tensor *b = W ? tg_tensor_new(1, (int[]){c[5]}) : NULL;
        tg_tensor *all[3] = {x, W, b};
        for (int i = 0; i < 3; i++)
            if (all[i]) {
                tg_rng_fill_uniform(&rng, all[i]->data, all[i]->size, -1, 1);
                tg_tensor_require_grad(all[i]);
            }
        tg_conv2d_args a = {.stride = {c[8], c[9]},
                            .padding = {c[10], c[11]},
                            .dilation = {c[12], c[13]},
                            .output_padding = {op == CONVT ? c[14] : 0,
                                               op == CONVT ? c[15] : 0}};
        tg_tape *tp = tg_tape_new();
        tg_tensor *y = op == CONV    ? tg_conv2d_ex(tp, x, W, b, &a)
                       : op == CONVT ? tg_conv_transpose2d_ex(tp, x, W, b, &a)
                       : op == MAXPOOL
                           ? tg_max_pool2d(tp, x, c[6], c[8], c[10])
                           : tg_avg_pool2d(tp, x, c[6], c[8], c[10]);
        float *dy = malloc(y->size * sizeof *dy);
        tg_rng_fill_uniform(&rng, dy, y->size, -1, 1);
        tg_backward_with(tp, y, dy);
        fwrite(c, sizeof(int), 16, f);
        fwrite(y->shape, sizeof(int), 4, f);
        put(f, x->data, x->size);
        if (W) {
            put(f, W->data, W->size);
            put(f, b->data, b->size);
        }
        put(f, dy, y->size);
        put(f, y->data, y->size);
        put(f, x->grad, x->size);
        if (W) {
            put(f, W->grad, W->size);
            put(f, b->grad, b->size);
        }
        free(dy);
        tg_tape_free(tp);
        for (int i = 0; i < 3; i++)
            tg_tensor_free(all[i]);
    }
    fclose(f);
    printf("wrote %d cases to %s\n", n, argv[1]);
    return 0;
}

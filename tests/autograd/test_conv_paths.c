/* The convolutions' kernel paths agree: the direct kernels, the implicit
 * GEMM and the gathered image side against the im2col path (values and
 * gradients; the same bits for the AVX2 and AVX-512 implicit tiles), the
 * gathered image side against the references on every kernel, and
 * strides and dilations too large for the direct and gathered paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tg_autograd.h"

#define TEST_SEED 20261202
#include "conv_common.h"

/* ---- direct and implicit kernels against the im2col path -----------------
 * With an AVX2 or AVX-512 GEMM kernel, conv2d with one input channel and
 * conv_transpose2d with one output channel take direct kernels (phase
 * planes, no im2col), and column sides of 16k channels the implicit GEMM
 * (patch rows read from the padded image); with the portable kernel, the
 * im2col path. Both must give the same values and gradients (to rounding)
 * on grids larger than one vector block, channel counts off multiples of
 * 4, and the geometries the kernels treat apart. */
typedef struct path_case {
    bool transpose;
    int N, C, H, W, OC, kh, kw; /* conv_transpose2d: C in, OC out */
    tg_conv2d_args a;
} path_case;

static const path_case path_cases[] = {
    /* the VAE's first and last layers, 7 channels */
    {false, 3, 1, 28, 28, 7, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 3, 7, 14, 14, 1, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    /* k3 s2: phases with 4, 2, 2 and 1 taps; output padding */
    {true, 2, 5, 9, 8, 1, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    /* stride 1 (one phase), 9 channels */
    {true, 2, 9, 10, 9, 1, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    {false, 2, 1, 10, 9, 9, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    /* non-square everything, dilation, stride > kernel */
    {false, 2, 1, 17, 13, 6, 3, 5, ARGS(1, 3, 2, 1, 2, 1, 0, 0)},
    {true, 1, 6, 7, 5, 1, 2, 3, ARGS(3, 2, 0, 1, 2, 1, 1, 0)},
    {false, 1, 1, 19, 23, 2, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 0, 0)},
    /* 1x1 */
    {false, 2, 1, 9, 11, 5, 1, 1, ARGS(1, 1, 0, 0, 1, 1, 0, 0)},
    {true, 2, 5, 9, 11, 1, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1)},
    /* implicit GEMM (16k channels on the column side, more than one on
     * the image side): the VAE's 32 -> 64 and 64 -> 32 layers */
    /* (7 and 40 images: more than one block of dW's image blocks) */
    {false, 7, 32, 14, 14, 64, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {false, 40, 3, 5, 5, 16, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 3, 64, 7, 7, 32, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    /* non-square kernel, stride and dilation; 1x1 stride 2 */
    {false, 2, 3, 9, 8, 16, 3, 2, ARGS(2, 1, 1, 0, 1, 2, 0, 0)},
    {false, 1, 5, 7, 6, 32, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 0, 0)},
    /* stride > kernel; padding >= kernel/2 */
    {false, 2, 4, 9, 9, 16, 2, 2, ARGS(3, 3, 0, 0, 1, 1, 0, 0)},
    {false, 2, 6, 5, 7, 16, 3, 3, ARGS(1, 1, 2, 2, 1, 1, 0, 0)},
    /* transposed: output padding, dilation, odd sizes */
    {true, 2, 16, 5, 4, 3, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    {true, 1, 32, 4, 5, 2, 2, 3, ARGS(3, 2, 0, 1, 2, 1, 1, 0)},
    /* 48 channels: the AVX-512 tiles' panel pair and a last odd panel */
    {false, 3, 5, 6, 7, 48, 3, 3, ARGS(1, 1, 1, 1, 1, 1, 0, 0)},
    {true, 2, 48, 4, 5, 3, 3, 3, ARGS(2, 2, 1, 1, 1, 1, 1, 1)},
    /* the image side gathered by phase (16k channels there): conv2d's dx,
     * conv_transpose2d's y; stride 3 with k4 (2, 1, 1 taps per phase),
     * dilation 2 with stride 2 (one phase takes every tap, the other
     * none), stride > kernel, 1x1, 48 channels (an odd panel), output
     * padding, more than one block of images */
    {false, 2, 16, 11, 10, 3, 4, 4, ARGS(3, 3, 2, 1, 1, 1, 0, 0)},
    {true, 2, 3, 5, 6, 16, 4, 4, ARGS(3, 3, 2, 1, 1, 1, 2, 1)},
    {false, 2, 16, 9, 8, 5, 3, 3, ARGS(2, 2, 1, 2, 2, 2, 0, 0)},
    {true, 2, 5, 4, 5, 16, 3, 3, ARGS(2, 2, 1, 2, 2, 2, 1, 1)},
    {false, 1, 32, 9, 8, 2, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 0, 0)},
    {true, 1, 2, 4, 3, 32, 2, 2, ARGS(3, 4, 0, 1, 1, 1, 2, 3)},
    {false, 2, 16, 7, 9, 4, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 0, 0)},
    {true, 2, 4, 4, 5, 16, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1)},
    {false, 2, 48, 8, 8, 3, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 2, 3, 4, 4, 48, 4, 4, ARGS(2, 2, 1, 1, 1, 1, 0, 0)},
    {true, 30, 2, 3, 3, 16, 3, 2, ARGS(2, 1, 1, 0, 1, 2, 1, 0)},
};

/* Forward values, then the gradients of x, W and b for a random seed
 * gradient, concatenated into out (returns the count). */
static size_t run_path(const path_case *c, tg_tensor **in, const float *seed,
                       float *out)
{
    for (int i = 0; i < 3; i++)
        tg_tensor_zero_grad(in[i]);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = c->transpose
                       ? tg_conv_transpose2d_ex(tp, in[0], in[1], in[2], &c->a)
                       : tg_conv2d_ex(tp, in[0], in[1], in[2], &c->a);
    tg_backward_with(tp, y, seed);
    size_t k = 0;
    for (size_t i = 0; i < y->size; i++)
        out[k++] = y->data[i];
    for (int j = 0; j < 3; j++)
        for (size_t i = 0; i < in[j]->size; i++)
            out[k++] = in[j]->grad[i];
    tg_tape_free(tp);
    return k;
}

/* The implicit GEMM's products make the same FMA chains with the AVX2 and
 * the AVX-512 tiles: conv2d's y and dW, conv_transpose2d's dx and dW are
 * the same bits (the other products go through the GEMM, whose K blocks
 * may differ between the families). out as run_path's. */
static void assert_implicit_same_bits(const path_case *c, tg_tensor **in,
                                      size_t ny, const float *a, const float *z)
{
    /* the implicit GEMM: 16k channels on the column side and more than one
     * on the image side; the gathered image side: 16k channels there (and
     * at most 64 stride phases) */
    int col_ch = c->transpose ? c->C : c->OC,
        img_ch = c->transpose ? c->OC : c->C;
    bool implicit = col_ch % 16 == 0 && img_ch > 1,
         gathered = img_ch % 16 == 0 &&
                    (c->a.stride[0] ? c->a.stride[0] : 1) * 1L *
                            (c->a.stride[1] ? c->a.stride[1] : 1) <=
                        64;
    size_t nx = in[0]->size, nw = in[1]->size;
    /* out: y [0, ny), dx [ny, ny + nx), dW [ny + nx, ny + nx + nw) */
    size_t range[3][2] = {{0, ny}, {ny, ny + nx}, {ny + nx, ny + nx + nw}};
    /* conv2d: y, dW implicit, dx gathered; conv_transpose2d: y gathered,
     * dx, dW implicit */
    bool same[3] = {c->transpose ? gathered : implicit,
                    c->transpose ? implicit : gathered, implicit};
    for (int p = 0; p < 3; p++)
        for (size_t e = range[p][0]; same[p] && e < range[p][1]; e++)
            assert_memory_equal(&a[e], &z[e], sizeof a[e]);
}

static void test_kernel_paths_agree(void **state)
{
    (void)state;
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    if (!tg_gemm_set_kernel("avx2")) {
        printf("  no AVX2 here: the direct and implicit kernels do not "
               "run\n");
        return;
    }
    const bool avx512 = tg_gemm_set_kernel("avx512");
    if (!avx512)
        printf("  no AVX-512 here: its implicit tiles are not run\n");
    enum { CAP = 1 << 17 };
    float *a = malloc(CAP * sizeof *a), *b = malloc(CAP * sizeof *b),
          *z = malloc(CAP * sizeof *z), *seed = malloc(CAP * sizeof *seed);
    for (size_t e = 0; e < CAP; e++)
        seed[e] = (float)(uniform() * 2.0 - 1.0);
    double worst = 0.0;
    for (size_t k = 0; k < sizeof path_cases / sizeof path_cases[0]; k++) {
        const path_case *c = &path_cases[k];
        tg_tensor *in[3] = {rand4(c->N, c->C, c->H, c->W),
                            c->transpose ? rand4(c->C, c->OC, c->kh, c->kw)
                                         : rand4(c->OC, c->C, c->kh, c->kw),
                            rand1(c->OC)};
        for (int i = 0; i < 3; i++)
            tg_tensor_require_grad(in[i]);
        assert_true(tg_gemm_set_kernel("avx2"));
        size_t na = run_path(c, in, seed, a);
        assert_true(tg_gemm_set_kernel("portable"));
        size_t nb = run_path(c, in, seed, b);
        assert_true(na == nb && na < CAP);
        size_t nz = 0;
        if (avx512) {
            assert_true(tg_gemm_set_kernel("avx512"));
            nz = run_path(c, in, seed, z);
            assert_true(nz == na);
            size_t ny = na - in[0]->size - in[1]->size - in[2]->size;
            assert_implicit_same_bits(c, in, ny, a, z);
        }
        double diff = 0.0, scale = 1.0;
        for (size_t e = 0; e < na; e++) {
            diff = fmax(diff, fabs((double)a[e] - b[e]));
            if (nz)
                diff = fmax(diff, fabs((double)z[e] - b[e]));
            scale = fmax(scale, fabs((double)b[e]));
        }
        if (diff > 2e-6 * scale) {
            char name[160];
            conv_case cc = {c->N,  c->C,  c->H, c->W, c->OC,
                            c->kh, c->kw, c->a, true};
            describe(&cc, c->transpose ? "conv_transpose2d" : "conv2d", name);
            printf("  direct and im2col differ by %g (scale %g): %s\n", diff,
                   scale, name);
        }
        assert_true(diff <= 2e-6 * scale);
        worst = fmax(worst, diff / scale);
        for (int i = 0; i < 3; i++)
            tg_tensor_free(in[i]);
    }
    printf("  direct/implicit vs im2col: worst difference %.3g of the "
           "largest value\n",
           worst);
    assert_true(tg_gemm_set_kernel(saved));
    free(a);
    free(b);
    free(z);
    free(seed);
}

/* The gathered image side (conv2d's dx, conv_transpose2d's y with 16k
 * image channels) against the reference and the gradient check, on every
 * kernel: the geometries whose phases take unequal taps or none. */
static const conv_case gathered_cases[] = {
    /* k4 s3: phases of 2, 1, 1 taps; padding >= kernel/2 */
    {2, 16, 8, 7, 3, 4, 4, ARGS(3, 3, 2, 2, 1, 1, 2, 1), true},
    /* dilation 2, stride 2: one phase takes every tap, the other none */
    {2, 16, 7, 6, 2, 3, 3, ARGS(2, 2, 1, 1, 2, 2, 1, 1), true},
    /* stride > kernel, non-square, a single image */
    {1, 16, 7, 8, 3, 2, 3, ARGS(3, 2, 0, 1, 1, 1, 0, 1), false},
    /* 1x1 stride 2; dilation 3 along w only */
    {2, 16, 5, 6, 2, 1, 1, ARGS(2, 2, 0, 0, 1, 1, 1, 1), true},
    {2, 16, 6, 7, 2, 2, 3, ARGS(1, 2, 1, 1, 1, 3, 0, 1), true},
    /* 48 channels: an odd panel on AVX-512 (k2: K = 192, whose forward
     * stays within check_case's 1e-5 of the reference) */
    {1, 48, 4, 4, 2, 2, 2, ARGS(2, 2, 1, 1, 1, 1, 0, 0), true},
};

static void test_gathered_image_side(void **state)
{
    (void)state;
    static const char *const names[] = {"avx512", "avx2", "portable"};
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    int ran = 0, avail = kernels_available(names, 3);
    for (int k = 0; k < 3; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        int rank = ran++;
        worst w = {0, 0};
        for (size_t e = 0; e < sizeof gathered_cases / sizeof *gathered_cases;
             e++) {
            if (!case_runs(rank, avail, (long)e))
                continue;
            /* under valgrind a case runs one op, in turn, so that each
             * kernel still meets both (the gradient checks dominate) */
            long turn = (long)e / avail % 2;
            bool both = !quick() || avail <= 1;
            conv_case c = gathered_cases[e];
            /* conv_transpose2d: C in -> 16k out (its y gathered) */
            int img = c.C;
            c.C = c.OC, c.OC = img;
            if (both || turn == 0)
                check_case(&c, true, &w);
            /* conv2d: 16k in (its dx gathered) */
            c.OC = c.C, c.C = img;
            c.a.output_padding[0] = c.a.output_padding[1] = 0;
            if (both || turn == 1)
                check_case(&c, false, &w);
        }
        printf("  gathered, %s: worst gradcheck abs err %.3g, rel err %.3g\n",
               names[k], w.abs_err, w.rel_err);
    }
    assert_true(tg_gemm_set_kernel(saved));
}

/* A stride of 2^30 on one input channel (a 1 x 1 output): the direct
 * kernels' phase count sh*sw overflowed int (UBSan) before it was taken in
 * 64 bits; the geometry must fall back to the im2col path and agree with
 * the reference. The same stride with 2 -> 16 channels goes through the
 * implicit GEMM. */
static void test_huge_stride_one_channel(void **state)
{
    (void)state;
    conv_case c = {
        2, 1, 5, 5, 3, 2, 2, ARGS(1 << 30, 1 << 30, 0, 0, 1, 1, 0, 0), true};
    worst w = {0, 0};
    check_case(&c, false, &w);
    c.C = 2, c.OC = 16; /* the implicit GEMM's geometry, same stride */
    check_case(&c, false, &w);
    /* 16 image channels (the gathered image side's) with a dilation of
     * 2^20 rows: its column planes would be padded 2^19 rows deep, so
     * the GEMM + col2im path takes it; both ops */
    conv_case d = {
        1, 16, 3, 3, 3, 2, 2, ARGS(1, 1, 1 << 19, 0, 1 << 20, 1, 0, 0), true};
    check_case(&d, false, &w);
    d.C = 3, d.OC = 16, d.H = 2, d.W = 2;
    check_case(&d, true, &w);
}

/* The agreement above holds whichever path a product takes, so a choice
 * that sent every geometry to the im2col path (conv_implicit_ok refusing
 * 16k channels) passed it. Which path ran shows in the arena: with W
 * requiring grad, the im2col path keeps col [N * P, K] on the tape for
 * backward (1.6 MB here, past the arena's first 1 MB block); the implicit
 * GEMM reads a padded copy of the image (150 KB) and keeps no col. Forward
 * only. *col is col's size in bytes. */
static size_t forward_arena_bytes(const char *kernel, const conv_case *c,
                                  size_t *col)
{
    assert_true(tg_gemm_set_kernel(kernel));
    tg_tensor *x = rand4(c->N, c->C, c->H, c->W),
              *w = rand4(c->OC, c->C, c->kh, c->kw);
    tg_tensor_require_grad(w);
    tg_tape *tp = tg_tape_new();
    tg_tensor *y = tg_conv2d_ex(tp, x, w, NULL, &c->a);
    *col = (size_t)c->N * y->shape[2] * y->shape[3] * c->C * c->kh * c->kw *
           sizeof(float);
    size_t bytes = tg_tape_arena_bytes(tp);
    tg_tape_free(tp);
    tg_tensor_free(x);
    tg_tensor_free(w);
    return bytes;
}

static void test_implicit_path_keeps_no_col(void **state)
{
    (void)state;
    char saved[32];
    snprintf(saved, sizeof saved, "%s", tg_gemm_kernel());
    if (!tg_gemm_set_kernel("avx2")) {
        printf("  no AVX2 here: only the im2col path runs\n");
        return;
    }
    const conv_case c = {8,   32, 8, 8, 16, 5, 5, ARGS(1, 1, 2, 2, 1, 1, 0, 0),
                         true};
    size_t col;
    /* the im2col path keeps col: the measure sees it */
    assert_true(forward_arena_bytes("portable", &c, &col) >= col);
    static const char *const fast[] = {"avx2", "avx2-4x24", "avx2-6x16",
                                       "avx512"};
    for (int k = 0; k < 4; k++)
        if (tg_gemm_set_kernel(fast[k]))
            assert_true(forward_arena_bytes(fast[k], &c, &col) < col);
    assert_true(tg_gemm_set_kernel(saved));
}

/* An argument selects the tests whose names match it (cmocka's filter). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernel_paths_agree),
        cmocka_unit_test(test_gathered_image_side),
        cmocka_unit_test(test_huge_stride_one_channel),
        cmocka_unit_test(test_implicit_path_keeps_no_col),
    };
    return cmocka_run_group_tests_name("conv_paths", tests, NULL, NULL);
}

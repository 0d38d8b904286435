/* bench/conv_layers: the conv VAE's four convolution layers (batch 128,
 * 28x28 images) one by one: forward, and backward (both products, dx and
 * dW, plus db), ms per call, GFLOP/s and % of the machine's FMA peak
 * (bench/fma_peak.h). Flags: conv_layers --help. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cli.h"
#include "fma_peak.h"
#include "tapegrad.h"

typedef struct layer {
    const char *name;
    bool transpose;
    int C, H, OC; /* input channels, input side, output channels */
} layer;

static const layer layers[] = {
    {"conv1 1->32 28->14", false, 1, 28, 32},
    {"conv2 32->64 14->7", false, 32, 14, 64},
    {"deconv1 64->32 7->14", true, 64, 7, 32},
    {"deconv2 32->1 14->28", true, 32, 14, 1},
};

static const char usage[] =
    "usage: conv_layers [--batch B] [--threads T] [--reps N] [--layer L]\n"
    "                   [--cpu-time]\n"
    "Times the conv VAE's convolution layers (k4 s2 p1): forward and\n"
    "backward (dx, dW, db), GFLOP/s and % of the FMA peak.\n"
    "  --batch B     images per call (default 128)\n"
    "  --threads T   threads (default 1)\n"
    "  --reps N      timed calls per layer after 3 warm-up calls (default 20)\n"
    "  --layer L     only layer L (1-4, in the table's order; for profiling)\n"
    "  --cpu-time    time 1-thread runs by the thread's CPU time (a shared\n"
    "                machine)\n"
    "  --help        this text\n";

static tg_tensor *random4(int a, int b, int c, int d, tg_rng *rng)
{
    tg_tensor *t = tg_tensor_new(4, (int[]){a, b, c, d});
    tg_rng_fill_uniform(rng, t->data, t->size, -1.0f, 1.0f);
    return t;
}

int main(int argc, char **argv)
{
    const char *prog = "conv_layers";
    int batch = 128, threads = 1, reps = 20, only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (bench_is_help(a)) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--batch")) {
            batch = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                    1, 65536);
        } else if (!strcmp(a, "--threads")) {
            threads = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 1, 1024);
        } else if (!strcmp(a, "--reps")) {
            reps = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                   1, 1000000);
        } else if (!strcmp(a, "--layer")) {
            only = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                   1, 4);
        } else if (!strcmp(a, "--cpu-time")) {
            bench_cpu_time = 1;
        } else {
            bench_usage_error(prog, "unknown option '%s'", a);
        }
    }
    tg_set_threads(threads);
    int cpu = bench_cpu_time && threads == 1;
    double peak = measure_peak(kernel_width(tg_gemm_kernel()), threads, 0.3);
    printf("conv_layers: batch %d, %d thread%s, gemm %s, FMA peak %.1f "
           "GFLOP/s (%s)\n",
           batch, threads, threads == 1 ? "" : "s", tg_gemm_kernel(), peak,
           cpu ? "CPU time" : "wall clock");
    printf("%-22s %9s %9s %9s %9s %9s %7s\n", "layer", "fwd ms", "bwd ms",
           "fwd GF/s", "bwd GF/s", "all GF/s", "% peak");
    tg_rng rng;
    tg_rng_seed(&rng, 1, 0);
    for (size_t l = 0; l < sizeof layers / sizeof layers[0]; l++) {
        if (only && (size_t)only != l + 1)
            continue;
        const layer *L = &layers[l];
        int OH = L->transpose ? 2 * L->H : L->H / 2;
        tg_tensor *x = random4(batch, L->C, L->H, L->H, &rng);
        tg_tensor *W = L->transpose ? random4(L->C, L->OC, 4, 4, &rng)
                                    : random4(L->OC, L->C, 4, 4, &rng);
        tg_tensor *b = tg_tensor_new(1, (int[]){L->OC});
        tg_tensor_require_grad(x);
        tg_tensor_require_grad(W);
        tg_tensor_require_grad(b);
        float *seed = malloc(sizeof(float) * (size_t)batch * L->OC * OH * OH);
        tg_rng_fill_uniform(&rng, seed, (size_t)batch * L->OC * OH * OH, -1, 1);
        tg_tape *tp = tg_tape_new();
        double t_fwd = 0, t_bwd = 0;
        for (int r = 0; r < 3 + reps; r++) {
            tg_tape_reset(tp);
            double t0 = bench_clock(cpu);
            tg_tensor *y = L->transpose
                               ? tg_conv_transpose2d(tp, x, W, b, 2, 1, 0, 1)
                               : tg_conv2d(tp, x, W, b, 2, 1, 1);
            double t1 = bench_clock(cpu);
            tg_backward_with(tp, y, seed);
            double t2 = bench_clock(cpu);
            if (r >= 3) {
                t_fwd += t1 - t0;
                t_bwd += t2 - t1;
            }
        }
        /* one product: 2 * (image-side pixels of the kernel's output side)
         * ... = 2 * N * P * OC_conv * K for the equivalent conv */
        double small = L->transpose ? (double)L->H * L->H : (double)OH * OH;
        int cin = L->transpose ? L->OC : L->C;
        int cout = L->transpose ? L->C : L->OC;
        double flop = 2.0 * batch * small * cout * cin * 16;
        double f_ms = 1e3 * t_fwd / reps, b_ms = 1e3 * t_bwd / reps;
        double all = 3 * flop / ((t_fwd + t_bwd) / reps) * 1e-9;
        printf("%-22s %9.3f %9.3f %9.1f %9.1f %9.1f %6.1f%%\n", L->name, f_ms,
               b_ms, flop / (f_ms * 1e-3) * 1e-9,
               2 * flop / (b_ms * 1e-3) * 1e-9, all, 100 * all / peak);
        tg_tape_free(tp);
        free(seed);
        tg_tensor_free(x);
        tg_tensor_free(W);
        tg_tensor_free(b);
    }
    return 0;
}

/* bench/vae_step: the VAE training step (784-H-Z, Adam) on the embedded
 * data: samples/s, ms per step, heap allocations per step, peak RSS
 * (flags: vae_step --help).
 * Allocations are counted by wrapping malloc/calloc/realloc/aligned_alloc
 * in this executable (glibc's __libc_* entry points do the work), so every
 * allocation the library, libgomp or libc make during a step is seen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_cli.h"
#include "count_alloc.h"
#include "tapegrad.h"
#include "tg_vae.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char usage[] =
    "usage: vae_step [--data DIR] [--steps N] [--batch B] [--hidden H]\n"
    "                [--latent Z] [--threads T] [--arch mlp|conv]\n"
    "Times the VAE training step (784-H-Z, Adam, the NaN guard as vae_mnist\n"
    "takes it) on an IDX folder: samples/s, ms per step and per phase, heap\n"
    "allocations per step, peak RSS.\n"
    "  --data DIR     MNIST-style IDX folder (default: the embedded digits)\n"
    "  --steps N      timed steps after 10 warm-up steps (default 300)\n"
    "  --batch B      batch size (default 128)\n"
    "  --hidden H     hidden width, 0 = none (default 400)\n"
    "  --latent Z     latent size (default 20)\n"
    "  --threads T    threads, 0 = all cores (default 0)\n"
    "  --arch A       mlp (default) or conv (the convolutional VAE; hidden\n"
    "                 is then ignored)\n"
    "  --help         this text\n";

int main(int argc, char **argv)
{
    const char *dir = TG_BENCH_DATA_DIR, *prog = "vae_step";
    int steps = 300, batch = 128, threads = 0;
    tg_vae_config cfg = {784, 400, 20, TG_VAE_MLP, TG_VAE_BERNOULLI};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (bench_is_help(a)) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--data")) {
            dir = bench_value(prog, argc, argv, &i);
        } else if (!strcmp(a, "--steps")) {
            steps = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                    1, 1000000);
        } else if (!strcmp(a, "--batch")) {
            batch = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                    1, 65536);
        } else if (!strcmp(a, "--hidden")) {
            cfg.hidden = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 0, 65536);
        } else if (!strcmp(a, "--latent")) {
            cfg.latent = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 1, 65536);
        } else if (!strcmp(a, "--arch")) {
            if (!tg_vae_arch_parse(bench_value(prog, argc, argv, &i),
                                   &cfg.arch))
                bench_usage_error(prog, "--arch is mlp or conv");
        } else if (!strcmp(a, "--threads")) {
            threads = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 0, 1024);
        } else {
            bench_usage_error(prog, "unknown option '%s'", a);
        }
    }
    tg_set_threads(threads);
    if (cfg.arch == TG_VAE_CONV)
        cfg.hidden = 0;

    tg_dataset ds;
    if (tg_mnist_load(dir, true, &ds) != TG_OK) {
        fprintf(stderr, "vae_step: %s\n", tg_errmsg());
        return 2;
    }
    tg_vae *vae = tg_vae_new(cfg, 1);
    tg_params *ps = tg_vae_params(vae);
    tg_optim *opt = tg_adam_new(ps, 1e-3f);
    tg_batcher b;
    tg_batcher_init(&b, &ds, batch, 1);
    tg_rng noise;
    tg_rng_seed(&noise, 1, 2);
    tg_tape *tp = tg_tape_new();

    long allocs_timed = 0;
    double t_timed = 0, loss = 0;
    /* Where a step's time goes, summed over the timed steps. */
    enum { ZERO, FORWARD, BACKWARD, GUARD, OPTIM, N_PHASES };
    static const char *const phase_names[N_PHASES] = {
        "zero grads", "forward", "backward", "NaN guard", "Adam"};
    double phase[N_PHASES] = {0};
    int warmup = 10, timed = 0;
    int64_t epoch = 0;
    tg_batcher_start(&b, epoch, 0);
    for (int s = 0; s < warmup + steps; s++) {
        tg_tape_reset(tp);
        tg_tensor *x = tg_tape_tensor2(tp, batch, cfg.input, false);
        int n = tg_batcher_next(&b, x->data, NULL);
        if (n < batch) { /* keep full batches: restart the epoch */
            tg_batcher_start(&b, ++epoch, 0);
            n = tg_batcher_next(&b, x->data, NULL);
        }
        long a0 = allocs_so_far();
        /* The step as vae_mnist takes it: the guard checks parameters and
         * gradients before Adam (tg_step_finish). */
        double t[N_PHASES + 1];
        t[0] = now();
        tg_params_zero_grad(ps);
        t[1] = now();
        tg_vae_out o = tg_vae_forward(tp, vae, x, &noise);
        t[2] = now();
        tg_backward(tp, o.loss);
        t[3] = now();
        const char *bad = tg_params_nonfinite(ps, NULL);
        t[4] = now();
        if (!bad)
            tg_optim_step(opt);
        t[5] = now();
        if (s >= warmup) {
            t_timed += t[N_PHASES] - t[0];
            for (int k = 0; k < N_PHASES; k++)
                phase[k] += t[k + 1] - t[k];
            allocs_timed += allocs_so_far() - a0;
            timed++;
            loss = o.loss->data[0];
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double ms = 1e3 * t_timed / timed;
    /* Six GEMMs: three forward products, and backward dW and dx for each
     * layer but dx of the first (the data needs no gradient). */
    double fwd =
        (double)cfg.input * cfg.hidden + cfg.hidden * 2.0 * cfg.latent +
        (double)cfg.latent * cfg.hidden + (double)cfg.hidden * cfg.input;
    if (cfg.hidden == 0)
        fwd = cfg.input * 2.0 * cfg.latent + (double)cfg.latent * cfg.input;
    double first = cfg.hidden ? (double)cfg.input * cfg.hidden
                              : cfg.input * 2.0 * cfg.latent;
    double flops = 2.0 * batch * (3 * fwd - first);
    if (cfg.arch == TG_VAE_CONV) {
        /* multiply-adds per image of each layer's forward product (28x28:
         * conv1, conv2, fc, fc, deconv1, deconv2 as their equivalent
         * convs); backward adds dx and dW for each but conv1's dx */
        double s = cfg.input / 784.0, z = cfg.latent;
        double conv1 = 196 * 32 * 16 * s, conv2 = 49 * 64 * 512 * s;
        double fcs = 3136 * s * (2 * z) + z * 3136 * s;
        fwd = conv1 + conv2 + fcs + conv2 + conv1;
        flops = 2.0 * batch * (3 * fwd - conv1);
    }
    if (cfg.arch == TG_VAE_CONV) /* no hidden width: the layers above */
        printf("vae_step conv %d inputs, latent %d,", cfg.input, cfg.latent);
    else
        printf("vae_step mlp %d-%d-%d,", cfg.input, cfg.hidden, cfg.latent);
    printf(" batch %d, %d threads, gemm %s\n", batch, tg_get_threads(),
           tg_gemm_kernel());
    printf("  %.3f ms/step  %.0f samples/s  %.1f GFLOP/s over the whole step "
           "(%.2f MFLOP/sample)\n",
           ms, batch / (ms * 1e-3), flops / (ms * 1e-3) * 1e-9,
           flops / batch * 1e-6);
    if (COUNT_ALLOC_ACTIVE)
        printf("  heap allocations per step after warm-up: %.2f (%ld in %d "
               "steps)\n",
               (double)allocs_timed / timed, allocs_timed, timed);
    else
        printf("  heap allocations: not counted (AddressSanitizer build)\n");
    printf("  peak RSS %.1f MiB, last loss %.2f\n", ru.ru_maxrss / 1024.0,
           loss);
    printf("  ms per step:");
    for (int k = 0; k < N_PHASES; k++)
        printf(" %s %.3f%s", phase_names[k], 1e3 * phase[k] / timed,
               k + 1 < N_PHASES ? "," : "\n");

    tg_tape_free(tp);
    tg_batcher_free(&b);
    tg_optim_free(opt);
    tg_vae_free(vae);
    tg_dataset_free(&ds);
    return 0;
}

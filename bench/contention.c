/* bench/contention: the VAE training step on a machine that another program
 * keeps busy. Starts its own competing load (child processes spinning on
 * the CPU), then times the step in alternating phases: one thread, the
 * default (tg_set_threads(0): all cores, falling back to one while more do
 * not pay), and all cores forced (tg_set_threads(cores): the behaviour
 * before the fallback existed). Prints samples/s for each and the ratios.
 * Target: default >= 0.9x one thread under load; idle (--load 0), default
 * within 5% of all cores forced. Wall clock: the point is time lost to
 * waiting. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_cli.h"
#include "tapegrad.h"
#include "tg_vae.h"

static const char usage[] =
    "usage: contention [--load N] [--seconds S] [--rounds R] [--data DIR]\n"
    "                  [--batch B] [--hidden H] [--latent Z]\n"
    "                  [--arch mlp|conv]\n"
    "Times the VAE step (samples/s) while N child processes spin on the CPU:\n"
    "one thread, the default thread count, and all cores forced, in\n"
    "alternating phases of S seconds, R rounds.\n"
    "  --load N      competing busy processes (default 1; 0 = idle)\n"
    "  --seconds S   length of each phase (default 3)\n"
    "  --rounds R    rounds of the three phases (default 3)\n"
    "  --data DIR    MNIST-style IDX folder (default: the embedded digits)\n"
    "  --batch B     batch size (default 128)\n"
    "  --hidden H    hidden width (default 400)\n"
    "  --latent Z    latent size (default 20)\n"
    "  --arch A      mlp (default) or conv (the convolutional VAE; hidden\n"
    "                is then ignored)\n"
    "  --help        this text\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A CPU-bound child: spins until killed, or until the parent dies. */
static pid_t start_spinner(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        volatile unsigned long x = 0;
        for (;;)
            x = x * 6364136223846793005ul + 1;
    }
    if (pid < 0) {
        perror("contention: fork");
        exit(1);
    }
    return pid;
}

typedef struct {
    tg_vae *vae;
    tg_params *ps;
    tg_optim *opt;
    tg_batcher b;
    tg_rng noise;
    tg_tape *tp;
    int batch, input;
    int64_t epoch;
} trainer;

static void step(trainer *t)
{
    tg_tape_reset(t->tp);
    tg_tensor *x = tg_tape_tensor2(t->tp, t->batch, t->input, false);
    if (tg_batcher_next(&t->b, x->data, NULL) < t->batch) {
        tg_batcher_start(&t->b, ++t->epoch, 0);
        tg_batcher_next(&t->b, x->data, NULL);
    }
    tg_params_zero_grad(t->ps);
    tg_vae_out o = tg_vae_forward(t->tp, t->vae, x, &t->noise);
    tg_backward(t->tp, o.loss);
    tg_optim_step(t->opt);
}

/* Steps for `seconds` on `threads` threads; adds samples and seconds. */
static void phase(trainer *t, int threads, double seconds, double *samples,
                  double *elapsed)
{
    tg_set_threads(threads);
    step(t); /* the thread team forms outside the timing */
    double t0 = now(), dt;
    long n = 0;
    do {
        step(t);
        n++;
        dt = now() - t0;
    } while (dt < seconds);
    *samples += (double)n * t->batch;
    *elapsed += dt;
}

int main(int argc, char **argv)
{
    const char *dir = TG_BENCH_DATA_DIR, *prog = "contention";
    int load = 1, rounds = 3, batch = 128;
    double seconds = 3;
    tg_vae_config cfg = {784, 400, 20, TG_VAE_MLP, TG_VAE_BERNOULLI};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (bench_is_help(a)) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--load")) {
            load = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                   0, 64);
        } else if (!strcmp(a, "--seconds")) {
            seconds =
                bench_pos(prog, a, bench_value(prog, argc, argv, &i), 3600);
        } else if (!strcmp(a, "--rounds")) {
            rounds = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                     1, 100);
        } else if (!strcmp(a, "--data")) {
            dir = bench_value(prog, argc, argv, &i);
        } else if (!strcmp(a, "--batch")) {
            batch = (int)bench_long(prog, a, bench_value(prog, argc, argv, &i),
                                    1, 65536);
        } else if (!strcmp(a, "--hidden")) {
            cfg.hidden = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 0, 65536);
        } else if (!strcmp(a, "--arch")) {
            if (!tg_vae_arch_parse(bench_value(prog, argc, argv, &i),
                                   &cfg.arch))
                bench_usage_error(prog, "--arch is mlp or conv");
        } else if (!strcmp(a, "--latent")) {
            cfg.latent = (int)bench_long(
                prog, a, bench_value(prog, argc, argv, &i), 1, 65536);
        } else {
            bench_usage_error(prog, "unknown option '%s'", a);
        }
    }

    if (cfg.arch == TG_VAE_CONV)
        cfg.hidden = 0;
    tg_dataset ds;
    if (tg_mnist_load(dir, true, &ds) != TG_OK) {
        fprintf(stderr, "contention: %s\n", tg_errmsg());
        return 2;
    }
    trainer t = {.batch = batch, .input = cfg.input};
    t.vae = tg_vae_new(cfg, 1);
    t.ps = tg_vae_params(t.vae);
    t.opt = tg_adam_new(t.ps, 1e-3f);
    tg_batcher_init(&t.b, &ds, batch, 1);
    tg_batcher_start(&t.b, 0, 0);
    tg_rng_seed(&t.noise, 1, 2);
    t.tp = tg_tape_new();
    tg_set_threads(0);
    int cores = tg_get_threads();
    for (int i = 0; i < 10; i++) /* warm-up: tape arena, pack buffers */
        step(&t);

    pid_t kids[64];
    for (int i = 0; i < load; i++)
        kids[i] = start_spinner();
    printf("contention: %s VAE %d-%d-%d batch %d, %d busy process%s, %d "
           "cores, %d rounds of %.1f s phases\n",
           tg_vae_arch_name(cfg.arch), cfg.input, cfg.hidden, cfg.latent, batch,
           load, load == 1 ? "" : "es", cores, rounds, seconds);
    printf("%5s %14s %14s %14s\n", "round", "1 thread", "default",
           "all forced");
    enum { ONE, DEFAULT, FORCED };
    double samples[3] = {0}, elapsed[3] = {0};
    const int threads[3] = {1, 0, cores};
    for (int r = 0; r < rounds; r++) {
        double s[3] = {0}, e[3] = {0};
        for (int c = 0; c < 3; c++) {
            phase(&t, threads[c], seconds, &s[c], &e[c]);
            samples[c] += s[c];
            elapsed[c] += e[c];
        }
        printf("%5d %14.0f %14.0f %14.0f   samples/s\n", r + 1, s[0] / e[0],
               s[1] / e[1], s[2] / e[2]);
        fflush(stdout);
    }
    for (int i = 0; i < load; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }
    double rate[3];
    for (int c = 0; c < 3; c++)
        rate[c] = samples[c] / elapsed[c];
    printf("%5s %14.0f %14.0f %14.0f   samples/s\n", "all", rate[ONE],
           rate[DEFAULT], rate[FORCED]);
    printf("default / 1 thread: %.2f   default / all forced: %.2f\n",
           rate[DEFAULT] / rate[ONE], rate[DEFAULT] / rate[FORCED]);

    tg_tape_free(t.tp);
    tg_batcher_free(&t.b);
    tg_optim_free(t.opt);
    tg_vae_free(t.vae);
    tg_dataset_free(&ds);
    return 0;
}

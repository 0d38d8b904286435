/* GEMM throughput: our tg_gemm per micro-kernel at 1 thread and all cores,
 * a naive loop, the FMA peak, and (built with -Dbench_openblas=enabled)
 * OpenBLAS's cblas_sgemm on the same operands, whose results must agree.
 * Configurations are timed in interleaved rounds (each round times every
 * configuration once), and each figure is the median over the rounds.
 *
 * Usage: gemm [--rounds N] [--best] [--cpu-time] [--batch-time S]
 *             [--shape MxNxK[:TT]]
 * (--batch-time: each timed batch lasts at least S seconds, default 0.05;
 * on a busy machine many short batches with --best find the quiet moments)
 * (TT: N/T per operand; --cpu-time: see fma_peak.h)
 * --best reports the best round instead of the median (on a machine shared
 * with other work, the best round estimates what the code can do).
 * For OpenBLAS at its best kernel, run with its core-type overrides unset in
 * that command only: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ... */
#include "fma_peak.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cli.h"
#include "tg_autograd.h"

#ifdef TG_BENCH_OPENBLAS
#include <cblas.h>
#endif

typedef struct {
    int M, N, K;
    bool ta, tb;
    const char *what;
} shape;

/* The VAE (784-400-20, batch 128) GEMMs and a square reference. */
static const shape default_shapes[] = {
    {128, 784, 400, false, true, "dec out fwd"},
    {128, 400, 784, false, true, "enc fwd"},
    {400, 128, 784, true, false, "dW^T-ish"},
    {784, 128, 400, true, false, "dW dec"},
    {400, 784, 128, true, false, "dW enc, as the step"},
    {784, 400, 128, true, false, "dW dec, as the step"},
    {128, 400, 40, false, true, "dec fwd"},
    {128, 20, 400, false, true, "enc2 fwd"},
    {128, 400, 784, false, false, "NN"},
    {1024, 1024, 1024, false, false, "square"},
};

enum { MAX_CFG = 12, MAX_ROUNDS = 31 };

typedef struct {
    char name[32];
    const char *kernel; /* NULL: OpenBLAS */
    int threads;
    double gflops[MAX_ROUNDS];
} config;

typedef struct {
    const shape *s;
    float *A, *B, *C;
    int lda, ldb;
} operands;

static void run_ours(const operands *o)
{
    const shape *s = o->s;
    tg_gemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, o->A, o->lda, o->B, o->ldb,
            0.0f, o->C, s->N);
}

#ifdef TG_BENCH_OPENBLAS
static void run_blas(const operands *o)
{
    const shape *s = o->s;
    cblas_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans,
                s->tb ? CblasTrans : CblasNoTrans, s->M, s->N, s->K, 1.0f, o->A,
                o->lda, o->B, o->ldb, 0.0f, o->C, s->N);
}
#endif

/* Switching between OpenBLAS (pthreads that busy-wait ~0.1 s after a call)
 * and our OpenMP threads (which spin too): let the other side's threads go
 * idle first, or they steal the second core from the measurement. */
static void select_config(const config *c)
{
    static int last_is_ours = -1;
    int ours = c->kernel != NULL;
    if (last_is_ours >= 0 && ours != last_is_ours) {
        struct timespec pause = {0, 250 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    last_is_ours = ours;
    if (c->kernel) {
        tg_gemm_set_kernel(c->kernel);
        tg_set_threads(c->threads);
    }
#ifdef TG_BENCH_OPENBLAS
    else
        openblas_set_num_threads(c->threads);
#endif
}

static void run_config(const config *c, const operands *o)
{
#ifdef TG_BENCH_OPENBLAS
    if (!c->kernel) {
        run_blas(o);
        return;
    }
#endif
    (void)c;
    run_ours(o);
}

/* GFLOP/s of one timed batch lasting at least min_seconds. */
static double time_batch(const config *c, const operands *o, double min_seconds)
{
    const shape *s = o->s;
    double flop = 2.0 * s->M * s->N * s->K;
    select_config(c);
    run_config(c, o); /* warm caches, thread pools, pack buffers */
    long reps = 0;
    int cpu = bench_cpu_time && c->threads == 1;
    double t0 = bench_clock(cpu), dt;
    do {
        run_config(c, o);
        reps++;
        dt = bench_clock(cpu) - t0;
    } while (dt < min_seconds);
    return flop * (double)reps / dt * 1e-9;
}

static double naive_gflops(const operands *o)
{
    const shape *s = o->s;
    double t0 = bench_clock(bench_cpu_time);
    for (int i = 0; i < s->M; i++) {
        float *c = o->C + (size_t)i * s->N;
        for (int j = 0; j < s->N; j++)
            c[j] = 0.0f;
        for (int p = 0; p < s->K; p++) {
            float a = s->ta ? o->A[(size_t)p * o->lda + i]
                            : o->A[(size_t)i * o->lda + p];
            for (int j = 0; j < s->N; j++)
                c[j] += a * (s->tb ? o->B[(size_t)j * o->ldb + p]
                                   : o->B[(size_t)p * o->ldb + j]);
        }
    }
    return 2.0 * s->M * s->N * s->K / (bench_clock(bench_cpu_time) - t0) * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static bool use_best;

/* The median round, or with --best the fastest. */
static double summary(const double *v, int n)
{
    double t[MAX_ROUNDS];
    memcpy(t, v, (size_t)n * sizeof *v);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return use_best ? t[n - 1] : t[n / 2];
}

static float *random_floats(size_t n, unsigned *seed)
{
    float *m = malloc(n * sizeof(float));
    if (!m) {
        fprintf(stderr, "gemm bench: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        m[i] = (float)(*seed >> 8) / 16777216.0f - 0.5f;
    }
    return m;
}

#ifdef TG_BENCH_OPENBLAS
/* Largest |ours - other| relative to the largest |other|. */
static double disagreement(const float *ours, const float *other, size_t n)
{
    double d = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)ours[i] - other[i]));
        mag = fmax(mag, fabs((double)other[i]));
    }
    return mag > 0 ? d / mag : d;
}
#endif

int main(int argc, char **argv)
{
    int rounds = 5;
    shape custom;
    double min_seconds = 0.05;
    const shape *shapes = default_shapes;
    int n_shapes = sizeof default_shapes / sizeof default_shapes[0];
    for (int i = 1; i < argc; i++) {
        char tt[3] = "NN";
        if (bench_is_help(argv[i])) {
            printf("usage: gemm [--rounds N] [--best] [--cpu-time] "
                   "[--batch-time S] [--shape MxNxK[:TT]]\n"
                   "tg_gemm GFLOP/s per kernel and thread count on the VAE "
                   "shapes (see the\ncomment atop bench/gemm.c).\n");
            return 0;
        } else if (!strcmp(argv[i], "--cpu-time")) {
            bench_cpu_time = 1;
        } else if (!strcmp(argv[i], "--best")) {
            use_best = true;
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--batch-time")) {
            min_seconds = bench_pos("gemm", argv[i],
                                    bench_value("gemm", argc, argv, &i), 10);
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc &&
                   sscanf(argv[++i], "%dx%dx%d:%2s", &custom.M, &custom.N,
                          &custom.K, tt) >= 3) {
            custom.ta = tt[0] == 'T';
            custom.tb = tt[1] == 'T';
            custom.what = "custom";
            shapes = &custom;
            n_shapes = 1;
        } else {
            bench_usage_error("gemm", "unknown option or bad value '%s'",
                              argv[i]);
        }
    }
    if (rounds < 1)
        rounds = 1;
    if (rounds > MAX_ROUNDS)
        rounds = MAX_ROUNDS;

    int cores = tg_get_threads();
    config cfg[MAX_CFG];
    int n_cfg = 0;
    const char *default_kernel = tg_gemm_kernel();
    static const char *const names[] = {"avx512", "avx2", "portable"};
    for (int k = 0; k < 3; k++) {
        if (!tg_gemm_set_kernel(names[k]))
            continue;
        for (int t = 1; t <= cores && t <= 2; t++)
            cfg[n_cfg++] = (config){.kernel = names[k], .threads = t};
    }
    tg_gemm_set_kernel(default_kernel);
#ifdef TG_BENCH_OPENBLAS
    for (int t = 1; t <= cores && t <= 2; t++)
        cfg[n_cfg++] = (config){.kernel = NULL, .threads = t};
    printf("OpenBLAS %s, core %s\n", OPENBLAS_VERSION, openblas_get_corename());
#endif
    for (int c = 0; c < n_cfg; c++)
        snprintf(cfg[c].name, sizeof cfg[c].name, "%s/%d",
                 cfg[c].kernel ? cfg[c].kernel : "openblas", cfg[c].threads);

    double peak1 = 0, peak_all = 0;
#ifdef PEAK_X86
    int width = kernel_width(default_kernel);
    for (int i = 0; i < 3; i++) { /* best of 3 */
        peak1 = fmax(peak1, measure_peak(width, 1, 0.1));
        peak_all = fmax(peak_all, measure_peak(width, cores, 0.1));
    }
    printf("FMA peak (%d-bit): %.1f GFLOP/s on 1 thread, %.1f on %d\n", width,
           peak1, peak_all, cores);
#endif
    printf("GFLOP/s, %s of %d interleaved rounds; kernel/threads%s\n",
           use_best ? "best" : "median", rounds,
           bench_cpu_time ? "; 1-thread figures per CPU-second" : "");
    printf("%-18s %6s", "MxNxK op", "naive");
    for (int c = 0; c < n_cfg; c++)
        printf(" %12s", cfg[c].name);
    printf(" %7s %7s", "%pk/1", "%pk/all");
#ifdef TG_BENCH_OPENBLAS
    printf(" %7s %7s %8s", "vsBLAS1", "vsBLAS2", "agree");
#endif
    printf("\n");

    unsigned seed = 12345;
    for (int si = 0; si < n_shapes; si++) {
        const shape *s = &shapes[si];
        operands o = {
            s, NULL, NULL, NULL, s->ta ? s->M : s->K, s->tb ? s->K : s->N};
        o.A = random_floats((size_t)s->M * s->K, &seed);
        o.B = random_floats((size_t)s->K * s->N, &seed);
        o.C = random_floats((size_t)s->M * s->N, &seed);
        double naive = naive_gflops(&o);
        for (int r = 0; r < rounds; r++)
            for (int c = 0; c < n_cfg; c++)
                cfg[c].gflops[r] = time_batch(&cfg[c], &o, min_seconds);

        char label[32];
        snprintf(label, sizeof label, "%dx%dx%d %c%c", s->M, s->N, s->K,
                 s->ta ? 'T' : 'N', s->tb ? 'T' : 'N');
        printf("%-18s %6.1f", label, naive);
        double best1 = 0, best_all = 0, med[MAX_CFG];
        for (int c = 0; c < n_cfg; c++) {
            med[c] = summary(cfg[c].gflops, rounds);
            printf(" %12.1f", med[c]);
            if (cfg[c].kernel && cfg[c].threads == 1)
                best1 = fmax(best1, med[c]);
            if (cfg[c].kernel && cfg[c].threads == (cores < 2 ? cores : 2))
                best_all = fmax(best_all, med[c]);
        }
        printf(" %6.0f%% %6.0f%%", peak1 > 0 ? 100 * best1 / peak1 : 0,
               peak_all > 0 ? 100 * best_all / peak_all : 0);
#ifdef TG_BENCH_OPENBLAS
        double blas[2] = {0, 0};
        for (int c = 0; c < n_cfg; c++)
            if (!cfg[c].kernel)
                blas[cfg[c].threads - 1] = med[c];
        printf(" %7.2f %7.2f", blas[0] > 0 ? best1 / blas[0] : 0,
               blas[1] > 0 ? best_all / blas[1] : 0);
        size_t nc = (size_t)s->M * s->N;
        float *theirs = malloc(nc * sizeof(float));
        if (!theirs)
            return 2;
        openblas_set_num_threads(1);
        run_blas(&o);
        memcpy(theirs, o.C, nc * sizeof(float));
        tg_gemm_set_kernel(default_kernel);
        run_ours(&o);
        printf(" %8.1e", disagreement(o.C, theirs, nc));
        free(theirs);
#endif
        printf("\n");
        fflush(stdout);
        free(o.A);
        free(o.B);
        free(o.C);
    }
    tg_gemm_set_kernel(default_kernel);
    tg_set_threads(0);
    return 0;
}

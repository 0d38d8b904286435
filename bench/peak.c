/* FMA peak of this machine: register-only loops for each vector width the CPU
 * has, on one thread and on all cores. Median of 5 runs of ~0.2 s each.
 * Usage: peak [--cpu-time] [seconds-per-run] (peak --help)
 * --cpu-time: each thread is timed by its own CPU time (see fma_peak.h). */
#include "fma_peak.h"

#include "bench_cli.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_peak(int width, int threads, double seconds)
{
    double r[5];
    for (int i = 0; i < 5; i++)
        r[i] = measure_peak(width, threads, seconds);
    qsort(r, 5, sizeof r[0], cmp_double);
    return r[2];
}

static const char usage[] =
    "usage: peak [--cpu-time] [SECONDS]\n"
    "FMA peak (GFLOP/s fp32) for each vector width the CPU has, on one thread\n"
    "and on all cores: the median of 5 register-only runs of SECONDS each\n"
    "(default 0.2).\n"
    "  --cpu-time     time each thread by its own CPU time\n"
    "  --help         this text\n";

int main(int argc, char **argv)
{
    double seconds = 0.2;
    bool have_seconds = false;
    for (int i = 1; i < argc; i++) {
        if (bench_is_help(argv[i])) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--cpu-time")) {
            bench_cpu_time = 1;
        } else if (argv[i][0] != '-' && !have_seconds) {
            seconds = bench_pos("peak", "SECONDS", argv[i], 60);
            have_seconds = true;
        } else {
            bench_usage_error("peak", "unknown option '%s'", argv[i]);
        }
    }
    int cores = 1;
#ifdef TG_HAVE_OPENMP
    cores = omp_get_num_procs();
#endif
#ifdef PEAK_X86
    __builtin_cpu_init();
    int widths[2], n = 0;
    if (__builtin_cpu_supports("avx512f"))
        widths[n++] = 512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        widths[n++] = 256;
    printf("%-8s %12s %12s  (GFLOP/s fp32, median of 5)\n", "vector",
           "1 thread", cores > 1 ? "all cores" : "");
    for (int i = 0; i < n; i++) {
        double one = median_peak(widths[i], 1, seconds);
        printf("%-8d %12.1f", widths[i], one);
        if (cores > 1)
            printf(" %12.1f (%d threads)",
                   median_peak(widths[i], cores, seconds), cores);
        printf("\n");
    }
    if (n == 0)
        printf("no AVX2/AVX-512 FMA on this CPU\n");
#else
    (void)seconds;
    (void)cores;
    printf("peak: x86-64 only\n");
#endif
    return 0;
}

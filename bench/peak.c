/* FMA peak of this machine: register-only loops for each vector width the CPU
 * has, on one thread and on all cores. Median of 5 runs of ~0.2 s each.
 * Usage: peak [--cpu-time] [seconds-per-run]
 * --cpu-time: each thread is timed by its own CPU time (see fma_peak.h). */
#include "fma_peak.h"

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

int main(int argc, char **argv)
{
    int arg = 1;
    if (argc > 1 && !strcmp(argv[1], "--cpu-time")) {
        bench_cpu_time = 1;
        arg++;
    }
    double seconds = argc > arg ? atof(argv[arg]) : 0.2;
    if (!(seconds > 0))
        seconds = 0.2;
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

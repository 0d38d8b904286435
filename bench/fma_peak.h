/* Register-only FMA loops: the machine's floating-point peak per vector
 * width, the bar against which bench/gemm reports "% of peak".
 * Each loop keeps ACC independent accumulator chains so that FMA latency
 * (4-5 cycles) times the number of FMA pipes (2) is covered. */
#ifndef TG_BENCH_FMA_PEAK_H
#define TG_BENCH_FMA_PEAK_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tg_config.h"
#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif

/* --cpu-time: single-threaded runs are timed by the thread's CPU time, so
 * time spent descheduled (a machine shared with other work) is not counted;
 * multi-threaded runs by the wall clock, except the peak loop, where each
 * thread times itself. */
static int bench_cpu_time;

static double bench_clock(int cpu)
{
    struct timespec ts;
    clock_gettime(cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double bench_now(void) { return bench_clock(0); }

enum { PEAK_ACC = 16 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define PEAK_X86 1

/* Returns a value that depends on every chain so nothing is optimised away. */
__attribute__((target("avx512f,fma"))) static float fma_loop_512(long iters)
{
    __m512 acc[PEAK_ACC], x = _mm512_set1_ps(0.999999f),
                          y = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < PEAK_ACC; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < PEAK_ACC; i++)
            acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    __m512 s = acc[0];
    for (int i = 1; i < PEAK_ACC; i++)
        s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float fma_loop_256(long iters)
{
    enum { N = 12 }; /* 16 ymm registers */
    __m256 acc[N], x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < N; i++)
        acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < N; i++)
            acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    __m256 s = acc[0];
    for (int i = 1; i < N; i++)
        s = _mm256_add_ps(s, acc[i]);
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];
}
#endif

/* FLOP per loop iteration and the loop, for width 512 or 256. */
static double peak_flop_per_iter(int width)
{
    return width == 512 ? 2.0 * 16 * PEAK_ACC : 2.0 * 8 * 12;
}

static float peak_loop(int width, long iters)
{
#ifdef PEAK_X86
    return width == 512 ? fma_loop_512(iters) : fma_loop_256(iters);
#else
    (void)width;
    (void)iters;
    return 0.0f;
#endif
}

/* The vector width of a tg_gemm kernel (tg_gemm_kernel()'s name): the peak
 * its "% of peak" is taken against. */
static inline int kernel_width(const char *kernel)
{
    return kernel && !strncmp(kernel, "avx512", 6) ? 512 : 256;
}

/* GFLOP/s of `threads` threads each running the loop for about `seconds`. */
static double measure_peak(int width, int threads, double seconds)
{
    long iters = 1L << 16;
    volatile float sink = 0;
    double t0 = bench_now();
    sink += peak_loop(width, iters);
    double dt = bench_now() - t0;
    while (dt < seconds / 4) {
        iters *= 2;
        t0 = bench_now();
        sink += peak_loop(width, iters);
        dt = bench_now() - t0;
    }
    iters = (long)((double)iters * seconds / dt) + 1;
    double gflops = 0;
    t0 = bench_now();
#ifdef TG_HAVE_OPENMP
#pragma omp parallel num_threads(threads)
#endif
    {
        double c0 = bench_clock(bench_cpu_time);
        sink += peak_loop(width, iters);
        double rate = peak_flop_per_iter(width) * (double)iters /
                      (bench_clock(bench_cpu_time) - c0) * 1e-9;
#ifdef TG_HAVE_OPENMP
#pragma omp critical
#endif
        gflops += rate;
    }
    dt = bench_now() - t0;
    (void)sink;
#ifndef TG_HAVE_OPENMP
    threads = 1;
#endif
    /* Wall clock: all threads' work over the time until the last finished. */
    if (!bench_cpu_time)
        gflops =
            peak_flop_per_iter(width) * (double)iters * threads / dt * 1e-9;
    return gflops;
}

#endif

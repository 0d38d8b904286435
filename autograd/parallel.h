/* Private to the library: OpenMP for elementwise and per-row loops.
 *
 * TG_PARALLEL_FOR(n, per_iter) before a for loop splits its iterations over
 * the library's threads when the loop touches at least TG_PARALLEL_MIN
 * floats in all (n iterations, per_iter floats each); smaller loops stay on
 * one thread, where a parallel region would cost more than it saves. Each
 * iteration must write only its own outputs: then the result is the same
 * for any thread count. Without OpenMP it expands to nothing. The thread
 * count is tg_par_threads(): one while the machine is too busy for more to
 * pay (see threads.c). */
#ifndef TG_PARALLEL_H
#define TG_PARALLEL_H

#include "tg_autograd.h"
#include "tg_config.h"

#include <stdint.h>

/* Internal to the library: not exported from libtapegrad.so. */
#pragma GCC visibility push(hidden)

/* Threads for the next parallel region: tg_get_threads(), or 1 while the
 * adaptive default (tg_set_threads(0)) finds that more do not pay. */
int tg_par_threads(void);

/* A measured parallel region (the GEMM's):
 *   tg_par_region r;
 *   int T = tg_par_begin(&r, want);   // want, or 1 while falling back
 *   ... region on T threads; the master times its own share ...
 *   tg_par_end(&r, serial_ns);  // the master's time / its share of work:
 *                               // what one thread would have taken
 */
typedef struct tg_par_region {
    int threads;
    int64_t t0; /* 0: not measured */
} tg_par_region;
int tg_par_begin(tg_par_region *r, int want);
void tg_par_end(const tg_par_region *r, int64_t serial_ns);
int64_t tg_par_now_ns(void); /* CLOCK_MONOTONIC */

/* Measured on the VAE step (2 cores, Zen): a parallel region costs a few
 * microseconds, a vectorised exp over 16k floats about as much. */
#define TG_PARALLEL_MIN 32768

#define TG_PRAGMA(x) _Pragma(#x)
#ifdef TG_HAVE_OPENMP
#define TG_PARALLEL_FOR(n, per_iter)                                           \
    TG_PRAGMA(omp parallel for schedule(static) num_threads(tg_par_threads()) \
                  if ((size_t)(n) * (size_t)(per_iter) >= TG_PARALLEL_MIN))
#else
#define TG_PARALLEL_FOR(n, per_iter)
#endif

/* TG_VECTOR_CLONES before a function with a hot elementwise loop compiles it
 * for AVX-512, AVX2 and baseline x86-64 and picks one at load time (an
 * ifunc), so one build runs anywhere and uses wide vectors where it can.
 * Keep such functions free of OpenMP: call them from inside the parallel
 * loop, on a block of elements. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define TG_VECTOR_CLONES                                                       \
    __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TG_VECTOR_CLONES
#endif

#pragma GCC visibility pop

#endif

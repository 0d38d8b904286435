/* The library's thread count, and how it adapts to a busy machine.
 *
 * libgomp's threads busy-wait at the end of a region before they sleep
 * (OMP_WAIT_POLICY and GOMP_SPINCOUNT are read once, when libgomp loads,
 * before any constructor of ours runs). On a machine where another program
 * keeps a core busy, a region's worker is often descheduled: the region
 * then waits a whole time slice (milliseconds) for it, and a 2-thread step
 * runs 10-30x slower than one thread.
 *
 * So with the default thread count (tg_set_threads(0)) the library measures
 * its parallel GEMM regions: wall time against the master thread's time
 * over its share of the work (what one thread would have taken), over
 * windows of 5 ms of region time. When T threads bought less than a 1.1x
 * speedup in two windows in a row, every parallel region (GEMM and
 * TG_PARALLEL_FOR) runs on one thread for a while, then T threads are
 * tried again: after 50 ms, 4x longer each time up to 8 s while the tries
 * keep failing within a second. A try is judged by its first window alone
 * (a busy machine pays one window per try); past it, one failed window is
 * taken for noise: a virtual machine's host takes the other core now and
 * then, and on an idle machine that cost the default up to a third of
 * its speed.
 * An explicit thread count (tg_set_threads(n), n > 0) is used as given.
 * The default's T is OMP_NUM_THREADS when set, else all cores.
 * Results do not depend on the thread count, so neither do they on this
 * choice. */
#include "parallel.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

#ifdef TG_HAVE_OPENMP
#include <omp.h>
#endif

static atomic_int threads_set; /* tg_set_threads: 0 = the default, adaptive */

void tg_set_threads(int n) { atomic_store(&threads_set, n > 0 ? n : 0); }

#ifdef TG_HAVE_OPENMP
/* The default count: OMP_NUM_THREADS (its first value, as OpenMP reads a
 * list) when the environment sets it to a positive number, else every core
 * the process may run on. Read once, so the count (and with it the arena's
 * per-thread scratch) stays put for the whole run. */
static int default_threads(void)
{
    static atomic_int cached;
    int n = atomic_load(&cached);
    if (n > 0)
        return n;
    n = omp_get_num_procs();
    const char *env = getenv("OMP_NUM_THREADS");
    if (env) {
        char *end;
        errno = 0;
        long v = strtol(env, &end, 10);
        while (*end == ' ' || *end == '\t')
            end++;
        if (end != env && (*end == '\0' || *end == ',') && errno == 0 &&
            v > 0 && v <= 4096)
            n = (int)v;
    }
    atomic_store(&cached, n);
    return n;
}
#endif

int tg_get_threads(void)
{
    int n = atomic_load(&threads_set);
#ifdef TG_HAVE_OPENMP
    return n > 0 ? n : default_threads();
#else
    (void)n;
    return 1;
#endif
}

enum {
    WINDOW_NS = 5000000,       /* region time judged at once */
    BACKOFF_MIN_NS = 50000000, /* first retry of T threads */
    BACKOFF_GROWTH = 4,        /* per failed try of T threads */
    LONG_RUN_NS = 1000000000,  /* T threads held this long: trust again */
    STEADY_FAILS = 2           /* failed windows in a row once past a probe */
};
/* Longest stay on one thread: each failed try costs about one stalled
 * region (a time slice of the other program; 5-70 ms measured). */
#define BACKOFF_MAX_NS INT64_C(8000000000)
#define MIN_SPEEDUP 1.1

static struct {
    atomic_int serial;          /* 1: regions run on one thread */
    _Atomic int64_t next_probe; /* when serial: time to try T threads */
    pthread_mutex_t lock;       /* the fields below */
    int64_t since;              /* when T threads were last taken up */
    int64_t backoff;
    double win_wall, win_serial; /* ns in the current window */
    bool probing; /* judging the first window since T threads were taken */
    int failed;   /* windows in a row without the speedup */
} ctl = {.lock = PTHREAD_MUTEX_INITIALIZER,
         .backoff = BACKOFF_MIN_NS,
         .probing = true};

int64_t tg_par_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int tg_par_threads(void)
{
    int n = tg_get_threads();
    if (n > 1 && atomic_load(&threads_set) == 0 &&
        atomic_load_explicit(&ctl.serial, memory_order_relaxed))
        return 1;
    return n;
}

int tg_par_begin(tg_par_region *r, int want)
{
    r->threads = want;
    r->t0 = 0;
    if (want <= 1 || atomic_load(&threads_set) != 0)
        return want;
    int64_t now = tg_par_now_ns();
    if (atomic_load(&ctl.serial)) {
        if (now < atomic_load(&ctl.next_probe)) {
            r->threads = 1;
            return 1;
        }
        int expect = 1;
        if (atomic_compare_exchange_strong(&ctl.serial, &expect, 0)) {
            pthread_mutex_lock(&ctl.lock);
            ctl.since = now;
            ctl.win_wall = ctl.win_serial = 0;
            ctl.probing = true;
            ctl.failed = 0;
            pthread_mutex_unlock(&ctl.lock);
        }
    }
    r->t0 = now;
    return want;
}

void tg_par_end(const tg_par_region *r, int64_t serial_ns)
{
    if (r->t0 == 0 || r->threads <= 1)
        return;
    int64_t now = tg_par_now_ns();
    pthread_mutex_lock(&ctl.lock);
    ctl.win_wall += (double)(now - r->t0);
    ctl.win_serial += (double)serial_ns;
    if (ctl.win_wall >= WINDOW_NS) {
        bool failed = ctl.win_serial < MIN_SPEEDUP * ctl.win_wall;
        ctl.failed = failed ? ctl.failed + 1 : 0;
        if (failed && (ctl.probing || ctl.failed >= STEADY_FAILS)) {
            int64_t b = ctl.backoff * BACKOFF_GROWTH;
            ctl.backoff = now - ctl.since >= LONG_RUN_NS ? BACKOFF_MIN_NS
                          : b < BACKOFF_MAX_NS           ? b
                                                         : BACKOFF_MAX_NS;
            atomic_store(&ctl.next_probe, now + ctl.backoff);
            atomic_store(&ctl.serial, 1);
        }
        ctl.win_wall = ctl.win_serial = 0;
        ctl.probing = false;
    }
    pthread_mutex_unlock(&ctl.lock);
}

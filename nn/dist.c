/* Data-parallel training over MPI: see tg_dist.h. Without MPI (TG_HAVE_MPI
 * undefined) every call is the single-process case: rank 0 of 1. */
#include "tg_dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tg_config.h"

#ifdef TG_HAVE_MPI
#include <mpi.h>
#endif

static struct {
    bool active; /* MPI_Init was called here and MPI_Finalize not yet */
    int rank, size, local_rank, local_size;
    int first_failed;
    double allreduce_s;
} dist = {.size = 1, .local_size = 1};

bool tg_dist_available(void)
{
#ifdef TG_HAVE_MPI
    return true;
#else
    return false;
#endif
}

int tg_dist_rank(void) { return dist.rank; }
int tg_dist_size(void) { return dist.size; }
int tg_dist_local_rank(void) { return dist.local_rank; }
int tg_dist_local_size(void) { return dist.local_size; }
double tg_dist_allreduce_seconds(void) { return dist.allreduce_s; }
int tg_dist_first_failed(void) { return dist.first_failed; }

int tg_dist_default_threads(void)
{
    if (dist.local_size <= 1)
        return 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long per_rank = cores / dist.local_size;
    return per_rank >= 1 ? (int)per_rank : 1;
}

/* rank r of N takes rows [r * n / N, (r + 1) * n / N): the shares differ by
 * at most one row and cover the batch in order. */
int tg_dist_share(int n, int *first)
{
    if (n < 0)
        tg_fatal("dist_share", "negative batch size %d", n);
    int64_t lo = (int64_t)dist.rank * n / dist.size;
    int64_t hi = (int64_t)(dist.rank + 1) * n / dist.size;
    if (first)
        *first = (int)lo;
    return (int)(hi - lo);
}

#ifdef TG_HAVE_MPI

/* Started by a launcher (mpirun, srun with PMI/PMIx)? A plain run never
 * touches MPI, so it behaves exactly as a build without it. */
static bool launched(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                 "PMI_SIZE", "PMI_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

static void check(int rc, const char *op)
{
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        tg_fatal(op, "MPI error: %s", msg);
    }
}

void tg_dist_init(int *argc, char ***argv)
{
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited || !launched())
        return;
    /* Only the main thread calls MPI; OpenMP threads only compute. */
    int provided;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided),
          "dist_init");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    dist.active = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist.size);
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, dist.rank,
                              MPI_INFO_NULL, &local),
          "dist_init");
    MPI_Comm_rank(local, &dist.local_rank);
    MPI_Comm_size(local, &dist.local_size);
    MPI_Comm_free(&local);
}

void tg_dist_finalize(void)
{
    if (!dist.active)
        return;
    dist.active = false;
    MPI_Finalize();
}

void tg_dist_abort(int code)
{
    if (dist.active && dist.size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    tg_dist_finalize();
    exit(code);
}

/* MPI counts are int: larger buffers go in pieces of at most 2^30. */
enum { CHUNK = 1 << 30 };

static void sum_floats(float *x, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i += CHUNK) {
        int count = (int)(n - i < CHUNK ? n - i : CHUNK);
        check(MPI_Allreduce(MPI_IN_PLACE, x + i, count, MPI_FLOAT, MPI_SUM,
                            MPI_COMM_WORLD),
              op);
    }
}

static void bcast_floats(float *x, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i += CHUNK) {
        int count = (int)(n - i < CHUNK ? n - i : CHUNK);
        check(MPI_Bcast(x + i, count, MPI_FLOAT, 0, MPI_COMM_WORLD), op);
    }
}

void tg_dist_allreduce_grads(tg_params *ps)
{
    if (dist.size == 1)
        return;
    double t0 = MPI_Wtime();
    sum_floats(tg_params_grad(ps), tg_params_numel(ps), "dist_allreduce_grads");
    dist.allreduce_s += MPI_Wtime() - t0;
}

void tg_dist_broadcast(tg_params *ps, tg_optim *opt)
{
    if (dist.size == 1)
        return;
    size_t n = tg_params_numel(ps);
    bcast_floats(tg_params_data(ps), n, "dist_broadcast");
    if (!opt)
        return;
    if (opt->params != ps)
        tg_fatal("dist_broadcast", "optimizer of another parameter set");
    bcast_floats(opt->m, n, "dist_broadcast");
    if (opt->v)
        bcast_floats(opt->v, n, "dist_broadcast");
    tg_dist_broadcast_i64(&opt->step, 1);
}

void tg_dist_broadcast_i64(int64_t *x, int n)
{
    if (dist.size > 1)
        check(MPI_Bcast(x, n, MPI_INT64_T, 0, MPI_COMM_WORLD),
              "dist_broadcast_i64");
}

void tg_dist_sum(double *x, int n)
{
    if (dist.size > 1)
        check(MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM,
                            MPI_COMM_WORLD),
              "dist_sum");
}

/* Each rank sends its rank when it failed and size when not: the minimum is
 * the lowest failing rank, or size when none failed. */
bool tg_dist_all_ok(bool ok)
{
    if (dist.size == 1) {
        dist.first_failed = ok ? 1 : 0;
        return ok;
    }
    int mine = ok ? dist.size : dist.rank, lowest;
    check(MPI_Allreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD),
          "dist_all_ok");
    dist.first_failed = lowest;
    return lowest == dist.size;
}

#else /* single process */

void tg_dist_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
}

void tg_dist_finalize(void) {}

void tg_dist_abort(int code) { exit(code); }

void tg_dist_allreduce_grads(tg_params *ps) { (void)ps; }

void tg_dist_broadcast(tg_params *ps, tg_optim *opt)
{
    (void)ps;
    (void)opt;
}

void tg_dist_broadcast_i64(int64_t *x, int n)
{
    (void)x;
    (void)n;
}

void tg_dist_sum(double *x, int n)
{
    (void)x;
    (void)n;
}

bool tg_dist_all_ok(bool ok)
{
    dist.first_failed = ok ? 1 : 0;
    return ok;
}

#endif

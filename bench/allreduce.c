/* allreduce: time of one in-place MPI_Allreduce (sum, float32) of a
 * gradient-sized buffer, the communication of one data-parallel step, next
 * to the ring model 2(N-1)/N * bytes / bandwidth + 2(N-1) * latency.
 *
 *   mpirun -np 2 --bind-to none build/bench/allreduce [floats ...]
 *
 * Default sizes: 1 float (latency), the MLP example's 203,530, the VAE's
 * 652,824 and ten times that. Rank 0 prints the median of 50 timed calls
 * after 5 warm-up calls, and the bus bandwidth 2(N-1)/N * bytes / time. */
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_cli.h"

enum { WARMUP = 5, REPS = 50 };

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of REPS in-place all-reduces of n floats. */
static double time_allreduce(float *buf, int n)
{
    double t[REPS];
    for (int r = 0; r < WARMUP + REPS; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double dt = MPI_Wtime() - t0;
        /* the slowest rank's time is the step's */
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX,
                      MPI_COMM_WORLD);
        if (r >= WARMUP)
            t[r - WARMUP] = dt;
    }
    qsort(t, REPS, sizeof t[0], cmp_double);
    return t[REPS / 2];
}

static const char usage[] =
    "usage: mpirun -np N allreduce [FLOATS ...]\n"
    "Median time of an in-place MPI_Allreduce (sum, float32) of each size\n"
    "(default 1 203530 652824 6528240 floats; at most 16 sizes) and the bus\n"
    "bandwidth 2(N-1)/N * bytes / time.\n";

int main(int argc, char **argv)
{
    /* Flags before MPI_Init, so that --help and typos need no launcher;
     * under mpirun only the first rank prints. */
    const char *r = getenv("OMPI_COMM_WORLD_RANK");
    bool quiet = r && strcmp(r, "0") != 0;
    long sizes[16] = {1, 203530, 652824, 6528240};
    int n_sizes = argc > 1 ? 0 : 4;
    for (int i = 1; i < argc; i++) {
        if (bench_is_help(argv[i])) {
            if (!quiet)
                fputs(usage, stdout);
            return 0;
        }
        if (n_sizes == 16) {
            if (!quiet)
                fprintf(stderr, "allreduce: at most 16 sizes (try --help)\n");
            return 2;
        }
        if (argv[i][0] == '-') {
            if (!quiet)
                fprintf(stderr, "allreduce: unknown option '%s' (try --help)\n",
                        argv[i]);
            return 2;
        }
        char *end;
        long v = strtol(argv[i], &end, 10);
        if (end == argv[i] || *end != '\0' || v < 1 || v > (1L << 30)) {
            if (!quiet)
                fprintf(stderr,
                        "allreduce: '%s' is not a size in 1..2^30 (try "
                        "--help)\n",
                        argv[i]);
            return 2;
        }
        sizes[n_sizes++] = v;
    }
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0)
        printf("%d ranks\n%12s %12s %12s %14s\n", size, "floats", "bytes",
               "median us", "bus GB/s");
    for (int i = 0; i < n_sizes; i++) {
        float *buf = calloc((size_t)sizes[i], sizeof(float));
        if (!buf) {
            fprintf(stderr, "allreduce: out of memory\n");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        double t = time_allreduce(buf, (int)sizes[i]);
        double bytes = 4.0 * (double)sizes[i];
        if (rank == 0)
            printf("%12ld %12.0f %12.1f %14.2f\n", sizes[i], bytes, 1e6 * t,
                   size > 1 ? 2.0 * (size - 1) / size * bytes / t / 1e9 : 0.0);
        free(buf);
    }
    MPI_Finalize();
    return 0;
}

/* Data-parallel training over MPI, the job (see tg_dist.h): who this process
 * is (rank, size, its node's ranks, the launcher's word), joining the job with
 * its checks (one job, one program of one build), leaving it (finalize, abort).
 * The collectives under a deadline are dist_collectives.c, the shards of a
 * batch dist_shards.c. Without MPI (TG_HAVE_MPI undefined) every call is the
 * single-process case: rank 0 of 1. */
#include "tg_dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist_shards.h"
#include "tg_build_id.h"
#include "tg_config.h"
#include "tg_version.h"

#ifdef TG_HAVE_MPI
#include <mpi.h>
#endif
/* The job (its fields in dist_shards.h): rank 0 of 1 until tg_dist_init. */
struct dist_job dist_state = {.size = 1, .local_size = 1, .prog = "tapegrad"};

void tg_dist_set_program_build(const char *id)
{
    snprintf(dist_state.program_build, sizeof dist_state.program_build, "%s",
             id ? id : "");
}

void tg_dist_set_timeout(double seconds)
{
    dist_state.timeout_s = seconds > 0 ? seconds : 0;
}

bool tg_dist_available(void)
{
#ifdef TG_HAVE_MPI
    return true;
#else
    return false;
#endif
}

int tg_dist_rank(void) { return dist_state.rank; }
int tg_dist_size(void) { return dist_state.size; }
int tg_dist_local_rank(void) { return dist_state.local_rank; }
int tg_dist_local_size(void) { return dist_state.local_size; }
double tg_dist_allreduce_seconds(void) { return dist_state.allreduce_s; }
int tg_dist_first_failed(void) { return dist_state.first_failed; }

int tg_dist_default_threads(void)
{
    if (dist_state.local_size <= 1)
        return 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long per_rank = cores / dist_state.local_size;
    return per_rank >= 1 ? (int)per_rank : 1;
}

int tg_dist_launcher_size(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                 "MPI_LOCALNRANKS", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v) > 0 ? atoi(v) : 1;
    }
    return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 1 : 0;
}

int tg_dist_launcher_rank(void)
{
    static const char *vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK",
                                 "PMIX_RANK"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v) > 0 ? atoi(v) : 0;
    }
    return 0;
}

void tg_dist_refusal_prefix(char *buf, size_t n)
{
    int rank = tg_dist_launcher_rank();
    struct timespec wait = {2, 0};
    if (rank > 0 && nanosleep(&wait, NULL) != 0)
        exit(2);
    if (rank > 0)
        snprintf(buf, n, "rank %d of", rank);
    else
        snprintf(buf, n, "one of");
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

void dist_check(int rc, const char *op)
{
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        tg_fatal(op, "MPI error: %s", msg);
    }
}

/* Every rank must run the same program of the same build: rank 0's
 * identity (program, version, commit), broadcast and compared by each
 * rank, is every job's first collective, in a form kept fixed (64 bytes),
 * so that a rank of another build or program stops here with one line
 * instead of meeting collectives that differ (a truncated message aborted
 * the job with a backtrace, or a rank running mlp_mnist was named as
 * stalled). */
static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static void same_build(void)
{
    enum { ID = 64 };
    char me[ID] = {0}, r0[ID], build[32];
    /* A program of another build than its library (LD_LIBRARY_PATH naming
     * another build's) had the library's identity, and trained with its
     * own code: the library's commit and a hash of both ids then (the
     * usual case, one build, keeps the form older builds compare) */
    const char *prog_id = dist_state.program_build;
    bool mixed = prog_id[0] && strcmp(prog_id, TG_BUILD_ID) != 0;
    if (mixed) {
        /* the library's whole id in the hash: its first 12 characters
         * are the commit alone, and libraries of one commit with different
         * changes ("-dirty+<hash>") under one program had passed as one */
        char both[128];
        snprintf(both, sizeof both, "%s\n%s", TG_BUILD_ID, prog_id);
        snprintf(build, sizeof build, "%.12s~%08x", TG_BUILD_ID,
                 (unsigned)fnv1a(both));
    } else {
        snprintf(build, sizeof build, "%.29s", TG_BUILD_ID);
    }
    /* a name past 20 characters as its first 11 and a hash of it all:
     * "train_model_version_1" and "..._2" had passed as one program */
    char name[24];
    if (strlen(dist_state.prog) > 20)
        snprintf(name, sizeof name, "%.11s~%08x", dist_state.prog,
                 (unsigned)fnv1a(dist_state.prog));
    else
        snprintf(name, sizeof name, "%s", dist_state.prog);
    snprintf(me, sizeof me, "%.20s %.10s (%.29s)", name, TG_VERSION, build);
    memcpy(r0, me, ID);
    if (dist_state.size < 2)
        return;
    int rc = MPI_Bcast(r0, ID, MPI_CHAR, 0, MPI_COMM_WORLD);
    r0[ID - 1] = '\0';
    int bad = rc != MPI_SUCCESS || strcmp(me, r0) != 0;
    int mine = bad ? dist_state.rank : dist_state.size, first = dist_state.size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) !=
        MPI_SUCCESS)
        first = bad ? dist_state.rank : 0;
    if (first == dist_state.size)
        return;
    if (first == dist_state.rank && mixed)
        fprintf(stderr,
                "%s: rank %d runs %s (its program built from %.40s, its "
                "library from %.29s: LD_LIBRARY_PATH?) but rank 0 runs %s: "
                "every rank must run the same program of the same build; "
                "stopped\n",
                dist_state.prog, dist_state.rank, me, prog_id, TG_BUILD_ID,
                rc == MPI_SUCCESS ? r0 : "another");
    else if (first == dist_state.rank)
        fprintf(stderr,
                "%s: rank %d runs %s but rank 0 runs %s%s: every rank must "
                "run the same program of the same build; stopped\n",
                dist_state.prog, dist_state.rank, me,
                rc == MPI_SUCCESS ? r0 : "another",
                rc == MPI_SUCCESS && strrchr(r0, '(') &&
                        strchr(strrchr(r0, '('), '~')
                    ? " (a program of another build than its library, the "
                      "id's part after '~': LD_LIBRARY_PATH?)"
                    : "");
    fflush(stderr);
    dist_state.active = false;
    MPI_Finalize();
    exit(2);
}

/* A launcher that says N > 1 processes while MPI_Init found a job of one:
 * the launcher is another MPI library's (MPICH's mpiexec starting this
 * Open MPI build, or the other way round), so every process is a job of
 * its own. Each trained alone (one shard, another model than N ranks
 * train), all into the same folder, and exited 0. Refused as a build
 * without MPI refuses, before anything is read or written. */
static void singleton_of_many(void)
{
    int n = tg_dist_launcher_size();
    if (dist_state.size != 1 || n <= 1)
        return;
    char as[48], lib[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    tg_dist_refusal_prefix(as, sizeof as);
    if (MPI_Get_library_version(lib, &len) != MPI_SUCCESS)
        lib[0] = '\0';
    lib[strcspn(lib, ",\n")] = '\0';
    fprintf(stderr,
            "%s: started by an MPI launcher as %s %d processes, but MPI "
            "found a job of 1 (%.40s): the launcher is another MPI "
            "library's, and each would train alone into the same folder; "
            "start it with the mpirun of the MPI it was built with\n",
            dist_state.prog, as, n, lib[0] ? lib : "this build's MPI");
    fflush(stderr);
    dist_state.active = false;
    MPI_Finalize();
    exit(2);
}

void tg_dist_init(int *argc, char ***argv)
{
    if (argv && *argv && (*argv)[0]) {
        const char *slash = strrchr((*argv)[0], '/');
        snprintf(dist_state.prog, sizeof dist_state.prog, "%s",
                 slash ? slash + 1 : (*argv)[0]);
    }
    int inited = 0;
    MPI_Initialized(&inited);
    if (inited || !launched())
        return;
    /* Only the main thread calls MPI; OpenMP threads only compute. */
    int provided;
    dist_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided),
               "dist_init");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    dist_state.active = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_state.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_state.size);
    MPI_Comm local;
    dist_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED,
                                   dist_state.rank, MPI_INFO_NULL, &local),
               "dist_init");
    MPI_Comm_rank(local, &dist_state.local_rank);
    MPI_Comm_size(local, &dist_state.local_size);
    MPI_Comm_free(&local);
    singleton_of_many();
    same_build();
}

void tg_dist_finalize(void)
{
    tg_dist_shards_free_();
    if (!dist_state.active)
        return;
    /* MPI_Finalize waits for every rank, with no deadline: a rank stopped
     * after the last collective left the others there for ever. A barrier
     * first, under the timeout, names it; only a rank stopped between the
     * barrier and the end of MPI_Finalize is still waited for (by mpirun
     * too: no process of ours can end that wait). Whatever the timeout, so
     * that ranks started with different ones (0 on some, which the flags'
     * comparison stops) all pass it. */
    if (dist_state.size > 1) {
        MPI_Request req;
        dist_check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "dist_finalize");
        dist_timed_wait(&req, "dist_finalize");
    }
    dist_state.active = false;
    MPI_Finalize();
}

void tg_dist_abort(int code)
{
    if (dist_state.active && dist_state.size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    tg_dist_finalize();
    exit(code);
}

#else /* single process */

/* N copies of a program built without MPI would each train alone, all
 * writing to the same folder: refuse. Rank 0 says why, at once; a rank
 * r > 0 only when the job is still running 2 s on (mpirun ends a job one
 * of whose processes failed, and its signal ends the wait): rank 0 is then
 * not a copy of this build but, say, a build with MPI waiting in MPI_Init
 * (with rank 0 alone speaking, such a mixed job stopped without a word). */
void tg_dist_init(int *argc, char ***argv)
{
    (void)argc;
    int n = tg_dist_launcher_size();
    if (n > 1) {
        const char *prog =
            argv && *argv && (*argv)[0] ? (*argv)[0] : "tapegrad";
        const char *slash = strrchr(prog, '/');
        char as[48];
        tg_dist_refusal_prefix(as, sizeof as);
        fprintf(stderr,
                "%s: started by an MPI launcher as %s %d processes, but "
                "this build of tapegrad has no MPI: each would train alone "
                "into the same folder; rebuild with MPI (meson "
                "-Dmpi=enabled) or run without mpirun\n",
                slash ? slash + 1 : prog, as, n);
        exit(2);
    }
}

void tg_dist_finalize(void) { tg_dist_shards_free_(); }

void tg_dist_abort(int code) { exit(code); }

#endif

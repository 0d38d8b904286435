/* Data-parallel training over MPI: see tg_dist.h. Without MPI (TG_HAVE_MPI
 * undefined) every call is the single-process case: rank 0 of 1. */
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

static struct {
    bool active; /* MPI_Init was called here and MPI_Finalize not yet */
    int rank, size, local_rank, local_size;
    int first_failed;
    double allreduce_s;
    double timeout_s;       /* 0: wait forever */
    char prog[64];          /* for the timeout's message */
    char program_build[64]; /* tg_dist_set_program_build; "": not set */
} dist = {.size = 1, .local_size = 1, .prog = "tapegrad"};

void tg_dist_set_program_build(const char *id)
{
    snprintf(dist.program_build, sizeof dist.program_build, "%s", id ? id : "");
}

void tg_dist_set_timeout(double seconds)
{
    dist.timeout_s = seconds > 0 ? seconds : 0;
}

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

static void check(int rc, const char *op)
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
    const char *prog_id = dist.program_build;
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
    if (strlen(dist.prog) > 20)
        snprintf(name, sizeof name, "%.11s~%08x", dist.prog,
                 (unsigned)fnv1a(dist.prog));
    else
        snprintf(name, sizeof name, "%s", dist.prog);
    snprintf(me, sizeof me, "%.20s %.10s (%.29s)", name, TG_VERSION, build);
    memcpy(r0, me, ID);
    if (dist.size < 2)
        return;
    int rc = MPI_Bcast(r0, ID, MPI_CHAR, 0, MPI_COMM_WORLD);
    r0[ID - 1] = '\0';
    int bad = rc != MPI_SUCCESS || strcmp(me, r0) != 0;
    int mine = bad ? dist.rank : dist.size, first = dist.size;
    if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) !=
        MPI_SUCCESS)
        first = bad ? dist.rank : 0;
    if (first == dist.size)
        return;
    if (first == dist.rank && mixed)
        fprintf(stderr,
                "%s: rank %d runs %s (its program built from %.40s, its "
                "library from %.29s: LD_LIBRARY_PATH?) but rank 0 runs %s: "
                "every rank must run the same program of the same build; "
                "stopped\n",
                dist.prog, dist.rank, me, prog_id, TG_BUILD_ID,
                rc == MPI_SUCCESS ? r0 : "another");
    else if (first == dist.rank)
        fprintf(stderr,
                "%s: rank %d runs %s but rank 0 runs %s%s: every rank must "
                "run the same program of the same build; stopped\n",
                dist.prog, dist.rank, me, rc == MPI_SUCCESS ? r0 : "another",
                rc == MPI_SUCCESS && strrchr(r0, '(') &&
                        strchr(strrchr(r0, '('), '~')
                    ? " (a program of another build than its library, the "
                      "id's part after '~': LD_LIBRARY_PATH?)"
                    : "");
    fflush(stderr);
    dist.active = false;
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
    if (dist.size != 1 || n <= 1)
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
            dist.prog, as, n, lib[0] ? lib : "this build's MPI");
    fflush(stderr);
    dist.active = false;
    MPI_Finalize();
    exit(2);
}

void tg_dist_init(int *argc, char ***argv)
{
    if (argv && *argv && (*argv)[0]) {
        const char *slash = strrchr((*argv)[0], '/');
        snprintf(dist.prog, sizeof dist.prog, "%s",
                 slash ? slash + 1 : (*argv)[0]);
    }
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
    singleton_of_many();
    same_build();
}

/* The line naming a silent rank; stops the job (exit status 4). */
static void timed_out(const char *who)
{
    fprintf(stderr,
            "%s: rank %s did not answer within %g s (stalled or dead); "
            "stopping the job\n",
            dist.prog, who, dist.timeout_s);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 4);
}

static void timed_wait(MPI_Request *req, const char *op);

void tg_dist_finalize(void)
{
    tg_dist_shards_free_();
    if (!dist.active)
        return;
    /* MPI_Finalize waits for every rank, with no deadline: a rank stopped
     * after the last collective left the others there for ever. A barrier
     * first, under the timeout, names it; only a rank stopped between the
     * barrier and the end of MPI_Finalize is still waited for (by mpirun
     * too: no process of ours can end that wait). Whatever the timeout, so
     * that ranks started with different ones (0 on some, which the flags'
     * comparison stops) all pass it. */
    if (dist.size > 1) {
        MPI_Request req;
        check(MPI_Ibarrier(MPI_COMM_WORLD, &req), "dist_finalize");
        timed_wait(&req, "dist_finalize");
    }
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

static void bcast_floats(float *x, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i += CHUNK) {
        int count = (int)(n - i < CHUNK ? n - i : CHUNK);
        MPI_Request req;
        check(MPI_Ibcast(x + i, count, MPI_FLOAT, 0, MPI_COMM_WORLD, &req), op);
        timed_wait(&req, op);
    }
}

void tg_dist_allreduce_grads(tg_params *ps)
{
    if (dist.size > 1)
        tg_dist_reduce_shards_(ps, 1);
}

/* Seconds waited since *t0, the time this process did not run left out: a
 * gap of over a second between two polls is this rank stopped (SIGSTOP,
 * a debugger) or starved, not the others late. A rank stopped while it
 * waited, then continued by mpirun as it stops the job, blamed the rank it
 * waited for (a second message). */
static double waited_since(double *t0, double *last)
{
    double now = MPI_Wtime();
    if (now - *last > 1.0)
        *t0 += now - *last;
    *last = now;
    return now - *t0;
}

/* Who speaks first. A stalled rank leaves several waiting: in the chain
 * its neighbours, and behind them healthy ranks waiting on those, and in
 * a collective rank 0 (missing tokens from both). Each waits the timeout T
 * plus a grace that orders them, so that the line names the silent rank,
 * not a healthy one stuck behind it (or, at the broadcast's root, itself):
 * a chain wait on rank r, T + r seconds (the rank nearest the stall ends
 * its wait first, rank by rank down the chain); the broadcast's root,
 * T + N (it names the ranks whose receipt has not come); rank 0 in a
 * collective,
 * T + N + 3 (the chain has spoken by then, and its MPI_Abort had 4 s:
 * with 2 s, on a loaded machine rank 0 once named a healthy rank stuck in
 * the chain behind the silent one); rank r > 0 in a collective,
 * which names rank 0, 2T + N + 4 + 2r (rank 0 names another first, and
 * of the others one speaks, the others' lines cut short by its
 * MPI_Abort; on a loaded machine a second line may still come out, naming
 * the same rank). */
static double chain_deadline(void) { return dist.timeout_s + dist.rank; }

/* Waits for a point-to-point request with a peer, or for a broadcast; with
 * a timeout set, after deadline seconds the peer (who) is named and the
 * job stopped (exit status 4). */
static void peer_wait(MPI_Request *req, const char *who, double deadline,
                      const char *op)
{
    if (dist.timeout_s <= 0) {
        check(MPI_Wait(req, MPI_STATUS_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    for (;;) {
        int done = 0;
        check(MPI_Test(req, &done, MPI_STATUS_IGNORE), op);
        if (done)
            return;
        double waited = waited_since(&t0, &last);
        if (waited > deadline)
            timed_out(who);
        if (waited > 0.002) {
            struct timespec nap = {0, 200000}; /* 0.2 ms */
            nanosleep(&nap, NULL);
        }
    }
}

/* tags; pieces of 2 MB, so that with 3 or more ranks the chain pipelines */
enum { CHAIN = 7178, ACK = 7179, PIECE = 1 << 18, ACKED = 1024 };

/* The root's receipts of a broadcast: one ACK from each other rank (the
 * first ACKED ranks; beyond them a broadcast is waited for unnamed). */
typedef struct acks {
    int root, got[ACKED];
    MPI_Request req[ACKED];
} acks;

static void acks_post(acks *a, int root, const char *op)
{
    a->root = root;
    for (int r = 0; r < dist.size && r < ACKED; r++) {
        a->req[r] = MPI_REQUEST_NULL;
        if (r != root)
            check(MPI_Irecv(&a->got[r], 1, MPI_INT, r, ACK, MPI_COMM_WORLD,
                            &a->req[r]),
                  op);
    }
}

/* Waits for *bcast (the root's part of a broadcast), or with bcast NULL for
 * every ACK; past deadline, names the ranks whose ACK has not come. */
static void acks_wait(acks *a, MPI_Request *bcast, double deadline,
                      const char *op)
{
    int n = dist.size < ACKED ? dist.size : ACKED;
    if (dist.timeout_s <= 0) {
        if (bcast)
            check(MPI_Wait(bcast, MPI_STATUS_IGNORE), op);
        else
            check(MPI_Waitall(n, a->req, MPI_STATUSES_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    for (;;) {
        int done = 0;
        if (bcast)
            check(MPI_Test(bcast, &done, MPI_STATUS_IGNORE), op);
        else
            check(MPI_Testall(n, a->req, &done, MPI_STATUSES_IGNORE), op);
        if (done)
            return;
        if (waited_since(&t0, &last) > deadline) {
            char silent[256] = "";
            size_t at = 0;
            for (int r = 0; r < n && at < sizeof silent - 16; r++) {
                int arrived = 0; /* a request done tests true again */
                if (r != a->root)
                    MPI_Test(&a->req[r], &arrived, MPI_STATUS_IGNORE);
                if (r != a->root && !arrived)
                    at += (size_t)snprintf(silent + at, sizeof silent - at,
                                           "%s%d", at ? ", " : "", r);
            }
            timed_out(at ? silent : "other than the broadcast's root");
        }
        struct timespec nap = {0, 200000}; /* 0.2 ms */
        nanosleep(&nap, NULL);
    }
}

/* The sum in shard order: rank 0 starts it (its shards' sum, in acc), each
 * rank receives the sum so far from the rank before, adds its shards in
 * order and passes it on; the last rank rounds it to float and broadcasts
 * it. The additions are those one process makes, in the same order. */
void tg_dist_chain_shards_(float *g, double *acc, const float *stash, size_t n,
                           int count)
{
    double t0 = MPI_Wtime();
    int r = dist.rank, last = dist.size - 1;
    const char *op = "dist_reduce_grads";
    char before[16], after[16], root[16];
    snprintf(before, sizeof before, "%d", r - 1);
    snprintf(after, sizeof after, "%d", r + 1);
    snprintf(root, sizeof root, "%d", last);
    double root_deadline =
        r != last ? chain_deadline() : dist.timeout_s + dist.size;
    if (r == 0) {
        if (count == 0)
            memset(acc, 0, n * sizeof(double));
        else if (count == 1)
            for (size_t i = 0; i < n; i++)
                acc[i] = g[i];
    }
    for (size_t i = 0; i < n; i += PIECE) {
        int m = (int)(n - i < PIECE ? n - i : PIECE);
        MPI_Request req;
        if (r > 0) {
            check(MPI_Irecv(acc + i, m, MPI_DOUBLE, r - 1, CHAIN,
                            MPI_COMM_WORLD, &req),
                  op);
            peer_wait(&req, before, chain_deadline(), op);
            for (int j = 0; j < count; j++) {
                const float *x = count == 1 ? g : stash + (size_t)j * n;
                for (size_t k = i; k < i + (size_t)m; k++)
                    acc[k] += x[k];
            }
        }
        if (r < last) {
            check(MPI_Isend(acc + i, m, MPI_DOUBLE, r + 1, CHAIN,
                            MPI_COMM_WORLD, &req),
                  op);
            peer_wait(&req, after, chain_deadline(), op);
        } else {
            for (size_t k = i; k < i + (size_t)m; k++)
                g[k] = (float)acc[k];
        }
    }
    /* The sum, broadcast from the last rank. Each other rank then tells
     * it so (an ACK): the root, for which a broadcast can be done once
     * sent, names the ranks that never said so, not "one of them". */
    acks ack;
    if (r == last)
        acks_post(&ack, last, op);
    for (size_t i = 0; i < n; i += CHUNK) {
        int m = (int)(n - i < CHUNK ? n - i : CHUNK);
        MPI_Request req;
        check(MPI_Ibcast(g + i, m, MPI_FLOAT, last, MPI_COMM_WORLD, &req), op);
        if (r == last)
            acks_wait(&ack, &req, root_deadline, op);
        else
            peer_wait(&req, root, root_deadline, op);
    }
    if (r == last) {
        acks_wait(&ack, NULL, root_deadline, op);
    } else {
        int one = 1;
        MPI_Request req;
        check(MPI_Isend(&one, 1, MPI_INT, last, ACK, MPI_COMM_WORLD, &req), op);
        peer_wait(&req, root, root_deadline, op);
    }
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
    if (dist.size == 1)
        return;
    MPI_Request req;
    check(MPI_Ibcast(x, n, MPI_INT64_T, 0, MPI_COMM_WORLD, &req),
          "dist_broadcast_i64");
    timed_wait(&req, "dist_broadcast_i64");
}

/* A collective started as *req, waited for with a deadline when a timeout
 * is set: every rank > 0 first sends rank 0 a token (tag TOKEN), so on
 * timeout rank 0 names the ranks whose token never came (stalled or dead
 * before this collective); a rank > 0 waits longer (chain_deadline's
 * comment), leaving rank 0 time to say so, then names rank 0. Both stop the
 * job. Rank 0 waits for the tokens too, under the same deadline: a broadcast it
 * roots is done as soon as it is sent, and a rank stopped before it was found
 * only at a later collective, or, when it was the last, never. The tokens
 * go whatever the timeout, so ranks started with different --rank-timeout
 * values (0 on some) still agree on the messages until the flags are
 * compared. After the first 2 ms the wait sleeps between polls instead of
 * spinning. */
enum { TOKEN = 7177, WATCHED = 1024 };

static void timed_wait(MPI_Request *req, const char *op)
{
    int n = dist.size, token = 1, got[WATCHED] = {0};
    int watched = n < WATCHED ? n : WATCHED;
    MPI_Request tokens[WATCHED], sent = MPI_REQUEST_NULL;
    if (dist.rank == 0)
        for (int r = 1; r < watched; r++)
            check(MPI_Irecv(&got[r], 1, MPI_INT, r, TOKEN, MPI_COMM_WORLD,
                            &tokens[r]),
                  op);
    else if (dist.rank < watched)
        check(MPI_Isend(&token, 1, MPI_INT, 0, TOKEN, MPI_COMM_WORLD, &sent),
              op);
    int others = dist.rank == 0 ? watched - 1 : 1;
    MPI_Request *theirs = dist.rank == 0 ? tokens + 1 : &sent;
    if (dist.timeout_s <= 0) {
        check(MPI_Wait(req, MPI_STATUS_IGNORE), op);
        check(MPI_Waitall(others, theirs, MPI_STATUSES_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    int done = 0, all_tokens = 0;
    for (;;) {
        if (!done)
            check(MPI_Test(req, &done, MPI_STATUS_IGNORE), op);
        if (!all_tokens)
            check(MPI_Testall(others, theirs, &all_tokens, MPI_STATUSES_IGNORE),
                  op);
        if (done && all_tokens)
            return;
        double waited = waited_since(&t0, &last);
        if (dist.rank == 0 && waited > dist.timeout_s + n + 3) {
            char silent[256] = "";
            size_t at = 0;
            for (int r = 1; r < watched && at < sizeof silent - 16; r++) {
                int arrived = 0; /* a token already in tests true again */
                MPI_Test(&tokens[r], &arrived, MPI_STATUS_IGNORE);
                if (!arrived)
                    at += (size_t)snprintf(silent + at, sizeof silent - at,
                                           "%s%d", at ? ", " : "", r);
            }
            if (!at) /* all reached this collective: one stalled in it */
                snprintf(silent, sizeof silent, n == 2 ? "1" : "among 1..%d",
                         n - 1);
            timed_out(silent);
        }
        if (dist.rank != 0 &&
            waited > 2 * dist.timeout_s + n + 4 + 2 * dist.rank)
            timed_out("0");
        if (waited > 0.002) { /* spin briefly, as MPI_Wait does, then nap */
            struct timespec nap = {0, 200000}; /* 0.2 ms */
            nanosleep(&nap, NULL);
        }
    }
}

void tg_dist_sum(double *x, int n)
{
    if (dist.size == 1)
        return;
    MPI_Request req;
    check(MPI_Iallreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM,
                         MPI_COMM_WORLD, &req),
          "dist_sum");
    timed_wait(&req, "dist_sum");
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
    MPI_Request req;
    check(MPI_Iallreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD,
                         &req),
          "dist_all_ok");
    timed_wait(&req, "dist_all_ok");
    dist.first_failed = lowest;
    return lowest == dist.size;
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

bool tg_dist_same(const char *value, char rank0[TG_DIST_SAME_MAX])
{
    char mine[TG_DIST_SAME_MAX];
    snprintf(mine, sizeof mine, "%s", value);
    snprintf(rank0, TG_DIST_SAME_MAX, "%s", mine);
    if (tg_dist_size() == 1)
        return tg_dist_all_ok(true);
    /* rank 0's text, as integers (TG_DIST_SAME_MAX is a multiple of 8) */
    int64_t words[TG_DIST_SAME_MAX / 8];
    memcpy(words, mine, sizeof words);
    tg_dist_broadcast_i64(words, TG_DIST_SAME_MAX / 8);
    memcpy(rank0, words, TG_DIST_SAME_MAX);
    rank0[TG_DIST_SAME_MAX - 1] = '\0';
    return tg_dist_all_ok(strcmp(mine, rank0) == 0);
}

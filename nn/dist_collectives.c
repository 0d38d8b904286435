/* Data-parallel training over MPI, the collectives (see tg_dist.h): the
 * broadcasts, sums and agreement every rank calls, and the chain that sums the
 * ranks' shards in shard order, each waited for under the job's timeout so that
 * a stalled or dead rank is named and the job stopped (exit status 4) instead
 * of hanging. Joining and leaving the job is dist.c. Without MPI every call is
 * the single-process case. */
#include "tg_dist.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "dist_shards.h"
#include "tg_config.h"

#ifdef TG_HAVE_MPI

/* The line naming a silent rank; stops the job (exit status 4). */
static void timed_out(const char *who)
{
    fprintf(stderr,
            "%s: rank %s did not answer within %g s (stalled or dead); "
            "stopping the job\n",
            dist_state.prog, who, dist_state.timeout_s);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 4);
}

/* MPI counts are int: larger buffers go in pieces of at most 2^30. */
enum { CHUNK = 1 << 30 };

static void bcast_floats(float *x, size_t n, const char *op)
{
    for (size_t i = 0; i < n; i += CHUNK) {
        int count = (int)(n - i < CHUNK ? n - i : CHUNK);
        MPI_Request req;
        dist_check(MPI_Ibcast(x + i, count, MPI_FLOAT, 0, MPI_COMM_WORLD, &req),
                   op);
        dist_timed_wait(&req, op);
    }
}

void tg_dist_allreduce_grads(tg_params *ps)
{
    if (dist_state.size > 1)
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
static double chain_deadline(void)
{
    return dist_state.timeout_s + dist_state.rank;
}

/* Waits for a point-to-point request with a peer, or for a broadcast; with
 * a timeout set, after deadline seconds the peer (who) is named and the
 * job stopped (exit status 4). */
static void peer_wait(MPI_Request *req, const char *who, double deadline,
                      const char *op)
{
    if (dist_state.timeout_s <= 0) {
        dist_check(MPI_Wait(req, MPI_STATUS_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    for (;;) {
        int done = 0;
        dist_check(MPI_Test(req, &done, MPI_STATUS_IGNORE), op);
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
    for (int r = 0; r < dist_state.size && r < ACKED; r++) {
        a->req[r] = MPI_REQUEST_NULL;
        if (r != root)
            dist_check(MPI_Irecv(&a->got[r], 1, MPI_INT, r, ACK, MPI_COMM_WORLD,
                                 &a->req[r]),
                       op);
    }
}

/* Waits for *bcast (the root's part of a broadcast), or with bcast NULL for
 * every ACK; past deadline, names the ranks whose ACK has not come. */
static void acks_wait(acks *a, MPI_Request *bcast, double deadline,
                      const char *op)
{
    int n = dist_state.size < ACKED ? dist_state.size : ACKED;
    if (dist_state.timeout_s <= 0) {
        if (bcast)
            dist_check(MPI_Wait(bcast, MPI_STATUS_IGNORE), op);
        else
            dist_check(MPI_Waitall(n, a->req, MPI_STATUSES_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    for (;;) {
        int done = 0;
        if (bcast)
            dist_check(MPI_Test(bcast, &done, MPI_STATUS_IGNORE), op);
        else
            dist_check(MPI_Testall(n, a->req, &done, MPI_STATUSES_IGNORE), op);
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
    int r = dist_state.rank, last = dist_state.size - 1;
    const char *op = "dist_reduce_grads";
    char before[16], after[16], root[16];
    snprintf(before, sizeof before, "%d", r - 1);
    snprintf(after, sizeof after, "%d", r + 1);
    snprintf(root, sizeof root, "%d", last);
    double root_deadline =
        r != last ? chain_deadline() : dist_state.timeout_s + dist_state.size;
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
            dist_check(MPI_Irecv(acc + i, m, MPI_DOUBLE, r - 1, CHAIN,
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
            dist_check(MPI_Isend(acc + i, m, MPI_DOUBLE, r + 1, CHAIN,
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
        dist_check(MPI_Ibcast(g + i, m, MPI_FLOAT, last, MPI_COMM_WORLD, &req),
                   op);
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
        dist_check(MPI_Isend(&one, 1, MPI_INT, last, ACK, MPI_COMM_WORLD, &req),
                   op);
        peer_wait(&req, root, root_deadline, op);
    }
    dist_state.allreduce_s += MPI_Wtime() - t0;
}

void tg_dist_broadcast(tg_params *ps, tg_optim *opt)
{
    if (dist_state.size == 1)
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
    if (dist_state.size == 1)
        return;
    MPI_Request req;
    dist_check(MPI_Ibcast(x, n, MPI_INT64_T, 0, MPI_COMM_WORLD, &req),
               "dist_broadcast_i64");
    dist_timed_wait(&req, "dist_broadcast_i64");
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

void dist_timed_wait(MPI_Request *req, const char *op)
{
    int n = dist_state.size, token = 1, got[WATCHED] = {0};
    int watched = n < WATCHED ? n : WATCHED;
    MPI_Request tokens[WATCHED], sent = MPI_REQUEST_NULL;
    if (dist_state.rank == 0)
        for (int r = 1; r < watched; r++)
            dist_check(MPI_Irecv(&got[r], 1, MPI_INT, r, TOKEN, MPI_COMM_WORLD,
                                 &tokens[r]),
                       op);
    else if (dist_state.rank < watched)
        dist_check(
            MPI_Isend(&token, 1, MPI_INT, 0, TOKEN, MPI_COMM_WORLD, &sent), op);
    int others = dist_state.rank == 0 ? watched - 1 : 1;
    MPI_Request *theirs = dist_state.rank == 0 ? tokens + 1 : &sent;
    if (dist_state.timeout_s <= 0) {
        dist_check(MPI_Wait(req, MPI_STATUS_IGNORE), op);
        dist_check(MPI_Waitall(others, theirs, MPI_STATUSES_IGNORE), op);
        return;
    }
    double t0 = MPI_Wtime(), last = t0;
    int done = 0, all_tokens = 0;
    for (;;) {
        if (!done)
            dist_check(MPI_Test(req, &done, MPI_STATUS_IGNORE), op);
        if (!all_tokens)
            dist_check(
                MPI_Testall(others, theirs, &all_tokens, MPI_STATUSES_IGNORE),
                op);
        if (done && all_tokens)
            return;
        double waited = waited_since(&t0, &last);
        if (dist_state.rank == 0 && waited > dist_state.timeout_s + n + 3) {
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
        if (dist_state.rank != 0 &&
            waited > 2 * dist_state.timeout_s + n + 4 + 2 * dist_state.rank)
            timed_out("0");
        if (waited > 0.002) { /* spin briefly, as MPI_Wait does, then nap */
            struct timespec nap = {0, 200000}; /* 0.2 ms */
            nanosleep(&nap, NULL);
        }
    }
}

void tg_dist_sum(double *x, int n)
{
    if (dist_state.size == 1)
        return;
    MPI_Request req;
    dist_check(MPI_Iallreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM,
                              MPI_COMM_WORLD, &req),
               "dist_sum");
    dist_timed_wait(&req, "dist_sum");
}

/* Each rank sends its rank when it failed and size when not: the minimum is
 * the lowest failing rank, or size when none failed. */
bool tg_dist_all_ok(bool ok)
{
    if (dist_state.size == 1) {
        dist_state.first_failed = ok ? 1 : 0;
        return ok;
    }
    int mine = ok ? dist_state.size : dist_state.rank, lowest;
    MPI_Request req;
    dist_check(MPI_Iallreduce(&mine, &lowest, 1, MPI_INT, MPI_MIN,
                              MPI_COMM_WORLD, &req),
               "dist_all_ok");
    dist_timed_wait(&req, "dist_all_ok");
    dist_state.first_failed = lowest;
    return lowest == dist_state.size;
}

#else /* single process */

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
    dist_state.first_failed = ok ? 1 : 0;
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

/* The guarded data-parallel step: see tg_dist.h. Every value a decision is
 * taken on is the same on every rank (all-reduced sums, all-reduced
 * gradients, parameters kept identical), so the ranks decide alike without
 * more messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_shards.h"
#include "tg_dist.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The step between its first tg_step_shard and its tg_step_finish: its
 * guard (NULL: none) and the shard count it began with. dist_shards.c
 * keeps one step's sums and gradients, so another guard's step interleaved with
 * it (a GAN's two models, shard by shard) had summed the two models' losses and
 * gradients into each other without a word, and a shard count changed mid-step
 * had dropped the kept gradients. */
static struct {
    const tg_step_guard *guard;
    int shards;
} open_step;

/* Aborts naming op unless g may go on with a step over the current shard
 * count (s_shards, the tg_step's count of tg_step_shard calls, 0: the
 * step begins), then marks g's step open. */
static void step_open(const tg_step_guard *g, int s_shards, const char *op)
{
    bool begin = s_shards == 0;
    int shards = tg_dist_shards();
    if (open_step.guard && open_step.guard != g)
        tg_fatal(op, "another guard's step is under way (tg_step_shard called, "
                     "tg_step_finish not yet): finish one guard's step before "
                     "the next guard's first tg_step_shard");
    if (!begin && open_step.guard != g)
        tg_fatal(op,
                 "the tg_step counts %d tg_step_shard call%s, but none of "
                 "this step: a tg_step from a finished step (zero it, "
                 "tg_step s = {0}, for each step)",
                 s_shards, s_shards == 1 ? "" : "s");
    if (!begin && open_step.shards != shards)
        tg_fatal(op,
                 "the shard count changed from %d to %d during the step "
                 "(tg_dist_set_shards between its tg_step_shard calls)",
                 open_step.shards, shards);
    open_step.guard = g;
    open_step.shards = shards;
}

void tg_step_guard_init(tg_step_guard *g, tg_params *ps, tg_optim *opt,
                        const tg_step_config *cfg)
{
    if (!g || !ps)
        tg_fatal("step_guard_init", "NULL %s", g ? "parameter set" : "guard");
    if (opt && opt->params != ps)
        tg_fatal("step_guard_init", "optimizer of another parameter set");
    if (open_step.guard == g) /* a step left unfinished by a former guard */
        open_step.guard = NULL;
    memset(g, 0, sizeof *g);
    g->ps = ps;
    g->opt = opt;
    if (cfg)
        g->cfg = *cfg;
    if (g->cfg.diverge_steps <= 0)
        g->cfg.diverge_steps = 20;
    if (!(g->cfg.diverge_factor > 1.0))
        g->cfg.diverge_factor = 10.0;
    if (g->cfg.max_skipped_run <= 0)
        g->cfg.max_skipped_run = 10;
    if (g->cfg.max_skipped <= 0)
        g->cfg.max_skipped = 25;
    if (!(g->cfg.clip_norm >= 0.0f) || isinf(g->cfg.clip_norm))
        tg_fatal("step_guard_init",
                 "clip_norm %g must be finite and >= 0 (0: no clipping)",
                 (double)g->cfg.clip_norm);
    g->level = NAN;
}

bool tg_step_suspect(const tg_step_guard *g)
{
    if (!g)
        tg_fatal("step_suspect", "NULL guard");
    return g->above > 0 || g->skipped_run > 0;
}

static double divergence_limit(const tg_step_guard *g)
{
    return g->best + (g->cfg.diverge_factor - 1.0) * fmax(fabs(g->best), 1e-6);
}

bool tg_step_loss_far_above(const tg_step_guard *g, double loss)
{
    if (!g)
        tg_fatal("step_loss_far_above", "NULL guard");
    if (!isfinite(loss))
        return true;
    return !isnan(g->level) && loss > divergence_limit(g);
}

/* Records whether this step was skipped; true when the skip limits are
 * exceeded. */
static bool skip_limits(tg_step_guard *g, bool skipped)
{
    g->recent[g->steps % 100] = skipped;
    g->steps++;
    g->skipped_run = skipped ? g->skipped_run + 1 : 0;
    int in_window = 0;
    for (int i = 0; i < 100; i++)
        in_window += g->recent[i];
    return g->skipped_run >= g->cfg.max_skipped_run ||
           in_window > g->cfg.max_skipped;
}

/* The divergence test on the per-row loss m (finite). The level is a
 * running mean of the steps that were not above the limit; the limit is
 * taken from the lowest level seen, so a loss that blows up and settles
 * high (the level would follow it) still counts as diverged. */
static bool diverging(tg_step_guard *g, double m)
{
    if (isnan(g->level)) {
        g->level = g->best = m;
        return false;
    }
    if (m > divergence_limit(g)) {
        g->above++;
        return g->above >= g->cfg.diverge_steps;
    }
    g->above = 0;
    g->level += 0.05 * (m - g->level); /* about the last 20 steps */
    g->best = fmin(g->best, g->level);
    return false;
}

/* dist_shards.c's scratch holds, between tg_step_shard calls: index 0 the
 * non-finite flag, 1 the interrupted flag, then one slot of sums per shard
 * (each filled by the rank that holds the shard; the others' are zero). */
enum { NONFINITE, INTERRUPTED, SLOTS, WIDTH = 1 + TG_STEP_PARTS };

static void keep_sums(double *v, int shard, const tg_step *s)
{
    double *slot = v + SLOTS + (size_t)shard * WIDTH;
    if (!isfinite(s->loss))
        v[NONFINITE] = 1.0;
    slot[0] = isfinite(s->loss) ? s->loss : 0.0;
    memcpy(slot + 1, s->parts, sizeof s->parts);
}

void tg_step_shard(tg_step_guard *g, tg_step *s)
{
    if (!g || !s)
        tg_fatal("step_shard", "NULL %s", g ? "step" : "guard");
    step_open(g, s->shards, "step_shard");
    int first, count = tg_dist_my_shards(&first);
    if (s->shards >= count)
        tg_fatal("step_shard",
                 "call %d, but this rank holds %d of the batch's %d shards "
                 "(%d rank%s): one call per shard",
                 s->shards + 1, count, tg_dist_shards(), tg_dist_size(),
                 tg_dist_size() == 1 ? "" : "s");
    double *v = tg_dist_scratch_(SLOTS + (size_t)tg_dist_shards() * WIDTH,
                                 s->shards == 0);
    keep_sums(v, first + s->shards, s);
    tg_dist_keep_shard_(g->ps, s->shards, count);
    s->shards++;
    s->loss = 0.0;
    memset(s->parts, 0, sizeof s->parts);
}

void tg_step_finish(tg_step_guard *g, tg_step *s, int rows)
{
    if (!g || !s)
        tg_fatal("step_finish", "NULL %s", g ? "step" : "guard");
    if (rows < 0) /* the divergence test would be skipped without a word */
        tg_fatal("step_finish", "rows %d: the global batch's rows, >= 0", rows);
    step_open(g, s->shards, "step_finish");
    int first, count = tg_dist_my_shards(&first), nshards = tg_dist_shards();
    size_t n = SLOTS + (size_t)nshards * WIDTH;
    double *v;
    if (s->shards == 0) {
        /* the caller's sums and gradient are this rank's one shard */
        if (count > 1)
            tg_fatal("step_finish",
                     "this rank holds %d of the batch's %d shards (%d "
                     "rank%s): call tg_step_shard after each",
                     count, nshards, tg_dist_size(),
                     tg_dist_size() == 1 ? "" : "s");
        v = tg_dist_scratch_(n, true);
        if (count == 1)
            keep_sums(v, first, s);
    } else {
        if (s->shards != count)
            tg_fatal("step_finish",
                     "tg_step_shard was called %d time%s, but this rank "
                     "holds %d shards",
                     s->shards, s->shards == 1 ? "" : "s", count);
        v = tg_dist_scratch_(n, false);
    }
    v[INTERRUPTED] = s->interrupted ? 1.0 : 0.0;
    double t0 = now();
    tg_dist_sum(v, (int)n); /* waits for the slowest rank's compute */
    /* each slot came from one rank: the sum over ranks is exact, and the
     * sum over slots is taken in shard order, as one process takes it */
    s->loss_sum = 0.0;
    memset(s->part_sums, 0, sizeof s->part_sums);
    for (int k = 0; k < nshards; k++) {
        const double *slot = v + SLOTS + (size_t)k * WIDTH;
        s->loss_sum += slot[0];
        for (int p = 0; p < TG_STEP_PARTS; p++)
            s->part_sums[p] += slot[1 + p];
    }
    s->interrupted_any = v[INTERRUPTED] > 0.0;
    s->bad = s->why = NULL;
    s->verdict = TG_STEP_TAKEN;
    if (v[NONFINITE] > 0.0) {
        s->bad = "loss";
        s->why = "is not finite";
    } else {
        tg_dist_reduce_shards_(g->ps, count);
        s->bad = tg_params_nonfinite(g->ps, &s->why);
    }
    g->wait_s += now() - t0;
    open_step.guard = NULL; /* the sums are read: the next step may begin */
    bool skipped = s->bad != NULL;
    if (skipped)
        s->verdict =
            g->cfg.skip_nonfinite ? TG_STEP_SKIPPED : TG_STEP_NONFINITE;
    if (skip_limits(g, skipped) && s->verdict == TG_STEP_SKIPPED)
        s->verdict = TG_STEP_SKIPPED_TOO_OFTEN;
    if (!skipped && rows > 0 && diverging(g, s->loss_sum / rows))
        s->verdict = TG_STEP_DIVERGED;
    s->level = g->best;
    s->grad_norm = 0.0;
    if (s->verdict == TG_STEP_TAKEN && g->cfg.clip_norm > 0.0f)
        s->grad_norm = tg_clip_grad_norm(g->ps, g->cfg.clip_norm);
    if (g->opt) {
        if (s->verdict == TG_STEP_TAKEN)
            tg_optim_step(g->opt);
        tg_params_zero_grad(g->ps);
    }
}

/* "level best above skipped_run steps recent": the levels as C99 hex
 * floats (exact; nan before the first step), recent as 100 '0'/'1'. */
void tg_step_guard_save(const tg_step_guard *g, tg_meta *m)
{
    if (!g || !m)
        tg_fatal("step_guard_save", "NULL %s", g ? "metadata" : "guard");
    char recent[101], v[256];
    for (int i = 0; i < 100; i++)
        recent[i] = g->recent[i] ? '1' : '0';
    recent[100] = '\0';
    snprintf(v, sizeof v, "%a %a %d %d %lld %s", g->level, g->best, g->above,
             g->skipped_run, (long long)g->steps, recent);
    tg_meta_set(m, "guard", v);
}

tg_status tg_step_guard_restore(tg_step_guard *g, const tg_meta *m)
{
    if (!g || !m)
        return tg_error(TG_ERR_ARG, "step_guard_restore: NULL %s",
                        g ? "metadata" : "guard");
    const char *v = tg_meta_get(m, "guard");
    if (!v)
        return TG_OK;
    char *end;
    double level = strtod(v, &end), best;
    bool ok = end != v;
    if (ok) {
        const char *p = end;
        best = strtod(p, &end);
        ok = end != p;
    }
    long long above = -1, run = -1, steps = -1;
    char recent[101] = {0};
    int used = 0;
    ok = ok && sscanf(end, " %lld %lld %lld %100s%n", &above, &run, &steps,
                      recent, &used) == 4;
    ok = ok && end[used] == '\0' && strlen(recent) == 100 &&
         strspn(recent, "01") == 100 && above >= 0 && above < (1 << 30) &&
         run >= 0 && run < (1 << 30) && steps >= 0 &&
         steps < ((int64_t)1 << 62) && /* room to count on: no overflow */
         run <= steps &&               /* a run may outlast the window of 100 */
         (!isnan(level) || above == 0) && /* states the guard can reach */
         (isnan(level) ? !isinf(best)     /* no step yet: best unused */
                       : isfinite(level) && isfinite(best) && best <= level);
    /* the skip flags as skip_limits leaves them: the last 'run' set, the
     * one before clear, none past 'steps' (a crafted window of 100 skips
     * with run 0 stopped a resumed --skip-nonfinite run at its first
     * skip, "skipped too often", though it had skipped none) */
    long long written = steps < 100 ? steps : 100;
    for (long long k = 0; ok && k < written; k++) {
        char c = recent[(steps - 1 - k) % 100];
        ok = k < run ? c == '1' : k > run || c == '0';
    }
    for (long long i = written; ok && steps < 100 && i < 100; i++)
        ok = recent[i] == '0';
    if (!ok)
        return tg_error(TG_ERR_FORMAT,
                        "metadata 'guard' is '%.60s', not the step guard's "
                        "state (levels, counts, 100 skip flags)",
                        v);
    g->level = level;
    g->best = best;
    g->above = (int)above;
    g->skipped_run = (int)run;
    g->steps = steps;
    for (int i = 0; i < 100; i++)
        g->recent[i] = recent[i] == '1';
    return TG_OK;
}

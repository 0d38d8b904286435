/* Learning-rate schedules as pure functions of the step count: nothing to
 * save in a checkpoint beyond the optimizer's step. */
#include <math.h>

#include "tg_nn.h"

float tg_lr_step_decay(float base, int64_t step, int64_t step_size, float gamma)
{
    if (step < 0 || step_size < 1)
        tg_fatal("lr_step_decay",
                 "step %lld, step_size %lld (needs step >= 0 and "
                 "step_size >= 1)",
                 (long long)step, (long long)step_size);
    return (float)((double)base *
                   pow((double)gamma, (double)(step / step_size)));
}

float tg_lr_cosine_warmup(float base, int64_t step, int64_t warmup,
                          int64_t total, float min_lr)
{
    if (step < 0 || warmup < 0 || total <= warmup)
        tg_fatal("lr_cosine_warmup",
                 "step %lld, warmup %lld, total %lld (needs step >= 0, "
                 "0 <= warmup < total)",
                 (long long)step, (long long)warmup, (long long)total);
    if (step < warmup)
        return (float)((double)base * (double)(step + 1) / (double)warmup);
    if (step >= total)
        return min_lr;
    const double pi = 3.14159265358979323846;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    return (float)(min_lr +
                   ((double)base - min_lr) * 0.5 * (1.0 + cos(pi * progress)));
}

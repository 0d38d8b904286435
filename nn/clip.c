/* Global gradient-norm clipping over a parameter set's contiguous gradient
 * buffer. The squared norm is summed in double over CLIP_BLOCKS fixed
 * blocks (their bounds depend on the size only), the blocks run on the
 * library's threads and are added in index order: the same bits on any
 * thread count, no allocation. */
#include <math.h>

#include "parallel.h"
#include "tg_nn.h"

enum { CLIP_BLOCKS = 64 };

TG_VECTOR_CLONES
static double sum_squares(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

float tg_clip_grad_norm(tg_params *ps, float max_norm)
{
    if (!ps)
        tg_fatal("clip_grad_norm", "NULL parameter set");
    if (!(max_norm > 0.0f))
        tg_fatal("clip_grad_norm", "max_norm must be > 0, got %g",
                 (double)max_norm);
    float *grad = tg_params_grad(ps);
    size_t n = tg_params_numel(ps);
    size_t len = (n + CLIP_BLOCKS - 1) / CLIP_BLOCKS;
    double partial[CLIP_BLOCKS] = {0};
    TG_PARALLEL_FOR(n, 1)
    for (int k = 0; k < CLIP_BLOCKS; k++) {
        size_t begin = (size_t)k * len;
        if (begin < n)
            partial[k] =
                sum_squares(grad + begin, n - begin < len ? n - begin : len);
    }
    double total = 0.0;
    for (int k = 0; k < CLIP_BLOCKS; k++)
        total += partial[k];
    double norm = sqrt(total);
    /* finite as the float returned, or the caller sees an Inf norm with
     * the gradients scaled all the same; torch scales when max_norm /
     * (norm + 1e-6) < 1, so also a norm within 1e-6 below max_norm (a
     * norm of exactly max_norm was left as it was) */
    if (isfinite((float)norm) && norm + 1e-6 > (double)max_norm) {
        float scale = (float)((double)max_norm / (norm + 1e-6));
        TG_PARALLEL_FOR(n, 1)
        for (int k = 0; k < CLIP_BLOCKS; k++) {
            size_t begin = (size_t)k * len;
            size_t end = begin + len < n ? begin + len : n;
            for (size_t i = begin; i < end; i++)
                grad[i] *= scale;
        }
    }
    return (float)norm;
}

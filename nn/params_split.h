/* Private to nn: how a pass over a whole parameter set (the optimizers'
 * updates, zero_grad, the NaN guard's scan) splits it over threads.
 *
 * Thread t of T takes rows [rows * t / T, rows * (t + 1) / T) of every
 * tensor (its first dimension; a vector's elements), not a slice of the
 * contiguous buffer. A Dense layer's forward product and its weight
 * gradient split W's rows (output units) over threads the same way
 * (autograd/gemm.c), so each core keeps updating the rows it reads and
 * whose gradient it wrote: on the 2-core Zen 3 here, reading data the
 * other core wrote streams at a third of the speed of reading one's own
 * (16 against 45-65 GB/s), and Adam over the buffer's halves took 2-4x
 * longer inside the step than alone. Every pass is elementwise (or a max),
 * so the split changes no result. */
#ifndef TG_PARAMS_SPLIT_H
#define TG_PARAMS_SPLIT_H

#include <stddef.h>

#include "tg_nn.h"

enum { PARAMS_MAX_THREADS = 64 };

/* fn(ctx, thread, begin, len) on elements [begin, begin + len) of the
 * set's buffers, every element once, on up to PARAMS_MAX_THREADS of the
 * library's threads (one for a set under TG_PARALLEL_MIN floats); thread
 * is the caller's index in [0, the count returned). */
typedef void (*params_share_fn)(void *ctx, int thread, size_t begin,
                                size_t len);
int params_for_shares(tg_params *ps, params_share_fn fn, void *ctx);

#endif

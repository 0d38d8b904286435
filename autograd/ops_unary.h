/* Private to autograd: the shape shared by the unary elementwise ops.
 *
 * TG_UNARY_OP(name, fwd, bwd) defines tg_<name>(tp, x): y has x's shape,
 * y[i] = fwd, and its backward adds dx[i] += bwd (into 0 written in the same
 * pass when it is the first to reach dx: grad_fresh). In fwd, x_ is the input
 * element; in bwd, x_ is the input element, y_ the output element and g_ the
 * incoming gradient (an unused one is never loaded). The backward is
 * defined first, then the forward that records it. Both loops read and
 * write through local pointers, so they vectorise as a loop written out by
 * hand does (the same code), and split over threads by TG_PARALLEL_FOR. */
#ifndef TG_OPS_UNARY_H
#define TG_OPS_UNARY_H

#include "parallel.h"
#include "tape.h"

#define TG_UNARY_OP(name, fwd, bwd)                                            \
    static void name##_backward(tg_tape *tp, tg_record *r)                     \
    {                                                                          \
        bool fresh;                                                            \
        float *dx = grad_fresh(tp, r, 0, &fresh);                              \
        const float *xs = r->in[0]->data, *ys = r->out->data;                  \
        const float *dy = r->out->grad;                                        \
        size_t n = r->out->size;                                               \
        if (fresh) {                                                           \
            TG_PARALLEL_FOR(n, 1)                                              \
            for (size_t i = 0; i < n; i++) {                                   \
                const float x_ = xs[i], y_ = ys[i], g_ = dy[i];                \
                (void)x_;                                                      \
                (void)y_;                                                      \
                dx[i] = 0.0f + (bwd);                                          \
            }                                                                  \
        } else {                                                               \
            TG_PARALLEL_FOR(n, 1)                                              \
            for (size_t i = 0; i < n; i++) {                                   \
                const float x_ = xs[i], y_ = ys[i], g_ = dy[i];                \
                (void)x_;                                                      \
                (void)y_;                                                      \
                dx[i] += (bwd);                                                \
            }                                                                  \
        }                                                                      \
    }                                                                          \
                                                                               \
    tg_tensor *tg_##name(tg_tape *tp, tg_tensor *x)                            \
    {                                                                          \
        check_inputs(#name, x);                                                \
        tg_tensor *out = out_like(tp, x);                                      \
        const float *xd = x->data;                                             \
        float *y = out->data;                                                  \
        size_t n = x->size;                                                    \
        TG_PARALLEL_FOR(n, 1)                                                  \
        for (size_t i = 0; i < n; i++) {                                       \
            const float x_ = xd[i];                                            \
            y[i] = (fwd);                                                      \
        }                                                                      \
        record(tp, #name, name##_backward, out, 1, &x);                        \
        return out;                                                            \
    }

#endif

/* A program may define functions named like the library's private helpers
 * (record, grad_of, out_tensor, ...): the library must keep calling its own,
 * and the program's must be the ones its own calls reach. Linked against
 * the shared library, before tapegrad.map these definitions replaced the
 * library's and the gradient vanished. */
#include <stdio.h>
#include <stdlib.h>

#include "tg_autograd.h"

static int user_calls;

/* Same names as autograd/tape.h's helpers, with other meanings. */
void *record(void *a, const char *b, void *c, void *d, int e, void *f);
void *record(void *a, const char *b, void *c, void *d, int e, void *f)
{
    (void)a, (void)b, (void)c, (void)d, (void)e, (void)f;
    user_calls++;
    return NULL;
}
float *grad_of(void *tp, void *t);
float *grad_of(void *tp, void *t)
{
    (void)tp, (void)t;
    user_calls++;
    return NULL;
}
void *out_like(void *tp, const void *x);
void *out_like(void *tp, const void *x)
{
    (void)tp, (void)x;
    user_calls++;
    return NULL;
}

int main(void)
{
    tg_tensor *x = tg_tensor_new2(2, 3);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = 0.5f * (float)i;
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_backward(tp, tg_sum(tp, tg_scale(tp, tg_square(tp, x), 3.0f)));
    int bad = 0;
    for (size_t i = 0; i < x->size; i++)
        if (x->grad[i] != 6.0f * x->data[i]) {
            printf("grad[%zu] = %g, expected %g\n", i, (double)x->grad[i],
                   6.0 * x->data[i]);
            bad = 1;
        }
    if (user_calls) {
        printf("the library called the program's record/grad_of/out_like "
               "%d times\n",
               user_calls);
        bad = 1;
    }
    if (record(NULL, NULL, NULL, NULL, 0, NULL) != NULL || user_calls != 1) {
        printf("the program's own record() was not the one called\n");
        bad = 1;
    }
    tg_tape_free(tp);
    tg_tensor_free(x);
    printf("%s\n", bad ? "FAIL" : "ok: the library kept its own helpers");
    return bad;
}

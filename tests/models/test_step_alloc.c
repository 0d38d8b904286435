/* A VAE training step (forward, backward, Adam) makes no heap allocation
 * once warmed up: every malloc of the process is counted by wrapping the
 * allocator in this executable (glibc's __libc_* entry points do the work),
 * so the library, libgomp and libc are all seen. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "tapegrad.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static long n_allocs;

void *malloc(size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t size)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_calloc(n, size);
}
void *realloc(void *p, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t align, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    return __libc_memalign(align, n);
}
int posix_memalign(void **p, size_t align, size_t n)
{
    __atomic_add_fetch(&n_allocs, 1, __ATOMIC_RELAXED);
    *p = __libc_memalign(align, n);
    return *p ? 0 : 12;
}

static long step(tg_tape *tp, tg_vae *vae, tg_optim *opt, tg_rng *noise,
                 const float *batch, int rows)
{
    long before = __atomic_load_n(&n_allocs, __ATOMIC_RELAXED);
    tg_tape_reset(tp);
    tg_tensor *x = tg_tape_tensor2(tp, rows, vae->cfg.input, false);
    for (size_t i = 0; i < x->size; i++)
        x->data[i] = batch[i];
    tg_params_zero_grad(tg_vae_params(vae));
    tg_vae_out o = tg_vae_forward(tp, vae, x, noise);
    tg_backward(tp, o.loss);
    tg_optim_step(opt);
    return __atomic_load_n(&n_allocs, __ATOMIC_RELAXED) - before;
}

static void test_training_step_allocates_nothing_after_warmup(void **state)
{
    (void)state;
    enum { ROWS = 128, INPUT = 784 };
    tg_vae *vae = tg_vae_new((tg_vae_config){INPUT, 400, 20}, 1);
    tg_optim *opt = tg_adam_new(tg_vae_params(vae), 1e-3f);
    tg_rng noise, data;
    tg_rng_seed(&noise, 1, 2);
    tg_rng_seed(&data, 1, 3);
    float *batch = malloc(sizeof(float) * ROWS * INPUT);
    tg_rng_fill_uniform(&data, batch, (size_t)ROWS * INPUT, 0.0f, 1.0f);
    tg_tape *tp = tg_tape_new();
    long warmup = step(tp, vae, opt, &noise, batch, ROWS) +
                  step(tp, vae, opt, &noise, batch, ROWS);
    assert_true(warmup > 0); /* the counter sees the first steps' arena */
    for (int i = 0; i < 20; i++)
        assert_int_equal(step(tp, vae, opt, &noise, batch, ROWS), 0);
    /* inference, recording off, does not allocate either */
    bool was = tg_tape_set_recording(tp, false);
    long before = n_allocs;
    for (int i = 0; i < 5; i++) {
        tg_tape_reset(tp);
        tg_tensor *x = tg_tape_tensor2(tp, ROWS, INPUT, false);
        for (size_t k = 0; k < x->size; k++)
            x->data[k] = batch[k];
        tg_vae_forward(tp, vae, x, &noise);
    }
    assert_int_equal(n_allocs - before, 0);
    tg_tape_set_recording(tp, was);
    tg_tape_free(tp);
    free(batch);
    tg_optim_free(opt);
    tg_vae_free(vae);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_training_step_allocates_nothing_after_warmup),
    };
    return cmocka_run_group_tests_name("models step allocations", tests, NULL,
                                       NULL);
}

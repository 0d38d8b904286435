/* A user's op written with the public header alone (no private tape.h):
 * gradient-checked, and given the guarantees of the built-in ops: repeated
 * backward, recording off, 0-row batches, NULL and misuse messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "expect_abort.h"
#include "tg_autograd.h"
#include "float_equal.h"

/* ---- cube: y = x^3; dx += 3 x^2 dy ----------------------------------------
 */

static void cube_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *x = tg_op_input(r, 0);
    const float *dy = tg_op_grad_out(r, 0);
    float *dx = tg_grad_of(tp, x);
    for (size_t i = 0; dx && i < x->size; i++)
        dx[i] += 3.0f * x->data[i] * x->data[i] * dy[i];
}

static tg_tensor *cube(tg_tape *tp, tg_tensor *x)
{
    tg_check_tensors("cube", 1, (const tg_tensor *[]){x});
    tg_tensor *y = tg_tape_tensor(tp, x->ndim, x->shape, false);
    for (size_t i = 0; i < x->size; i++)
        y->data[i] = x->data[i] * x->data[i] * x->data[i];
    tg_op_record(tp, "cube", cube_backward, 1, &x, 1, &y, NULL);
    return y;
}

/* ---- polar: two inputs, two outputs, saved context --------------------------
 * r, theta [R, C] -> u = r cos(theta), v = r sin(theta).
 * dr += du cos + dv sin,  dtheta += r (dv cos - du sin).
 * cos and sin are saved on the arena for backward. */
typedef struct polar_saved {
    float *cos, *sin;
} polar_saved;

static void polar_backward(tg_tape *tp, tg_record *r)
{
    tg_tensor *rad = tg_op_input(r, 0), *theta = tg_op_input(r, 1);
    const polar_saved *s = tg_op_saved(r);
    const float *du = tg_op_grad_out(r, 0), *dv = tg_op_grad_out(r, 1);
    float *drad = tg_grad_of(tp, rad), *dtheta = tg_grad_of(tp, theta);
    for (size_t i = 0; i < rad->size; i++) {
        float gu = du ? du[i] : 0.0f, gv = dv ? dv[i] : 0.0f;
        if (drad)
            drad[i] += gu * s->cos[i] + gv * s->sin[i];
        if (dtheta)
            dtheta[i] += rad->data[i] * (gv * s->cos[i] - gu * s->sin[i]);
    }
}

static void polar(tg_tape *tp, tg_tensor *rad, tg_tensor *theta, tg_tensor **u,
                  tg_tensor **v)
{
    tg_check_tensors("polar", 2, (const tg_tensor *[]){rad, theta});
    if (rad->size != theta->size)
        tg_fatal("polar", "sizes differ");
    tg_tensor *out[2] = {tg_tape_tensor(tp, rad->ndim, rad->shape, false),
                         tg_tape_tensor(tp, rad->ndim, rad->shape, false)};
    polar_saved *s = tg_tape_alloc(tp, sizeof *s);
    s->cos = tg_tape_alloc(tp, rad->size * sizeof(float));
    s->sin = tg_tape_alloc(tp, rad->size * sizeof(float));
    for (size_t i = 0; i < rad->size; i++) {
        s->cos[i] = cosf(theta->data[i]);
        s->sin[i] = sinf(theta->data[i]);
        out[0]->data[i] = rad->data[i] * s->cos[i];
        out[1]->data[i] = rad->data[i] * s->sin[i];
    }
    tg_op_record(tp, "polar", polar_backward, 2, (tg_tensor *[]){rad, theta}, 2,
                 out, s);
    *u = out[0];
    *v = out[1];
}

/* ---- gradient checks -------------------------------------------------------
 */

static tg_tensor *rand2(int rows, int cols, float lo, float hi)
{
    static uint64_t st = 99;
    tg_tensor *t = tg_tensor_new2(rows, cols);
    for (size_t i = 0; i < t->size; i++) {
        uint64_t z = (st += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        t->data[i] =
            lo + (hi - lo) * (float)((double)((z ^ (z >> 31)) >> 11) * 0x1p-53);
    }
    return t;
}

static tg_tensor *f_cube(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    return cube(tp, tg_tanh(tp, in[0])); /* behind a built-in op */
}

/* u * v and u + v^2 both reach the output: both output grads are used. */
static tg_tensor *f_polar(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *u, *v;
    polar(tp, in[0], in[1], &u, &v);
    return tg_add(tp, tg_mul(tp, u, v), tg_square(tp, v));
}

/* Only v reaches the output: u's gradient is NULL in backward. */
static tg_tensor *f_polar_v(tg_tape *tp, tg_tensor **in, void *c)
{
    (void)c;
    tg_tensor *u, *v;
    polar(tp, in[0], in[1], &u, &v);
    return v;
}

static void test_user_ops_pass_gradcheck(void **state)
{
    (void)state;
    tg_gradcheck_report rep;
    tg_tensor *x = rand2(3, 5, -2.0f, 2.0f);
    assert_true(tg_gradcheck(f_cube, 1, &x, NULL, NULL, &rep));
    tg_gradcheck_print(&rep, "cube");
    tg_tensor *in[2] = {rand2(4, 3, 0.5f, 2.0f), rand2(4, 3, -3.0f, 3.0f)};
    assert_true(tg_gradcheck(f_polar, 2, in, NULL, NULL, &rep));
    tg_gradcheck_print(&rep, "polar");
    assert_true(tg_gradcheck(f_polar_v, 2, in, NULL, NULL, &rep));
    tg_gradcheck_print(&rep, "polar, v only");
    /* Tape tensors as gradcheck inputs work as long-lived ones do. */
    tg_tape *data = tg_tape_new();
    tg_tensor *tx = tg_tape_tensor2(data, 3, 5, false);
    for (size_t i = 0; i < tx->size; i++)
        tx->data[i] = x->data[i];
    assert_true(tg_gradcheck(f_cube, 1, &tx, NULL, NULL, &rep));
    tg_tape_free(data);
    tg_tensor_free(x);
    tg_tensor_free(in[0]);
    tg_tensor_free(in[1]);
}

/* Backward twice through a user op gives backward of the sum; recording off
 * records nothing; a 0-row batch passes. */
static void test_user_op_keeps_the_engine_guarantees(void **state)
{
    (void)state;
    tg_tensor *x = rand2(2, 3, -1.0f, 1.0f);
    tg_tensor_require_grad(x);
    tg_tape *tp = tg_tape_new();
    tg_tensor *h = cube(tp, x);
    tg_tensor *l1 = tg_sum(tp, h), *l2 = tg_sum(tp, tg_square(tp, h));
    tg_backward(tp, tg_add(tp, l1, l2));
    float want[6];
    for (int i = 0; i < 6; i++)
        want[i] = x->grad[i];
    tg_tensor_zero_grad(x);
    tg_backward(tp, l1);
    tg_backward(tp, l2);
    for (int i = 0; i < 6; i++)
        assert_float_equal(x->grad[i], want[i], 1e-5f);

    tg_tape_reset(tp);
    tg_tape_set_recording(tp, false);
    assert_false(cube(tp, x)->requires_grad);
    assert_int_equal(tg_tape_records(tp), 0);
    tg_tape_set_recording(tp, true);

    tg_tensor *empty = tg_tensor_new2(0, 3);
    tg_tensor_require_grad(empty);
    tg_tensor *u, *v;
    polar(tp, empty, empty, &u, &v);
    assert_int_equal(u->size, 0);
    tg_backward(tp, tg_mean(tp, tg_add(tp, cube(tp, u), v)));
    tg_tensor_free(empty);
    tg_tape_free(tp);
    tg_tensor_free(x);
}

static void misuse_null(void) { cube(tg_tape_new(), NULL); }
static void misuse_long_lived_output(void)
{
    tg_tensor *x = tg_tensor_new2(2, 2), *y = tg_tensor_new2(2, 2);
    tg_tensor_require_grad(x);
    tg_op_record(tg_tape_new(), "myop", cube_backward, 1, &x, 1, &y, NULL);
}
static void misuse_output_is_input(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tape_tensor2(tp, 2, 2, true);
    tg_op_record(tp, "myop", cube_backward, 1, &x, 1, &x, NULL);
}
static void misuse_output_recorded_twice(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tensor_new2(2, 2);
    tg_tensor_require_grad(x);
    tg_tensor *y = tg_tape_tensor2(tp, 2, 2, true);
    tg_op_record(tp, "myop", cube_backward, 1, &x, 1, &y, NULL);
    tg_op_record(tp, "again", cube_backward, 1, &x, 1, &y, NULL);
}
static void misuse_input_index(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tensor_new2(2, 2);
    tg_tensor_require_grad(x);
    tg_tensor *y = tg_tape_tensor2(tp, 2, 2, true);
    tg_record *r = tg_op_record(tp, "myop", cube_backward, 1, &x, 1, &y, NULL);
    tg_op_input(r, 1);
}

static void misuse_no_name(void)
{
    tg_tape *tp = tg_tape_new();
    tg_tensor *x = tg_tensor_new2(2, 2);
    tg_tensor_require_grad(x);
    tg_tensor *y = tg_tape_tensor2(tp, 2, 2, false);
    tg_op_record(tp, NULL, cube_backward, 1, &x, 1, &y, NULL);
}

static void test_user_op_misuse_aborts_with_a_message(void **state)
{
    (void)state;
    expect_abort(misuse_null, "cube:", "argument 1 is NULL");
    expect_abort(misuse_long_lived_output, "myop:", "not made on this tape");
    expect_abort(misuse_output_is_input, "myop:", "also input 0");
    expect_abort(misuse_input_index, "myop:", "input 1 of 1");
    expect_abort(misuse_output_recorded_twice, "again:", "output 0 [2, 2]",
                 "already requires grad");
    /* was accepted, the profile listing it as "op_record" */
    expect_abort(misuse_no_name, "op_record:", "needs the op's name");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_ops_pass_gradcheck),
        cmocka_unit_test(test_user_op_keeps_the_engine_guarantees),
        cmocka_unit_test(test_user_op_misuse_aborts_with_a_message),
    };
    return cmocka_run_group_tests_name("autograd custom op", tests, NULL, NULL);
}

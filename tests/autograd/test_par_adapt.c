/* The adaptive default thread count (autograd/threads.c): a region that
 * did not pay for its threads is judged over windows of 5 ms of region
 * time. On a virtual machine whose host takes the other core now and then,
 * a single window fails while nothing else runs; a busy machine fails
 * window after window. So once T threads have been held past their first
 * window, one failed window must not send the library to one thread, two
 * in a row must; and the first window of a retry decides alone, so that a
 * busy machine pays one window per retry.
 *
 * The regions here are fake: each spins past the window and reports what
 * one thread "would have taken", far above the wall time (paid) or 0 (not
 * paid), so the verdicts do not depend on how fast the machine runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include "parallel.h"

enum { WINDOW_NS = 5000000, PAID = 1, NOT_PAID = 0 };

/* One region of a little over a window; returns the threads it was given. */
static int region(int paid)
{
    tg_par_region r;
    int T = tg_par_begin(&r, 2);
    int64_t t0 = tg_par_now_ns();
    while (tg_par_now_ns() - t0 < WINDOW_NS + WINDOW_NS / 10) {
    }
    tg_par_end(&r, paid ? INT64_C(1000000000000) : 0);
    return T;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void test_one_bad_window_is_not_a_busy_machine(void **state)
{
    (void)state;
    tg_set_threads(0);                 /* the adaptive default */
    assert_int_equal(region(PAID), 2); /* the first window passes */
    /* noise: isolated failed windows keep both threads */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(region(NOT_PAID), 2);
        assert_int_equal(region(PAID), 2);
    }
    /* a busy machine: two failed windows in a row fall back to one */
    assert_int_equal(region(NOT_PAID), 2);
    assert_int_equal(region(NOT_PAID), 2);
    tg_par_region r;
    assert_int_equal(tg_par_begin(&r, 2), 1);
    tg_par_end(&r, 0);

    /* the retry comes after the first back-off (50 ms); its first window
     * failing sends the library back to one thread at once */
    sleep_ms(60);
    assert_int_equal(region(NOT_PAID), 2);
    assert_int_equal(tg_par_begin(&r, 2), 1);
    tg_par_end(&r, 0);
}

static void test_explicit_count_is_never_adapted(void **state)
{
    (void)state;
    tg_set_threads(2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(region(NOT_PAID), 2);
    tg_set_threads(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_bad_window_is_not_a_busy_machine),
        cmocka_unit_test(test_explicit_count_is_never_adapted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

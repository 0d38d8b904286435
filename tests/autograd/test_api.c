/* Small promises of the public API: tg_get_threads reports the threads that
 * will really run (1 in a build without OpenMP), and tg_fatal flushes what
 * the program had written to stdout before it aborts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_autograd.h"

static void test_get_threads_reports_what_runs(void **state)
{
    (void)state;
    int saved = tg_get_threads();
    tg_set_threads(2);
#ifdef TG_TEST_OPENMP
    assert_int_equal(tg_get_threads(), 2);
#else
    assert_int_equal(tg_get_threads(), 1); /* one thread is all there is */
#endif
    tg_set_threads(0);
    assert_true(tg_get_threads() >= 1);
    tg_set_threads(saved);
}

/* The child writes to stdout, a pipe (so fully buffered), then misuses an
 * op: the parent must read what was written before the abort. */
static void test_fatal_flushes_stdout(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        signal(SIGABRT, SIG_DFL);
        printf("epoch 1 done, loss 0.25\n"); /* buffered: stdout is a pipe */
        tg_tape *tp = tg_tape_new();
        tg_add(tp, tg_tensor_new2(2, 3), tg_tensor_new2(3, 2));
        _exit(0);
    }
    close(fds[1]);
    char out[1024] = {0};
    size_t len = 0;
    ssize_t got;
    while (len < sizeof out - 1 &&
           (got = read(fds[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)got;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    printf("  the child wrote: %s", out);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    assert_non_null(strstr(out, "epoch 1 done, loss 0.25"));
    assert_non_null(strstr(out, "tapegrad: add:"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_threads_reports_what_runs),
        cmocka_unit_test(test_fatal_flushes_stdout),
    };
    return cmocka_run_group_tests_name("autograd api", tests, NULL, NULL);
}

/* The examples' out-of-memory handler (cli_out_of_memory) reached by two
 * threads at once, as two OpenMP threads of one parallel region running
 * out together: one line, exit status 1. Each thread had printed its line
 * before the first _exit ended the process (two lines in about one run of
 * ten), so the trials below, each a fresh process, catch it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static pthread_barrier_t together;

static void *run_out(void *arg)
{
    pthread_barrier_wait(&together);
    cli_out_of_memory(arg);
}

/* A process whose two threads run out of memory at once; returns the lines
 * it printed on stderr, *status its exit status. */
static int lines_of_a_race(int *status)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        cli_prog = "test_cli_oom";
        pthread_barrier_init(&together, NULL, 2);
        pthread_t other;
        if (pthread_create(&other, NULL, run_out, "tg_gemm: out of memory") !=
            0)
            _exit(99);
        run_out("tape: out of memory");
    }
    close(fds[1]);
    char buf[4096];
    int lines = 0;
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++)
            lines += buf[i] == '\n';
    close(fds[0]);
    int ws;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return lines;
}

static void two_threads_out_of_memory_print_one_line(void **state)
{
    (void)state;
    for (int trial = 0; trial < 100; trial++) {
        int status;
        int lines = lines_of_a_race(&status);
        if (lines != 1 || status != 1)
            fail_msg("trial %d: %d lines, exit status %d", trial, lines,
                     status);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_threads_out_of_memory_print_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

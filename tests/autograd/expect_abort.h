/* expect_abort(fn, needles...): runs fn in a forked child and checks that it
 * dies of SIGABRT with every needle in what it wrote to stderr. For tests
 * of the messages API misuse dies with. Include after cmocka.h. */
#ifndef TG_TEST_EXPECT_ABORT_H
#define TG_TEST_EXPECT_ABORT_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*misuse_fn)(void);

static void expect_abort_n(misuse_fn fn, int n, const char *const *needles)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(fds[1]);
    char msg[1024] = {0};
    size_t len = 0;
    ssize_t got;
    while (len < sizeof msg - 1 &&
           (got = read(fds[0], msg + len, sizeof msg - 1 - len)) > 0)
        len += (size_t)got;
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    printf("  died: %s", msg);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    for (int k = 0; k < n; k++)
        if (!strstr(msg, needles[k])) {
            printf("  message lacks \"%s\"\n", needles[k]);
            fail();
        }
}

#define expect_abort(fn, ...)                                                  \
    expect_abort_n(                                                            \
        fn,                                                                    \
        (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),   \
        (const char *[]){__VA_ARGS__})

#endif

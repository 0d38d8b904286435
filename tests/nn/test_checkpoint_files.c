/* Checkpoint files on disk: atomic saves (a failed save leaves nothing,
 * only regular files are replaced, their mode kept), symbolic links at the
 * lock's and temporaries' names not followed, only our dead temporaries
 * swept, a discarded temporary leaves nothing, and out of memory while
 * loading or saving (fail_alloc.h: skipped in sanitizer builds). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/safetensors.h"
#include "tg_nn.h"

#include "fail_alloc.h"
#include "tmpdir.h"

#include "checkpoint_common.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static bool has_text(const char *path, const char *text)
{
    char buf[64] = {0};
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    return n == strlen(text) && memcmp(buf, text, n) == 0;
}

static long dead_pid(void)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0)
        _exit(0);
    waitpid(p, NULL, 0);
    return (long)p;
}

/* The sweep of a killed run's temporaries removes only names the library
 * writes: it had removed "thesis.tex.tmp.<n>" of a user, and a checkpoint
 * named "*.tmp.<n>" given to --resume. */
static void only_our_dead_temporaries_are_swept(void **state)
{
    (void)state;
    long dead = dead_pid();
    char users[320], ours[320], live[320];
    snprintf(users, sizeof users, "%s/thesis.tex.tmp.%ld", dir, dead);
    snprintf(ours, sizeof ours, "%s/ck.safetensors.tapegrad-tmp.%ld", dir,
             dead);
    snprintf(live, sizeof live, "%s/m.csv.tapegrad-tmp.%ld", dir,
             (long)getppid());
    write_text(users, "draft");
    write_text(ours, "half");
    write_text(live, "busy");
    assert_int_equal(tg_remove_stale_temps(dir), 1);
    assert_true(has_text(users, "draft"));
    assert_false(has_text(ours, "half"));
    assert_true(has_text(live, "busy"));
    unlink(users);
    unlink(live);
}

/* A symbolic link at the lock's or a temporary's name is never written
 * through: the lock had truncated the file a planted .lock pointed at and
 * written a PID into it. */
static void links_at_our_names_are_not_followed(void **state)
{
    (void)state;
    char victim[320], sub[320], lock[330], tmp[400];
    snprintf(victim, sizeof victim, "%s/victim.txt", dir);
    snprintf(sub, sizeof sub, "%s/out", dir);
    snprintf(lock, sizeof lock, "%s/.lock", sub);
    write_text(victim, "precious");
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(symlink(victim, lock), 0);
    assert_int_equal(tg_dir_lock(sub), TG_ERR_IO);
    assert_non_null(strstr(tg_errmsg(), "symbolic link"));
    assert_true(has_text(victim, "precious"));

    const char *p = in_dir("out/ck.safetensors");
    char path[320];
    snprintf(path, sizeof path, "%s", p);
    snprintf(tmp, sizeof tmp, "%s.tapegrad-tmp.%ld", path, (long)getpid());
    assert_int_equal(symlink(victim, tmp), 0);
    tg_params *ps = model(2);
    assert_int_equal(tg_checkpoint_save(path, ps, NULL, NULL), TG_OK);
    assert_true(has_text(victim, "precious"));
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    tg_params_free(ps);
}

/* tg_atomic_discard_open (a stop signal's handler calls it) removes the
 * temporary of a file still being written; its commit then fails and
 * leaves no file. */
static void a_discarded_temporary_leaves_nothing(void **state)
{
    (void)state;
    char path[320];
    snprintf(path, sizeof path, "%s", in_dir("half.csv"));
    tg_atomic_file a;
    assert_int_equal(tg_atomic_open(&a, path), TG_OK);
    fputs("1,2,3\n", a.f);
    tg_atomic_discard_open();
    assert_no_temp_files();
    assert_int_not_equal(tg_atomic_commit(&a, true), TG_OK);
    assert_int_equal(access(path, F_OK), -1);
    assert_no_temp_files();
}

/* A replaced file keeps its permission bits, directly and through a
 * link (a private 0600 checkpoint came back 0644, readable by all). */
static void replaced_files_keep_their_mode(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    char priv[320], link_to[320];
    snprintf(priv, sizeof priv, "%s", in_dir("private.safetensors"));
    snprintf(link_to, sizeof link_to, "%s", in_dir("to_private"));
    assert_int_equal(tg_checkpoint_save(priv, ps, NULL, NULL), TG_OK);
    assert_int_equal(chmod(priv, 0600), 0);
    assert_int_equal(symlink(priv, link_to), 0);
    const char *paths[] = {priv, link_to};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tg_checkpoint_save(paths[i], ps, NULL, NULL), TG_OK);
        struct stat st;
        assert_int_equal(stat(priv, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
    }
    tg_params_free(ps);
}

/* Only a regular file is replaced: a save to a FIFO, a folder, a link to
 * either or a link to nothing is refused (TG_ERR_IO, "not replaced") and
 * leaves them as they were; as root, a save to /dev/null had returned
 * TG_OK and made it a regular file. A link to a regular file is written
 * through: the file it names gets the checkpoint, the link stays a link
 * (it had been replaced by a file). */

static void only_regular_files_are_replaced(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 6);
    char fifo[320], folder[320], to_fifo[320], to_folder[320], dangling[320];
    snprintf(fifo, sizeof fifo, "%s", in_dir("fifo.safetensors"));
    snprintf(folder, sizeof folder, "%s", in_dir("empty_folder"));
    snprintf(to_fifo, sizeof to_fifo, "%s", in_dir("to_fifo"));
    snprintf(to_folder, sizeof to_folder, "%s", in_dir("to_folder"));
    snprintf(dangling, sizeof dangling, "%s", in_dir("dangling"));
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_int_equal(mkdir(folder, 0755), 0);
    assert_int_equal(symlink(fifo, to_fifo), 0);
    assert_int_equal(symlink(folder, to_folder), 0);
    assert_int_equal(symlink(in_dir("nothing"), dangling), 0);
    const char *paths[] = {fifo, folder, to_fifo, to_folder, dangling};
    const char *why[] = {"it is a FIFO", "it is a folder", "a FIFO", "a folder",
                         "a symbolic link to a missing file"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tg_atomic_check(paths[i]), TG_ERR_IO);
        assert_int_equal(tg_checkpoint_save(paths[i], ps, NULL, NULL),
                         TG_ERR_IO);
        assert_non_null(strstr(tg_errmsg(), paths[i]));
        assert_non_null(strstr(tg_errmsg(), why[i]));
        assert_non_null(strstr(tg_errmsg(), "not replaced"));
        assert_null(strchr(tg_errmsg(), '\n'));
    }
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(lstat(folder, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    for (int i = 2; i < 5; i++) {
        assert_int_equal(lstat(paths[i], &st), 0);
        assert_true(S_ISLNK(st.st_mode));
    }
    assert_int_equal(access(in_dir("nothing"), F_OK), -1);
    assert_no_temp_files();
    /* the same through tg_atomic_open, which the programs' CSV, SVG and
     * PNG outputs use */
    tg_atomic_file a;
    assert_int_equal(tg_atomic_open(&a, fifo), TG_ERR_IO);
    assert_null(a.f);

    /* a link to a regular file in another folder: written through */
    char sub[320], real[340], link[320];
    snprintf(sub, sizeof sub, "%s", in_dir("elsewhere"));
    snprintf(real, sizeof real, "%s/ck.safetensors", sub);
    snprintf(link, sizeof link, "%s", in_dir("link.safetensors"));
    assert_int_equal(mkdir(sub, 0755), 0);
    write_text(real, "old");
    assert_int_equal(tg_atomic_check(real), TG_OK);
    assert_int_equal(tg_atomic_check(link), TG_OK); /* not there yet */
    assert_int_equal(symlink("elsewhere/ck.safetensors", link), 0);
    assert_int_equal(tg_atomic_check(link), TG_OK);
    assert_int_equal(tg_checkpoint_save(link, ps, NULL, NULL), TG_OK);
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    tg_params *back = model(4);
    assert_int_equal(tg_checkpoint_load(real, back, NULL, NULL), TG_OK);
    assert_true(same_bits(tg_params_data(ps), tg_params_data(back),
                          tg_params_numel(ps)));
    DIR *d = opendir(sub);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        assert_null(strstr(e->d_name, "tmp."));
    closedir(d);
    assert_no_temp_files();

    unlink(link);
    unlink(real);
    rmdir(sub);
    for (int i = 0; i < 5; i++)
        remove(paths[i]);
    tg_params_free(back);
    tg_params_free(ps);
}

static void failed_saves_leave_nothing(void **state)
{
    (void)state;
    tg_params *ps = model(4);
    fill(tg_params_data(ps), tg_params_numel(ps), 5);
    const char *p = in_dir("no/such/dir/ck.safetensors");
    assert_int_equal(tg_checkpoint_save(p, ps, NULL, NULL), TG_ERR_IO);
    assert_non_null(strstr(tg_errmsg(), p));
    assert_int_equal(file_size(p), -1);

    /* The rename fails (the target is a non-empty directory): the temporary
     * file is removed and the directory survives. */
    char target[256];
    snprintf(target, sizeof target, "%s", in_dir("occupied"));
    assert_int_equal(mkdir(target, 0755), 0);
    write_bytes("occupied/x", "x", 1);
    assert_int_equal(tg_checkpoint_save(target, ps, NULL, NULL), TG_ERR_IO);
    assert_no_temp_files();

    /* A good save replaces an older checkpoint in one step. */
    const char *q = in_dir("replace.safetensors");
    write_bytes("replace.safetensors", "old", 3);
    assert_int_equal(tg_checkpoint_save(q, ps, NULL, NULL), TG_OK);
    assert_no_temp_files();
    tg_params *back = model(4);
    assert_int_equal(tg_checkpoint_load(q, back, NULL, NULL), TG_OK);
    assert_true(same_bits(tg_params_data(ps), tg_params_data(back),
                          tg_params_numel(ps)));
    tg_params_free(back);
    tg_params_free(ps);
}

/* Out of memory while loading, at each allocation in turn: the load either
 * works around it, returns TG_ERR_NOMEM or reaches the out-of-memory
 * handler, never another status, and a save leaves the file there whole.
 * fdopen's ENOMEM had been TG_ERR_IO "Cannot allocate memory", which the
 * examples took for a bad checkpoint (a load) or an unwritable path. */
static jmp_buf oom_jump;

static void oom_jumps(const char *message)
{
    (void)message;
    longjmp(oom_jump, 1);
}

static void out_of_memory_while_loading(void **state)
{
    (void)state;
    if (!FAIL_ALLOC_ACTIVE)
        skip();
    tg_params *ps = model(4);
    tg_optim *opt = adam_with_state(ps, 10);
    char p[256];
    snprintf(p, sizeof p, "%s", in_dir("oom.safetensors"));
    assert_int_equal(tg_checkpoint_save(p, ps, opt, NULL), TG_OK);
    tg_params *ps2 = model(4);
    tg_optim *opt2 = tg_adam_new(ps2, 1e-3f);
    tg_set_oom_handler(oom_jumps);
    for (long k = 1;; k++) {
        tg_meta meta;
        volatile tg_status st = TG_ERR_NOMEM; /* the handler's, on a jump */
        fail_alloc_arm(k);
        if (setjmp(oom_jump) == 0)
            st = tg_checkpoint_load(p, ps2, opt2, &meta);
        if (!fail_alloc_disarm()) {
            assert_int_equal(st, TG_OK);
            break;
        }
        if (st != TG_OK && st != TG_ERR_NOMEM)
            fail_msg("allocation %ld failing: status %d, \"%s\"", k, st,
                     tg_errmsg());
    }
    /* saving over it: the same, and the file there stays whole */
    for (volatile long k = 1;; k++) {
        volatile tg_status st = TG_ERR_NOMEM;
        fail_alloc_arm(k);
        if (setjmp(oom_jump) == 0)
            st = tg_checkpoint_save(p, ps2, opt2, NULL);
        bool came = fail_alloc_disarm();
        if (st != TG_OK && st != TG_ERR_NOMEM)
            fail_msg("saving, allocation %ld failing: status %d, \"%s\"", k, st,
                     tg_errmsg());
        tg_atomic_discard_open(); /* what the examples' handler does */
        assert_int_equal(tg_checkpoint_load(p, ps2, opt2, NULL), TG_OK);
        if (!came)
            break;
    }
    tg_set_oom_handler(NULL);
    tg_optim_free(opt);
    tg_optim_free(opt2);
    tg_params_free(ps);
    tg_params_free(ps2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(out_of_memory_while_loading),
        cmocka_unit_test(replaced_files_keep_their_mode),
        cmocka_unit_test(failed_saves_leave_nothing),
        cmocka_unit_test(only_regular_files_are_replaced),
        cmocka_unit_test(only_our_dead_temporaries_are_swept),
        cmocka_unit_test(links_at_our_names_are_not_followed),
        cmocka_unit_test(a_discarded_temporary_leaves_nothing),
    };
    return cmocka_run_group_tests_name("nn_checkpoint_files", tests, setup,
                                       teardown);
}

/* vae_score's histogram panels: values outside the plotted range are counted
 * in the overflow bins (not piled into the edge bins), the axes get ticks
 * and labels, and a range far narrower than the values' magnitude (1e6 +
 * 2 ulps) still draws a finite number of ticks (it used to loop forever). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fail_alloc.h"
#include "score_plots.h"
#include "tapegrad.h"

/* The panel drawn into memory, NUL-terminated (caller frees). */
static char *draw(const hist_panel *p, int n_sets)
{
    static const char *const names[2] = {"in", "ood"};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_true(plot_histograms(f, "t", p, 1, names, n_sets, "ood", 10));
    fclose(f);
    return buf;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

static void overflow_ticks_and_labels(void **state)
{
    (void)state;
    /* 100 values 1..100: the range is the 1st to 99th percentile (2 and
     * 99), so 1 falls below and 100 above, and each overflow box holds a
     * bar */
    double v[100];
    for (int i = 0; i < 100; i++)
        v[i] = i + 1;
    hist_panel p = {.name = "score", .v = {v}, .n = {100}, .auroc = 0.5};
    char *svg = draw(&p, 1);
    assert_non_null(strstr(svg, "&lt;2<"));
    assert_non_null(strstr(svg, "&gt;99<"));
    assert_non_null(strstr(svg, "share of images"));
    assert_non_null(strstr(svg, "(AUROC 0.500)"));
    assert_true(count(svg, "<line") >= 6); /* x and y ticks */
    /* two dashed boxes, each with the in-distribution bar (1%) */
    assert_int_equal(count(svg, "stroke-dasharray"), 2);
    assert_int_equal(count(svg, "fill=\"#1f77b4\"/>"), 2 + 1); /* + legend */
    free(svg);
}

static void narrow_range_at_large_magnitude(void **state)
{
    (void)state;
    /* two doubles 2 ulps (2.3e-10) apart: the tick step, about 5e-11, is
     * below half an ulp of 1e6, so adding it to a tick changes nothing */
    double v[50], w[50];
    double hi = nextafter(nextafter(1e6, 2e6), 2e6);
    for (int i = 0; i < 50; i++) {
        v[i] = i % 2 ? hi : 1e6;
        w[i] = hi;
    }
    hist_panel p = {.name = "s", .v = {v, w}, .n = {50, 50}, .auroc = 0.9};
    char *svg = draw(&p, 2);
    assert_true(count(svg, "<line") < 60);
    assert_non_null(strstr(svg, "</svg>"));
    free(svg);
}

/* Out of memory while drawing, at each allocation in turn: the picture is
 * the same, or the out-of-memory handler ends it. A percentile whose copy
 * could not be made had been NaN, silently left out of the range (another
 * axis), and the panels' table "false", a write that failed. */
static jmp_buf oom_jump;
static void oom_jumps(const char *message)
{
    (void)message;
    longjmp(oom_jump, 1);
}

/* The panel drawn into f from its start; the bytes written, or -1 when
 * the out-of-memory handler was called. */
static long draw_into(FILE *f, const hist_panel *p)
{
    static const char *const names[2] = {"in", "ood"};
    rewind(f);
    if (setjmp(oom_jump) != 0)
        return -1;
    assert_true(plot_histograms(f, "t", p, 1, names, 2, "ood", 10));
    fflush(f);
    return ftell(f);
}

static void out_of_memory_is_not_another_picture(void **state)
{
    (void)state;
    if (!FAIL_ALLOC_ACTIVE)
        skip();
    double v[100], w[100];
    for (int i = 0; i < 100; i++) {
        v[i] = i;
        w[i] = 50 + 2 * i;
    }
    hist_panel p = {.name = "s", .v = {v, w}, .n = {100, 100}, .auroc = 0.7};
    static char want[1 << 16], got[1 << 16], fbuf[1 << 16];
    FILE *f = tmpfile();
    assert_non_null(f);
    setvbuf(f, fbuf, _IOFBF, sizeof fbuf); /* writes allocate nothing */
    long n = draw_into(f, &p);
    assert_true(n > 0 && n < (long)sizeof want);
    rewind(f);
    assert_int_equal(fread(want, 1, (size_t)n, f), n);
    tg_set_oom_handler(oom_jumps);
    for (long k = 1;; k++) {
        fail_alloc_arm(k);
        long m = draw_into(f, &p);
        if (!fail_alloc_disarm()) {
            assert_int_equal(m, n);
            break;
        }
        if (m < 0)
            continue; /* the handler's */
        rewind(f);
        if (m != n || fread(got, 1, (size_t)n, f) != (size_t)n ||
            memcmp(got, want, (size_t)n) != 0)
            fail_msg("allocation %ld failing: another picture", k);
    }
    tg_set_oom_handler(NULL);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overflow_ticks_and_labels),
        cmocka_unit_test(narrow_range_at_large_magnitude),
        cmocka_unit_test(out_of_memory_is_not_another_picture),
    };
    return cmocka_run_group_tests_name("score_plots", tests, NULL, NULL);
}

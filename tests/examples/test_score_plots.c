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

#include "score_plots.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(overflow_ticks_and_labels),
        cmocka_unit_test(narrow_range_at_large_magnitude),
    };
    return cmocka_run_group_tests_name("score_plots", tests, NULL, NULL);
}

/* The examples' bitmap font: descenders below the baseline (a "p" once drew
 * as a "P"), upper case drawn as lower case, and the word wrap of
 * uncertainty.png's caption (which once ran off the picture). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "font.h"

enum { W = 6, H = FONT_ROWS };

/* Rows of s (one glyph at scale 1) with ink, as a bit mask. */
static unsigned inked_rows(const char *s, uint8_t rgb[W * H * 3])
{
    static const uint8_t ink[3] = {0, 0, 0};
    memset(rgb, 255, W * H * 3);
    font_draw(rgb, W, H, 0, 0, s, 1, ink);
    unsigned rows = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            if (rgb[(y * W + x) * 3] == 0)
                rows |= 1u << y;
    return rows;
}

static void descenders_below_the_baseline(void **state)
{
    (void)state;
    uint8_t a[W * H * 3], b[W * H * 3];
    const unsigned below = 3u << 7; /* rows 7 and 8 */
    for (const char *c = "gjpqy"; *c; c++) {
        char s[2] = {*c, 0};
        unsigned r = inked_rows(s, a);
        assert_true(r & below);
        if (*c != 'j') /* x-height: nothing in the top two rows but a dot */
            assert_false(r & 3u);
    }
    for (const char *c = "aodkA0"; *c; c++) {
        char s[2] = {*c, 0};
        assert_false(inked_rows(s, a) & below);
    }
    /* upper case is the lower-case glyph */
    inked_rows("p", a);
    inked_rows("P", b);
    assert_memory_equal(a, b, sizeof a);
}

static void wrap_fits_and_keeps_every_word(void **state)
{
    (void)state;
    const char *text = "mean reconstruction and per-pixel std of the decoded "
                       "pixels over 100 draws of z from q(z|x)";
    char lines[8][FONT_LINE];
    int maxw = 300, n = font_wrap(text, 2, maxw, lines, 8);
    assert_true(n >= 2);
    char joined[512] = "";
    for (int i = 0; i < n; i++) {
        assert_true(font_text_width(lines[i], 2) <= maxw);
        assert_true(lines[i][0] != ' ' && lines[i][0] != '\0');
        if (i)
            strcat(joined, " ");
        strcat(joined, lines[i]);
    }
    assert_string_equal(joined, text);
    /* wide enough: one line */
    assert_int_equal(font_wrap(text, 2, 10000, lines, 8), 1);
    assert_string_equal(lines[0], text);
    /* a word wider than the line is cut, never overflows */
    n = font_wrap("abcdefghijklmnopqrstuvwxyz", 1, 6 * 10 - 1, lines, 8);
    assert_int_equal(n, 3);
    assert_string_equal(lines[0], "abcdefghij");
    assert_string_equal(lines[2], "uvwxyz");
    /* at most max lines; nothing for an empty text */
    assert_int_equal(font_wrap(text, 2, 60, lines, 2), 2);
    assert_int_equal(font_wrap("", 2, 60, lines, 2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(descenders_below_the_baseline),
        cmocka_unit_test(wrap_fits_and_keeps_every_word),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

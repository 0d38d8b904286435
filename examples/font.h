/* Text in the examples' PNG pictures: our own 5 x 7 pixel glyphs
 * (font.c), each cell 6 x 9 with the spacing and two rows of descenders,
 * drawn at an integer scale. */
#ifndef EX_FONT_H
#define EX_FONT_H

#include <stdint.h>

/* Rows of a glyph: 7 down to the baseline, 2 for descenders. */
enum { FONT_ROWS = 9, FONT_LINE = 160 };

/* Width in pixels of s drawn at scale (the height is FONT_ROWS * scale,
 * descenders included). */
int font_text_width(const char *s, int scale);
/* Draws s with its top-left corner at (x, y) into a w x h RGB image;
 * what falls outside is clipped. */
void font_draw(uint8_t *rgb, int w, int h, int x, int y, const char *s,
               int scale, const uint8_t color[3]);

/* Greedy word wrap of s into lines at most maxw pixels wide at scale (a
 * word wider than that is cut); returns the number of lines, at most max,
 * each shorter than FONT_LINE bytes. */
int font_wrap(const char *s, int scale, int maxw, char lines[][FONT_LINE],
              int max);

#endif

/* Text in the examples' PNG pictures: our own 5 x 7 pixel glyphs
 * (font.c), each cell 6 x 7 with the spacing, drawn at an integer scale. */
#ifndef EX_FONT_H
#define EX_FONT_H

#include <stdint.h>

/* Width in pixels of s drawn at scale (the height is 7 * scale). */
int font_text_width(const char *s, int scale);
/* Draws s with its top-left corner at (x, y) into a w x h RGB image;
 * what falls outside is clipped. */
void font_draw(uint8_t *rgb, int w, int h, int x, int y, const char *s,
               int scale, const uint8_t color[3]);

#endif

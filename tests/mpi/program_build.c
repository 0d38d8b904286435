/* A rank whose program and library come from different builds: the
 * identity the ranks compare in tg_dist_init was the library's alone, so a
 * program of another build run with this library (LD_LIBRARY_PATH naming
 * it) passed, and trained with its own code. This program stands in for
 * one: argv[1] is the build it says it was compiled from ("-": it says
 * nothing, "lib": the library's own id, which it then prints and exits).
 * Prints "rank R of N: same build" after the check. */
#include <stdio.h>
#include <string.h>

#include "tapegrad.h"
#include "tg_build_id.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: program_build ID|-|lib\n");
        return 2;
    }
    if (strcmp(argv[1], "lib") == 0)
        tg_dist_set_program_build(TG_BUILD_ID);
    else if (strcmp(argv[1], "-") != 0)
        tg_dist_set_program_build(argv[1]);
    tg_dist_init(&argc, &argv);
    tg_dist_set_timeout(30);
    double one = 1.0;
    tg_dist_sum(&one, 1);
    printf("rank %d of %d: same build\n", tg_dist_rank(), tg_dist_size());
    tg_dist_finalize();
    return 0;
}

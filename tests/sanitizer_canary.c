/* A deliberate signed overflow. Registered as should_fail in a build with
 * UBSan: proves that a sanitizer report fails the test suite. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    (void)argv;
    volatile int big = INT_MAX;
    int sum = big + argc; /* argc >= 1: overflows */
    printf("%d\n", sum);
    return 0;
}

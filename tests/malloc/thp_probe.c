/*
 * thp_probe.c -- run by test_malloc_thp under LD_PRELOAD of the drop-in
 * malloc: gets a small block (a class pool's page), a medium block (a
 * heap chunk) and a 4 MiB block (a mapping of its own), and prints, for
 * each, whether the kernel marks its mapping "nh" (MADV_NOHUGEPAGE) in
 * /proc/self/smaps: "small=1 medium=1 large=0".  -1: not found.
 */
#include "probe.h"

#include <stdlib.h>

/* 1: p's mapping is advised MADV_NOHUGEPAGE, 0: not, -1: no mapping. */
static int nohuge(const void *p)
{
    char flags[1024];
    return pr_vmflags(p, flags, sizeof(flags)) ? strstr(flags, " nh") != NULL
                                                : -1;
}

int main(void)
{
    char *small = malloc(100), *medium = malloc(16384),
         *large = malloc((size_t)4 << 20);
    if (!small || !medium || !large)
        return 1;
    memset(small, 1, 100);
    memset(medium, 1, 16384);
    memset(large, 1, 4096);
    printf("small=%d medium=%d large=%d\n", nohuge(small), nohuge(medium),
           nohuge(large));
    free(small);
    free(medium);
    free(large);
    return 0;
}

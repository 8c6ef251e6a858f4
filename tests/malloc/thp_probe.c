/*
 * thp_probe.c -- run by test_malloc_thp under LD_PRELOAD of the drop-in
 * malloc: gets a small block (a class pool's page), a medium block (a
 * heap chunk) and a 4 MiB block (a mapping of its own), and prints, for
 * each, whether the kernel marks its mapping "nh" (MADV_NOHUGEPAGE) in
 * /proc/self/smaps: "small=1 medium=1 large=0".  -1: not found.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int nohuge(const void *p)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[1024];
    int in = 0, r = -1;
    uintptr_t a = (uintptr_t)p;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char c;
        /* A mapping's first line: "lo-hi perms ...". */
        if (sscanf(line, "%lx-%lx %c", &lo, &hi, &c) == 3) {
            in = a >= lo && a < hi;
            continue;
        }
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            r = strstr(line, " nh") != NULL;
            break;
        }
    }
    fclose(f);
    return r;
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

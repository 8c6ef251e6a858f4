/*
 * populate_probe.c -- run by test_malloc_populate under LD_PRELOAD of the
 * drop-in malloc, with its own DEFERPOOL_CONF.  Gets `count` blocks of
 * `kib` KiB, none freed, and right after each malloc returns asks
 * mincore() whether every page of the block past its first is resident:
 * the malloc faulted them in (docs/malloc.md, "Populated blocks"), since
 * nothing else touched them yet.  Then it writes the whole block (write)
 * or its first byte only (sparse).  Prints "populated=P late=L stats=S":
 * the blocks found resident, those of them after the 16th, and how much
 * dp_malloc_stats_t.large_populates grew meanwhile.
 *
 *   populate_probe write|sparse kib count
 */
#include "probe.h"
#include "resident.h"

#include <stdlib.h>

#define PAGE ((uintptr_t)4096)

/* Every page of [p, p + n) past p's own is resident. */
static int resident(const char *p, size_t n)
{
    uintptr_t lo = ((uintptr_t)p & ~(PAGE - 1)) + PAGE;
    uintptr_t hi = ((uintptr_t)p + n + PAGE - 1) & ~(PAGE - 1);
    return hi > lo &&
           mt_resident_pages((void *)lo, hi - lo) == (hi - lo) / PAGE;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    int write_all = strcmp(argv[1], "write") == 0;
    size_t n = strtoul(argv[2], NULL, 10) << 10;
    int count = atoi(argv[3]);
    dp_malloc_stats_t s0, s1;
    char **b = calloc((size_t)count, sizeof(*b));
    if (!b || pr_stats(&s0) != 0)
        return 4;
    int populated = 0, late = 0;
    for (int i = 0; i < count; i++) {
        char *p = b[i] = malloc(n);
        if (!p)
            return 5;
        int r = resident(p, n);
        populated += r;
        late += i >= 16 ? r : 0;
        if (write_all)
            memset(p, i, n);
        else
            p[0] = (char)i;
    }
    if (pr_stats(&s1) != 0)
        return 7;
    printf("populated=%d late=%d stats=%llu\n", populated, late,
           (unsigned long long)(s1.large_populates - s0.large_populates));
    for (int i = 0; i < count; i++)
        free(b[i]);
    free(b);
    return 0;
}

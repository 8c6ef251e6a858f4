/*
 * huge_probe.c -- run by test_malloc_huge under LD_PRELOAD of the drop-in
 * malloc, with its own DEFERPOOL_CONF.  Gets `count` blocks of 64 KiB,
 * writes them and keeps them, so that the heap passes MC_HUGE_AFTER and
 * its later chunks are huge chunks (docs/malloc.md, "Huge chunks").
 * Then frees the second block (in the first chunk) and the one before
 * the last (in a later chunk), each between two live blocks, and calls
 * malloc_trim(0), which returns every free block's pages.  Prints
 *   first=F last=L chunks=C small_mapped=S huge_mapped=H
 * F and L: the flags the kernel shows in /proc/self/smaps for the
 * mapping of the first and of the last block: "hg" (MADV_HUGEPAGE), "nh"
 * (MADV_NOHUGEPAGE) or "-" (neither); C: how much
 * dp_malloc_stats_t.large_huge_chunks grew; S and H: whether the freed
 * blocks' first pages are still mapped (1: purged) or not (0: unmapped).
 *
 *   huge_probe count
 */
#include "probe.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

/* The THP advice of the mapping that holds p. */
static const char *advice(const void *p)
{
    char flags[1024];
    if (!pr_vmflags(p, flags, sizeof(flags)))
        return "?";
    return strstr(flags, " hg") ? "hg" : strstr(flags, " nh") ? "nh" : "-";
}

/* The page at address a is mapped (mincore fails with ENOMEM on an
 * unmapped one).  An address, not a pointer: its block was freed. */
static int mapped(uintptr_t a)
{
    unsigned char v;
    void *page = (void *)(a & ~(uintptr_t)4095);
    return !(mincore(page, 4096, &v) != 0 && errno == ENOMEM);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int count = atoi(argv[1]);
    if (count < 8)
        return 2;
    dp_malloc_stats_t s0, s1;
    char **b = calloc((size_t)count, sizeof(*b));
    if (!b || pr_stats(&s0) != 0)
        return 4;
    for (int i = 0; i < count; i++) {
        if ((b[i] = malloc(64 << 10)) == NULL)
            return 5;
        memset(b[i], i, 64 << 10);
    }
    if (pr_stats(&s1) != 0)
        return 6;
    const char *first = advice(b[0]), *last = advice(b[count - 1]);
    uintptr_t small = (uintptr_t)b[1], huge = (uintptr_t)b[count - 2];
    free(b[1]);
    free(b[count - 2]);
    malloc_trim(0);
    printf("first=%s last=%s chunks=%llu small_mapped=%d huge_mapped=%d\n",
           first, last,
           (unsigned long long)(s1.large_huge_chunks - s0.large_huge_chunks),
           mapped(small), mapped(huge));
    for (int i = 0; i < count; i++)
        if (i != 1 && i != count - 2)
            free(b[i]);
    free(b);
    return 0;
}

/*
 * huge_probe.c -- run by test_malloc_huge under LD_PRELOAD of the drop-in
 * malloc, with its own DEFERPOOL_CONF.  Gets `count` blocks of 64 KiB,
 * writes them and keeps them, so that the heap passes MC_HUGE_AFTER and
 * its later chunks are huge chunks (docs/malloc.md, "Huge chunks").
 * Then, in steps, prints
 *   first=F last=L chunks=C
 *     the THP advice (/proc/self/smaps VmFlags: "hg" MADV_HUGEPAGE, "nh"
 *     MADV_NOHUGEPAGE, "-" neither) of the first and the last block's
 *     mappings, and how much dp_malloc_stats_t.large_huge_chunks grew;
 *   moved_mapped=M
 *     after a block of 900 KiB (from a huge chunk) was grown by realloc
 *     to 1.5 MiB (in its chunk), then to 3 MiB: whether its old pages
 *     are still mapped (1: copied, the old block free in its chunk; 0:
 *     moved away by mremap);
 *   purged=P after=A
 *     after the second block (first chunk) and the one before the last
 *     (the last chunk), each between two live blocks, were freed and
 *     malloc_trim(0) ran: the number of the two still mapped (2: both
 *     purged), and the last chunk's advice then;
 *   trimmed_small=S trimmed_huge=H
 *     after one more block of the last chunk was freed and
 *     dp_malloc_trim() ran: whether the first chunk's block is still
 *     mapped (0: unmapped), and how many of the last chunk's two are
 *     (2: purged, the one that was purged already and the one just
 *     freed);
 *   whole=W edge=E extend=X
 *     the first block of the chunk just above the last one (if it is
 *     ours) is freed; a block that fills the last chunk's free top is
 *     grown by realloc (X: 1 if in place, across the edge; 0 if moved;
 *     -1: no chunk above); then every block of the last chunk is freed
 *     and malloc_trim(0) runs: whether the last chunk is still mapped
 *     (0: unmapped whole), and whether the freed block above its edge
 *     is (1: it did not merge across the edge; -1: no chunk above).
 *
 *   huge_probe count
 */
#include "probe.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

#define BLK ((size_t)64 << 10)
#define BLKLEN ((64 + BLK + 4095) & ~(size_t)4095) /* the block's pages */
#define CHUNK ((uintptr_t)2 << 20)

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
        if ((b[i] = malloc(BLK)) == NULL)
            return 5;
        memset(b[i], i, BLK);
    }
    if (pr_stats(&s1) != 0)
        return 6;
    printf("first=%s last=%s chunks=%llu\n", advice(b[0]),
           advice(b[count - 1]),
           (unsigned long long)(s1.large_huge_chunks - s0.large_huge_chunks));

    /* A block of a huge chunk grown past the chunk by realloc is copied,
     * not moved by mremap: its pages stay mapped, free, in the chunk. */
    char *big = malloc((size_t)900 << 10);
    if (!big || (big = realloc(big, (size_t)1536 << 10)) == NULL)
        return 9;
    uintptr_t was = (uintptr_t)big;
    char *grown = realloc(big, (size_t)3 << 20);
    if (!grown)
        return 10;
    printf("moved_mapped=%d\n", mapped(was + 4096));
    free(grown);

    uintptr_t small = (uintptr_t)b[1], huge = (uintptr_t)b[count - 2];
    uintptr_t c = (uintptr_t)b[count - 1] & ~(CHUNK - 1);
    if ((huge & ~(CHUNK - 1)) != c)
        return 7; /* the last two blocks in one chunk */
    free(b[1]);
    free(b[count - 2]);
    b[1] = b[count - 2] = NULL;
    malloc_trim(0);
    printf("purged=%d after=%s\n", mapped(small) + mapped(huge),
           advice(b[count - 1]));

    void (*trim_all)(void) = (void (*)(void))dlsym(RTLD_DEFAULT,
                                                     "dp_malloc_trim");
    if (!trim_all)
        return 8;
    /* One more, freed now: dirty when the trim finds it. */
    uintptr_t fresh = (uintptr_t)b[count - 5];
    free(b[count - 5]);
    b[count - 5] = NULL;
    trim_all();
    printf("trimmed_small=%d trimmed_huge=%d\n", mapped(small),
           mapped(huge) + mapped(fresh));

    /* The chunk above the last one, if it is ours: its first block,
     * freed, lies at the last chunk's edge. */
    uintptr_t edge = 0;
    for (int i = 0; i < count; i++)
        if (b[i] && (uintptr_t)b[i] - 64 == c + CHUNK) {
            free(b[i]);
            b[i] = NULL;
            edge = c + CHUNK;
        }
    malloc_trim(0); /* that block into the heap (from the thread's list) */
    /* A block that fills the last chunk's free top, grown by realloc: it
     * may not grow in place into that free block across the edge. */
    uintptr_t top = (uintptr_t)b[count - 1] - 64 + BLKLEN;
    int extend = -1;
    if (edge && top < c + CHUNK) {
        char *x = malloc(c + CHUNK - top - 64);
        if (x && (uintptr_t)x - 64 == top) {
            char *y = realloc(x, c + CHUNK - top - 64 + BLK);
            if (!y)
                return 11;
            extend = y == x;
            x = y;
        }
        free(x);
    }
    for (int i = 0; i < count; i++)
        if (b[i] && ((uintptr_t)b[i] & ~(CHUNK - 1)) == c) {
            free(b[i]);
            b[i] = NULL;
        }
    malloc_trim(0);
    printf("whole=%d edge=%d extend=%d\n", mapped(c),
           edge ? mapped(edge) : -1, extend);
    for (int i = 0; i < count; i++)
        free(b[i]);
    free(b);
    return 0;
}

/*
 * provider.c -- page provider layer, docs/design.md §1 (Layers) and §9;
 * the contract is the page-provider section of include/deferpool.h.
 * The default provider: anonymous private mmap, aligned by over-mapping
 * and trimming the unaligned head and tail (and kept off transparent huge
 * pages below their size, per the thp option); free is munmap.
 * Stateless, so it is thread-safe without locks and needs nothing at
 * fork.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dp_internal.h"

static int is_pow2(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* glibc answers _SC_PAGESIZE from memory (no system call). */
static size_t sys_pagesize(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

static void *map_anon(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/*
 * mmap returns page-aligned memory, so alignments up to the system page
 * size need nothing more.  For larger ones map size + align - pagesize:
 * the first align-aligned address in that range is at most
 * align - pagesize past its start, so `size` bytes fit after it.  The
 * head and tail around the aligned block are unmapped at once; both are
 * whole system pages because align and the mapping are page multiples.
 * flags is not looked at: mmap does not wait for memory to be freed, it
 * fails instead (it may still wait briefly on the kernel's mmap lock).
 */
static void *mmap_alloc_raw(void *ctx, size_t size, size_t align, int flags)
{
    (void)ctx;
    (void)flags;
    size_t ps = sys_pagesize();

    if (size == 0 || !is_pow2(align))
        return NULL;
    if (align <= ps)
        return map_anon(size);

    size_t len = size + (align - ps);
    if (len < size)
        return NULL; /* overflow */
    char *raw = map_anon(len);
    if (raw == NULL)
        return NULL;

    uintptr_t start = (uintptr_t)raw;
    uintptr_t aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = aligned - start;
    size_t body = (size + ps - 1) & ~(ps - 1); /* what munmap(p,size) frees */
    size_t tail = len - head - body;

    if (head != 0)
        munmap(raw, head);
    if (tail != 0)
        munmap((char *)aligned + body, tail);
    return (void *)aligned;
}

void dp_map_nohuge(void *p, size_t len)
{
    if (dp_options()->nohuge)
        (void)madvise(p, len, MADV_NOHUGEPAGE);
}

/* A page smaller than a huge page ends up in one only when the kernel has
 * merged it with its neighbours' mappings; the huge page (at the first
 * touch, or later from khugepaged) then makes resident what the pools
 * never touched (docs/tuning.md, `thp`). */
static void *mmap_alloc(void *ctx, size_t size, size_t align, int flags)
{
    void *p = mmap_alloc_raw(ctx, size, align, flags);
    if (p && size < DP_HUGE_SIZE)
        dp_map_nohuge(p, size);
    return p;
}

static void mmap_free(void *ctx, void *page, size_t size)
{
    (void)ctx;
    /* Fails only for arguments that were never ours; nothing to report to. */
    munmap(page, size);
}

static const dp_provider_t mmap_provider = {
    .alloc = mmap_alloc,
    .free = mmap_free,
    .ctx = NULL,
    .name = "mmap",
};

DP_API const dp_provider_t *dp_provider_mmap(void)
{
    return &mmap_provider;
}

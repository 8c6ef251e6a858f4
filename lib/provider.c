/*
 * provider.c -- the provider layer, the bottom of the pools' stack: the
 * default page provider.  docs/design.md §1 (Layers) and §9; the
 * contract is the page-provider section of include/deferpool.h.
 * The default provider: anonymous private mmap, aligned by over-mapping
 * and trimming the unaligned head and tail (and kept off transparent huge
 * pages below their size, per the thp option); free is munmap.
 * Stateless, so it is thread-safe without locks and needs nothing at
 * fork.
 */
#include "deferpool.h"
#include "os.h"

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
    size_t ps = dp_os_pagesize();

    if (size == 0 || !dp_is_pow2(align))
        return NULL;
    if (align <= ps)
        return dp_os_map(size);

    size_t len = size + (align - ps);
    if (len < size)
        return NULL; /* overflow */
    char *raw = dp_os_map(len);
    if (raw == NULL)
        return NULL;

    uintptr_t start = (uintptr_t)raw;
    uintptr_t aligned = (start + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = aligned - start;
    size_t body = (size + ps - 1) & ~(ps - 1); /* what munmap(p,size) frees */
    size_t tail = len - head - body;

    if (head != 0)
        dp_os_unmap(raw, head);
    if (tail != 0)
        dp_os_unmap((char *)aligned + body, tail);
    return (void *)aligned;
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
    dp_os_unmap(page, size);
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

/*
 * pagemap.h -- the page map (pagemap.c), below the pages: a process-wide
 * radix map from 4 KiB address frames to their owner, read lock-free.
 * docs/design.md, "Debug checks" and "The page map".
 */
#ifndef DP_PAGEMAP_H
#define DP_PAGEMAP_H

#include "util.h"

struct dp_pool;

/* A pool's pages (debug pools, DP_IPOOL_PAGEMAP pools) map to the pool,
 * tagged with the low bit (dp_pm_pool), so that a lookup names the pool
 * without reading the page header, which is a cache line (and often a
 * TLB entry) of its own.  The malloc layer maps a block's user pointer's
 * frame to its header (bits 0 and 1 clear; bits 2 to 7 may carry a
 * thread list's tags, malloc_internal.h, MC_TAG_FAST), and a free block
 * in its cache by its first and last frames to its header tagged with
 * bit 1 (heap.c).  NULL: not ours. */
DP_HIDDEN int dp_pagemap_set(void *base, size_t size, void *owner);
/* Create every map node the frames of [base, base + size) need, so that
 * later stores there never map memory.  -1: no memory for a node. */
DP_HIDDEN int dp_pagemap_reserve(void *base, size_t size);
/* Map addr's frame to owner, only if its node exists: never a system
 * call, so it may run under a lock.  -1: no node (nothing stored). */
DP_HIDDEN int dp_pagemap_store(void *addr, void *owner);
/* 48-bit addresses, 4 KiB frames: 36 bits of frame number, 18 + 18.
 * The root (static, zeroed: 2 MiB of address space, touched where it is
 * written) names leaves of 2^18 frames (1 GiB of address space each),
 * installed with a CAS (pagemap.c) and never freed, so a reader needs
 * only acquire loads: two dependent loads per lookup. */
#define DP_PM_BITS 18
#define DP_PM_FAN (1u << DP_PM_BITS)
typedef _Atomic(void *) dp_pm_slot;
extern DP_HIDDEN dp_pm_slot dp_pm_root[DP_PM_FAN];
/* The slot of addr's frame, or NULL if its node does not exist. */
static inline dp_pm_slot *dp_pagemap_slot(const void *addr)
{
    uintptr_t r = (uintptr_t)addr >> (12 + DP_PM_BITS);
    if (DP_UNLIKELY(r >= DP_PM_FAN))
        return NULL;
    dp_pm_slot *leaf = atomic_load_explicit(&dp_pm_root[r],
                                            memory_order_acquire);
    if (DP_UNLIKELY(!leaf))
        return NULL;
    return &leaf[((uintptr_t)addr >> 12) & (DP_PM_FAN - 1)];
}
/* Inline: free() in the malloc layer is this lookup and the cache put. */
static inline void *dp_pagemap_get(const void *addr)
{
    dp_pm_slot *s = dp_pagemap_slot(addr);
    return s ? atomic_load_explicit(s, memory_order_acquire) : NULL;
}
static inline void *dp_pm_pool(struct dp_pool *p)
{
    return (void *)((uintptr_t)p | 1u); /* pools are page-aligned mmaps */
}
/* The pool a page-map value names, or NULL if it names something else. */
static inline struct dp_pool *dp_pm_as_pool(void *v)
{
    return ((uintptr_t)v & 1u) ? (struct dp_pool *)((uintptr_t)v - 1u)
                               : NULL;
}

#endif /* DP_PAGEMAP_H */

/*
 * pagemap.c -- the page map, below the pages: a process-wide radix map
 * from 4 KiB address frames to whoever owns them (pagemap.h: a tagged
 * pool, or a malloc-layer block), read lock-free.  Debug pools register their pages here so
 * a put can tell a foreign pointer from an object without touching memory
 * the pointer may not own; the malloc layer's free() finds the pool or
 * block of a pointer here.  docs/design.md, "Debug checks".
 */
#include "pagemap.h"
#include "os.h"

/* The root (zeroed, in .bss); the reader, dp_pagemap_get(), is inline in
 * pagemap.h.  Writers: dp_pagemap_set() below. */
dp_pm_slot dp_pm_root[DP_PM_FAN];

static dp_pm_slot *pm_child(dp_pm_slot *slot, bool create)
{
    void *n = atomic_load_explicit(slot, memory_order_acquire);
    if (n || !create)
        return n;
    void *fresh = dp_os_map(DP_PM_FAN * sizeof(dp_pm_slot));
    if (!fresh)
        return NULL;
    /* A node is touched where frames are mapped: sparsely (docs/tuning.md,
     * `thp`). */
    dp_map_nohuge(fresh, DP_PM_FAN * sizeof(dp_pm_slot));
    if (atomic_compare_exchange_strong_explicit(slot, &n, fresh,
                                                memory_order_acq_rel,
                                                memory_order_acquire))
        return fresh;
    dp_os_unmap(fresh, DP_PM_FAN * sizeof(dp_pm_slot));
    return n;
}

static dp_pm_slot *pm_leaf(uintptr_t frame, bool create)
{
    if (frame >> (2 * DP_PM_BITS))
        return NULL;
    dp_pm_slot *leaf = pm_child(&dp_pm_root[frame >> DP_PM_BITS], create);
    if (!leaf)
        return NULL;
    return &leaf[frame & (DP_PM_FAN - 1)];
}

int dp_pagemap_set(void *base, size_t size, void *pg)
{
    uintptr_t f = (uintptr_t)base >> 12, end = f + (size >> 12);
    for (; f < end; f++) {
        dp_pm_slot *s = pm_leaf(f, pg != NULL);
        if (!s) {
            if (pg)
                return -1;
            continue;
        }
        atomic_store_explicit(s, pg, memory_order_release);
    }
    return 0;
}

int dp_pagemap_reserve(void *base, size_t size)
{
    uintptr_t f = (uintptr_t)base >> 12, end = f + ((size + 4095) >> 12);
    while (f < end) {
        if (!pm_leaf(f, true))
            return -1;
        f = (f | (DP_PM_FAN - 1)) + 1; /* the next leaf node's first frame */
    }
    return 0;
}

int dp_pagemap_store(void *addr, void *owner)
{
    dp_pm_slot *s = pm_leaf((uintptr_t)addr >> 12, false);
    if (!s)
        return -1;
    atomic_store_explicit(s, owner, memory_order_release);
    return 0;
}
